#!/usr/bin/env python3
"""The same autoencoders trained with PyTorch, for scripts/bench: same data (the embedded MNIST subset), model,
loss, optimizer (Adam, lr 1e-3) and global batch. One process, or DDP over gloo with the global batch split.

  pytorch_reference.py MODEL RANKS EPOCHS DATA.h5     prints one JSON line
MODEL: dense (784-32-784, BCE, batch 256), deep (784-128-64-128-784, MSE, batch 64), conv (the tutorial's, MSE,
batch 256).
"""
import json
import os
import resource
import sys
import time

import h5py
import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

MODELS = {"dense": ("bce", 256), "deep": ("mse", 64), "conv": ("mse", 256)}


def build(kind):
    if kind == "dense":
        return nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 784), nn.Sigmoid())
    if kind == "deep":
        return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 128), nn.ReLU(),
                             nn.Linear(128, 784), nn.Sigmoid())
    conv = lambda i, o: nn.Conv2d(i, o, 3, padding=1)
    return nn.Sequential(conv(1, 32), nn.ReLU(), nn.MaxPool2d(2), conv(32, 32), nn.ReLU(), nn.MaxPool2d(2),
                         conv(32, 32), nn.ReLU(), nn.Upsample(scale_factor=2), conv(32, 32), nn.ReLU(),
                         nn.Upsample(scale_factor=2), conv(32, 1), nn.Sigmoid())


def load(path, kind):
    with h5py.File(path, "r") as f:
        x = f["train/x"][()].astype(np.float32) / 255.0
        v = f["val/x"][()].astype(np.float32) / 255.0
    shape = (-1, 1, 28, 28) if kind == "conv" else (-1, 784)
    return torch.from_numpy(x.reshape(shape)), torch.from_numpy(v.reshape(shape))


def train(rank, world, kind, epochs, path, results):
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    if world > 1:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29531")
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    x, v = load(path, kind)
    model = build(kind)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    loss_name, batch = MODELS[kind]
    criterion = nn.BCELoss() if loss_name == "bce" else nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rates = []
    first_step = None
    start_all = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        start = time.perf_counter()
        for step in range(0, len(x), batch):
            rows = order[step:step + batch]
            mine = rows[rank * len(rows) // world:(rank + 1) * len(rows) // world]
            xb = x[mine]
            optimizer.zero_grad()
            loss = criterion(model(xb), xb)
            loss.backward()
            optimizer.step()
            if first_step is None:
                first_step = time.perf_counter() - start_all
        rates.append(len(x) / (time.perf_counter() - start))
    with torch.no_grad():
        val = criterion(model(v), v).item()
    if rank == 0:
        results.put({"samples_per_sec": rates, "val_loss": val, "first_step_s": first_step,
                     "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    if world > 1:
        dist.destroy_process_group()


def main():
    kind, world, epochs, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    results = mp.get_context("spawn").SimpleQueue()
    if world == 1:
        train(0, 1, kind, epochs, path, results)
    else:
        mp.spawn(train, args=(world, kind, epochs, path, results), nprocs=world)
    out = results.get()
    steady = sorted(out["samples_per_sec"][1:] or out["samples_per_sec"])
    out["median_samples_per_sec"] = steady[len(steady) // 2]
    out["torch"] = torch.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
