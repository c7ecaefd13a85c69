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

DATA = None
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = {  # aedist options, PyTorch name, FLOPs per sample (forward + backward ≈ 3 × forward multiply-adds × 2)
    "dense": (["--model", "dense:784-32", "--loss", "bce", "--batch-size", "256"], 6 * (784 * 32 * 2)),
    "deep": (["--model", "dense:784-128-64", "--loss", "mse", "--batch-size", "64"], 6 * (784 * 128 * 2 + 128 * 64 * 2)),
    "conv": (["--model", "conv:28x28x1/c32-p2-c32-p2/c32-u2-c32-u2-c1", "--loss", "mse", "--batch-size", "256"],
             6 * (28 * 28 * 9 * 1 * 32 + 14 * 14 * 9 * 32 * 32 + 7 * 7 * 9 * 32 * 32 + 14 * 14 * 9 * 32 * 32 + 28 * 28 * 9 * 32 * 1)),
}


def aedist(binary, model, ranks, epochs, data, options=None, timeline=False, cgroup=None):
    folder = tempfile.mkdtemp(prefix="aedist-bench-")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    # The heap counter (LD_PRELOAD) makes aedist report the training thread's allocations per step.
    counter = os.path.join(os.path.dirname(binary), "libAEDistHeapCounter.so")
    command = ["mpirun", "-n", str(ranks), "-x", f"LD_PRELOAD={counter}", binary, "train",
               "--epochs", str(epochs), "--blas-threads", "1", "--drift-check-every", "0", "--checkpoint-dir", folder]
    command += options if options is not None else MODELS[model][0]
    if timeline:
        command += ["--timeline", os.path.join(ROOT, f"bench-timeline-{model}-n{ranks}.json")]
    if cgroup:  # run inside a memory-limited control group
        command = ["bash", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "bash"] + command
    started = time.perf_counter()
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"aedist failed:\n{run.stdout}\n{run.stderr}")
    rows = [line.split(",") for line in open(os.path.join(folder, "metrics.csv")).read().split("\n")[1:] if line]
    rates = [float(row[6]) for row in rows]
    steady = sorted(rates[1:] or rates)
    result = {"samples_per_sec": rates, "median_samples_per_sec": steady[len(steady) // 2], "val_loss": float(rows[-1][4]),
              "wall_s": time.perf_counter() - started}
    for line in run.stdout.splitlines():
        if line.startswith("step time "):  # "step time 0.970 ms (mean of …): data wait 4.4%, forward 32.1%, …"
            result["step_ms"] = float(line.split()[2])
            result["step_breakdown_percent"] = {part.rsplit(" ", 1)[0].strip(): float(part.rsplit(" ", 1)[1].rstrip("%"))
                                                for part in line.split(": ", 1)[1].split(", ")}
        elif line.startswith("time to first step: "):  # "…: 0.048 s from MPI's start to the first step, 0.31 s to its end …"
            result["first_step_after_mpi_init_s"] = float(line.split()[4])
            result["first_step_done_after_mpi_init_s"] = float(line.split(", ")[1].split()[0])
        elif line.startswith("peak memory: "):  # "peak memory: 74 MB resident on the largest rank" (getrusage)
            result["peak_rss_mb"] = float(line.split()[2]) * 1e6 / 2**20
            result["private_mb"] = float(line.split(", ")[1].split()[0]) * 1e6 / 2**20
        elif line.startswith("heap allocations per step"):
            result["heap_allocations_per_step"] = float(line.split(": ")[1].split(",")[0])
            result["heap_allocations_per_step_outside_mpi"] = float(line.split(": ")[2].split()[0])
    return result


def gemm_shapes(model, rows):
    """aedist's GEMMs for one step of `rows` samples on one rank, as (transA, transB, M, N, K, calls): forward
    x·Wᵀ, the weight gradient dzᵀ·x and (except for the first layer) the input gradient dz·W."""
    shapes = []
    if model in ("dense", "deep"):
        widths = [784, 32] if model == "dense" else [784, 128, 64]
        widths = widths + widths[-2::-1]
        for index, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
            shapes += [(0, 1, rows, n_out, n_in, 1), (1, 0, n_out, n_in, rows, 1)] + ([(0, 0, rows, n_in, n_out, 1)] if index else [])
    else:  # conv layers: (side, in channels, filters); im2col in chunks of about 4096 rows
        for index, (side, c_in, filters) in enumerate([(28, 1, 32), (14, 32, 32), (7, 32, 32), (14, 32, 32), (28, 32, 1)]):
            positions = side * side
            chunk = max(1, 4096 // positions)
            chunk_rows, calls = chunk * positions, -(-rows // chunk)
            k = 9 * c_in
            shapes += [(0, 1, chunk_rows, filters, k, calls), (1, 0, filters, k, chunk_rows, calls)]
            if index:
                shapes.append((0, 0, chunk_rows, k, filters, calls))
    return shapes


def sgemm_yardstick(sgemm_rate, model, rows, processes=1, sustained=False):
    """The machine's own single-core sgemm rate (GFLOP/s) over exactly this step's GEMM shapes: total FLOPs over
    the sum of each shape's time at its measured rate (best of several trials). `sustained`: each shape for 0.3 s
    and the mean rate instead. With processes=2, two sustained copies run at once, one per core, and the rate is
    their mean: what each core does while the other works too."""
    shapes = gemm_shapes(model, rows)
    arguments = [str(v) for shape in shapes for v in shape[:5]]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    if sustained or processes > 1:
        env["SGEMM_SECONDS"] = "0.3"
    runs = [subprocess.Popen([sgemm_rate] + arguments, stdout=subprocess.PIPE, text=True, env=env) for _ in range(processes)]
    flops = [2.0 * m * n * k * calls for (_, _, m, n, k, calls) in shapes]
    yardsticks = []
    for run in runs:
        rates = [float(line.split()[5]) for line in run.communicate()[0].splitlines()[:len(shapes)]]
        yardsticks.append(sum(flops) / sum(f / r for f, r in zip(flops, rates)))
    return statistics.mean(yardsticks), sum(flops) / rows


def pytorch(python, model, ranks, epochs, data):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    run = subprocess.run([python, os.path.join(ROOT, "scripts/bench-lib/pytorch_reference.py"), model, str(ranks), str(epochs), data],
                         env=env, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"PyTorch failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def streaming(binary, python, gigabytes):
    """A generated file of `gigabytes` GB of float32 rows (the MNIST subset tiled, with a little noise so rows
    differ), trained once streamed from disk and once held in memory: samples/s and RSS per rank of each."""
    path = os.path.join(ROOT, ".build", f"bench-stream-{gigabytes}g.h5")
    rows = int(gigabytes * 1e9 / (784 * 4))
    if not os.path.exists(path):
        subprocess.run([python, "-c", f"""
import h5py, numpy as np
src = h5py.File({repr(DATA)}, "r")["train/x"][()].reshape(-1, 784).astype(np.float32) / 255
rng = np.random.default_rng(0)
with h5py.File({repr(path + '.tmp')}, "w") as f:
    x = f.create_dataset("train/x", shape=({rows}, 784), dtype="f4")
    for start in range(0, {rows}, 100000):
        n = min(100000, {rows} - start)
        block = src[rng.integers(0, len(src), n)] + rng.normal(0, 0.01, (n, 784)).astype(np.float32)
        x[start:start + n] = np.clip(block, 0, 1)
    f.create_dataset("val/x", data=src[:1000])
"""], check=True)
        os.rename(path + ".tmp", path)
    size = os.path.getsize(path) / 1e9
    result = {"file_gb": size, "rows": rows}
    runs = {"streamed": [], "in_memory": []}
    for _ in range(int(os.environ.get("BENCH_ROUNDS", "2"))):  # alternating, as for the models
        for name, cache in (("streamed", "never"), ("in_memory", "always")):
            runs[name].append(aedist(binary, "dense", 2, 2, path, options=["--data", path, "--cache", cache] + MODELS["dense"][0]))
    for name, rounds in runs.items():
        result[name] = {"median_samples_per_sec": statistics.median(r["median_samples_per_sec"] for r in rounds),
                        "rounds_samples_per_sec": [r["median_samples_per_sec"] for r in rounds],
                        "peak_rss_mb": rounds[-1]["peak_rss_mb"], "private_mb": rounds[-1]["private_mb"],
                        "step_breakdown_percent": rounds[-1].get("step_breakdown_percent")}
    result["streamed_over_in_memory"] = result["streamed"]["median_samples_per_sec"] / result["in_memory"]["median_samples_per_sec"]
    # Larger than memory for real: the page cache emptied, then a memory control group of 1 GiB around the job, so
    # the file's pages must come from disk and be evicted again (needs root and cgroup v1's memory controller).
    cgroup = "/sys/fs/cgroup/memory/aedist-bench"
    try:
        os.makedirs(cgroup, exist_ok=True)
        open(f"{cgroup}/memory.limit_in_bytes", "w").write(str(2**30))
        subprocess.run(["sync"], check=True)
        open("/proc/sys/vm/drop_caches", "w").write("3")
    except OSError as error:
        result["memory_limited"] = f"skipped: {error}"
    else:
        run = aedist(binary, "dense", 2, 1, path, options=["--data", path, "--cache", "never"] + MODELS["dense"][0], cgroup=cgroup)
        result["memory_limited"] = {"memory_limit_gib": 1, "samples_per_sec": run["samples_per_sec"][0],
                                    "step_breakdown_percent": run.get("step_breakdown_percent")}
        print(f"stream  -n 2: the same file from a cold disk in a 1 GiB memory limit: {run['samples_per_sec'][0]:9.0f} samples/s "
              f"(data wait {run.get('step_breakdown_percent', {}).get('data wait', 0):.0f}% of the step)", flush=True)
    print(f"stream  -n 2: {size:.1f} GB file (page cache warm), dense model: streamed {result['streamed']['median_samples_per_sec']:9.0f} samples/s "
          f"({result['streamed']['private_mb']:5.0f} MB private/rank), in memory {result['in_memory']['median_samples_per_sec']:9.0f} samples/s "
          f"({result['in_memory']['private_mb']:5.0f} MB private/rank): {result['streamed_over_in_memory']:.2f}×", flush=True)
    return result


def main():
    global DATA
    binary, python, data, sgemm_rate = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    DATA = data
    epochs = {"dense": 6, "deep": 4, "conv": 3}
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": \t")
    results = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu, "cores": os.cpu_count(), "threads_per_process": 1,
               "blas": subprocess.run([sgemm_rate], capture_output=True, text=True).stdout.split("core ")[-1].strip(), "runs": []}
    print(f"{results['date']}, {cpu}, {results['cores']} cores, 1 BLAS/PyTorch thread per process, OpenBLAS {results['blas']} kernels; "
          f"{rounds} alternating rounds per configuration", flush=True)
    models = [m for m in os.environ.get("BENCH_MODELS", ",".join(MODELS)).split(",") if m]
    for model in models:
        for ranks in (1, 2):
            a, p = [], []
            for round_ in range(rounds):  # alternate, so both see the same machine state
                a.append(aedist(binary, model, ranks, epochs[model], data, timeline=round_ == 0))
                p.append(pytorch(python, model, ranks, epochs[model], data))
            rows_per_rank = {"dense": 256, "deep": 64, "conv": 256}[model] // ranks
            yardstick, gemm_flops_per_sample = sgemm_yardstick(sgemm_rate, model, rows_per_rank, processes=ranks)
            entry = {"model": model, "ranks": ranks,
                     "aedist": {"median_samples_per_sec": statistics.median(r["median_samples_per_sec"] for r in a),
                                "val_loss": a[-1]["val_loss"], "peak_rss_mb": a[-1]["peak_rss_mb"],
                                "step_ms": statistics.median(r["step_ms"] for r in a),
                                "step_breakdown_percent": a[0].get("step_breakdown_percent"),
                                "first_step_after_mpi_init_s": max(r["first_step_after_mpi_init_s"] for r in a),
                                "first_step_done_after_mpi_init_s": max(r["first_step_done_after_mpi_init_s"] for r in a),
                                "heap_allocations_per_step": max(r["heap_allocations_per_step"] for r in a),
                                "heap_allocations_per_step_outside_mpi": max(r["heap_allocations_per_step_outside_mpi"] for r in a)},
                     "pytorch": {"median_samples_per_sec": statistics.median(r["median_samples_per_sec"] for r in p),
                                 "val_loss": p[-1]["val_loss"], "peak_rss_mb": p[-1]["peak_rss_mb"], "version": p[-1]["torch"],
                                 "first_step_s": p[-1]["first_step_s"]},
                     # per core, with as many copies running at once as there are ranks
                     "sgemm_gflops_same_shapes_per_core": yardstick}
            entry["ratio"] = entry["aedist"]["median_samples_per_sec"] / entry["pytorch"]["median_samples_per_sec"]
            # Achieved over the whole step (data, elementwise work and communication included), per core.
            entry["aedist"]["gflops_per_core"] = entry["aedist"]["median_samples_per_sec"] * gemm_flops_per_sample / 1e9 / ranks
            entry["aedist"]["fraction_of_sgemm"] = entry["aedist"]["gflops_per_core"] / yardstick
            results["runs"].append(entry)
            breakdown = entry["aedist"]["step_breakdown_percent"] or {}
            print(f"{model:6} -n {ranks}: aedist {entry['aedist']['median_samples_per_sec']:9.0f} samples/s "
                  f"({entry['aedist']['gflops_per_core']:5.1f} GFLOP/s per core = {100 * entry['aedist']['fraction_of_sgemm']:3.0f}% of sgemm "
                  f"{yardstick:5.1f}; {entry['aedist']['peak_rss_mb'] or 0:4.0f} MB/rank)  "
                  f"PyTorch {entry['pytorch']['median_samples_per_sec']:9.0f} samples/s ({entry['pytorch']['peak_rss_mb']:4.0f} MB)  "
                  f"ratio {entry['ratio']:4.2f}", flush=True)
            print(f"          step {entry['aedist']['step_ms']:.3f} ms: " + ", ".join(f"{k} {v:.1f}%" for k, v in breakdown.items())
                  + f"; first step starts {entry['aedist']['first_step_after_mpi_init_s']:.3f} s after MPI init "
                  f"(done {entry['aedist']['first_step_done_after_mpi_init_s']:.3f} s); "
                  f"heap allocations/step {entry['aedist']['heap_allocations_per_step']:.2f} "
                  f"({entry['aedist']['heap_allocations_per_step_outside_mpi']:.2f} outside MPI_Allreduce)", flush=True)
    for model in models:
        one, two = [r for r in results["runs"] if r["model"] == model]
        for name in ("aedist", "pytorch"):
            scaling = two[name]["median_samples_per_sec"] / one[name]["median_samples_per_sec"]
            results.setdefault("scaling_2_ranks", {}).setdefault(model, {})[name] = scaling
        # The machine's own limit: two single-core sgemm runs at once, sustained (each at the per-rank shapes),
        # against one alone at the one-rank shapes.
        alone, _ = sgemm_yardstick(sgemm_rate, model, {"dense": 256, "deep": 64, "conv": 256}[model], sustained=True)
        machine = 2 * two["sgemm_gflops_same_shapes_per_core"] / alone
        results["scaling_2_ranks"][model]["sgemm_two_cores"] = machine
        print(f"{model:6} scaling 1 → 2 ranks: aedist {results['scaling_2_ranks'][model]['aedist']:.2f}×, "
              f"PyTorch DDP (gloo) {results['scaling_2_ranks'][model]['pytorch']:.2f}×; "
              f"the GEMMs alone on two cores at once: {machine:.2f}×")
    gigabytes = float(os.environ.get("BENCH_STREAM_GB", "3"))
    if gigabytes > 0:
        results["streaming"] = streaming(binary, python, gigabytes)
    path = os.path.join(ROOT, "bench-results.json")
    json.dump(results, open(path, "w"), indent=2)
    print(f"wrote {path} (and bench-timeline-*.json: open them in ui.perfetto.dev)")


if __name__ == "__main__":
    main()
