#!/usr/bin/env python3
"""Drives scripts/bench: aedist and PyTorch, alternating, on the same models, data and hyperparameters.
Prints a table and writes bench-results.json. See scripts/bench for the setup it expects."""
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = {  # aedist options, PyTorch name, FLOPs per sample (forward + backward ≈ 3 × forward multiply-adds × 2)
    "dense": (["--model", "dense:784-32", "--loss", "bce", "--batch-size", "256"], 6 * (784 * 32 * 2)),
    "deep": (["--model", "dense:784-128-64", "--loss", "mse", "--batch-size", "64"], 6 * (784 * 128 * 2 + 128 * 64 * 2)),
    "conv": (["--model", "conv:28x28x1/c32-p2-c32-p2/c32-u2-c32-u2-c1", "--loss", "mse", "--batch-size", "256"],
             6 * (28 * 28 * 9 * 1 * 32 + 14 * 14 * 9 * 32 * 32 + 7 * 7 * 9 * 32 * 32 + 14 * 14 * 9 * 32 * 32 + 28 * 28 * 9 * 32 * 1)),
}


def aedist(binary, model, ranks, epochs, data):
    folder = tempfile.mkdtemp(prefix="aedist-bench-")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    command = ["mpirun", "-n", str(ranks), "/usr/bin/time", "-f", "peak_rss_kb %M", binary, "train", "--epochs", str(epochs),
               "--blas-threads", "1", "--checkpoint-dir", folder] + MODELS[model][0]
    started = time.perf_counter()
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"aedist failed:\n{run.stdout}\n{run.stderr}")
    rows = [line.split(",") for line in open(os.path.join(folder, "metrics.csv")).read().split("\n")[1:] if line]
    rates = [float(row[6]) for row in rows]
    steady = sorted(rates[1:] or rates)
    rss = [int(line.split()[1]) / 1024 for line in run.stderr.splitlines() if line.startswith("peak_rss_kb")]
    return {"samples_per_sec": rates, "median_samples_per_sec": steady[len(steady) // 2], "val_loss": float(rows[-1][4]),
            "peak_rss_mb": max(rss) if rss else None, "wall_s": time.perf_counter() - started}


def pytorch(python, model, ranks, epochs, data):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    run = subprocess.run([python, os.path.join(ROOT, "scripts/bench-lib/pytorch_reference.py"), model, str(ranks), str(epochs), data],
                         env=env, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"PyTorch failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main():
    binary, python, data = sys.argv[1], sys.argv[2], sys.argv[3]
    epochs = {"dense": 6, "deep": 4, "conv": 3}
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    results = {"date": time.strftime("%Y-%m-%d"), "cpu": platform.processor() or open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": "),
               "cores": os.cpu_count(), "threads_per_process": 1, "runs": []}
    for model in MODELS:
        for ranks in (1, 2):
            a, p = [], []
            for _ in range(rounds):  # alternate, so both see the same machine state
                a.append(aedist(binary, model, ranks, epochs[model], data))
                p.append(pytorch(python, model, ranks, epochs[model], data))
            entry = {"model": model, "ranks": ranks,
                     "aedist": {"median_samples_per_sec": statistics.median(r["median_samples_per_sec"] for r in a),
                                "val_loss": a[-1]["val_loss"], "peak_rss_mb": a[-1]["peak_rss_mb"]},
                     "pytorch": {"median_samples_per_sec": statistics.median(r["median_samples_per_sec"] for r in p),
                                 "val_loss": p[-1]["val_loss"], "peak_rss_mb": p[-1]["peak_rss_mb"], "version": p[-1]["torch"]}}
            entry["ratio"] = entry["aedist"]["median_samples_per_sec"] / entry["pytorch"]["median_samples_per_sec"]
            entry["aedist"]["gflops"] = entry["aedist"]["median_samples_per_sec"] * MODELS[model][1] / 1e9
            results["runs"].append(entry)
            print(f"{model:6} -n {ranks}: aedist {entry['aedist']['median_samples_per_sec']:9.0f} samples/s "
                  f"({entry['aedist']['gflops']:5.1f} GFLOP/s, {entry['aedist']['peak_rss_mb'] or 0:5.0f} MB/rank)  "
                  f"PyTorch {entry['pytorch']['median_samples_per_sec']:9.0f} samples/s ({entry['pytorch']['peak_rss_mb']:5.0f} MB)  "
                  f"ratio {entry['ratio']:4.2f}", flush=True)
    for model in MODELS:
        one, two = [r for r in results["runs"] if r["model"] == model]
        for name in ("aedist", "pytorch"):
            scaling = two[name]["median_samples_per_sec"] / one[name]["median_samples_per_sec"]
            results.setdefault("scaling_2_ranks", {}).setdefault(model, {})[name] = scaling
        print(f"{model:6} scaling 1 → 2 ranks: aedist {results['scaling_2_ranks'][model]['aedist']:.2f}×, "
              f"PyTorch DDP (gloo) {results['scaling_2_ranks'][model]['pytorch']:.2f}×")
    path = os.path.join(ROOT, "bench-results.json")
    json.dump(results, open(path, "w"), indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
