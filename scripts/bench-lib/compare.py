#!/usr/bin/env python3
"""aedist against an earlier build of aedist on the same machine, in alternating runs (so both see the same machine
state): did a change make training slower? The same models, epochs and options as bench.py.

  python3 scripts/bench-lib/compare.py NEW_BINARY BASELINE_BINARY DATA.h5   (scripts/bench does this when
  BENCH_BASELINE names the baseline binary; BENCH_ROUNDS and BENCH_MODELS apply)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main():
    new, baseline, data = sys.argv[1], sys.argv[2], sys.argv[3]
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    epochs = {"dense": 6, "deep": 4, "conv": 3}
    models = [m for m in os.environ.get("BENCH_MODELS", ",".join(bench.MODELS)).split(",") if m]
    print(f"aedist {new}\n  against {baseline}\n  {rounds} alternating rounds; samples/s, median of the epochs after the first")
    print(f"{'model':6} {'ranks':>5} {'this build':>12} {'baseline':>12} {'ratio':>7}   rounds (this / baseline)")
    for model in models:
        for ranks in (1, 2):
            mine, theirs = [], []
            for _ in range(rounds):
                mine.append(bench.aedist(new, model, ranks, epochs[model], data)["median_samples_per_sec"])
                theirs.append(bench.aedist(baseline, model, ranks, epochs[model], data)["median_samples_per_sec"])
            a, b = sorted(mine)[len(mine) // 2], sorted(theirs)[len(theirs) // 2]
            pairs = ", ".join(f"{x:.0f}/{y:.0f}" for x, y in zip(mine, theirs))
            print(f"{model:6} {ranks:5d} {a:12.0f} {b:12.0f} {a / b:7.2f}   {pairs}", flush=True)


if __name__ == "__main__":
    main()
