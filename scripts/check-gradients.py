#!/usr/bin/env python3
"""Measures how close `aedist gradient` is to an independent float64 PyTorch computation of the same mean loss and
gradients, for convolutional autoencoders, at several numbers of rows and ranks.

Run from the repository root, after `swift build -c release`, in a venv that holds torch, h5py and numpy (folders
.venv*/ are git-ignored):

    .venv-reference/bin/python scripts/check-gradients.py

Set AEDIST=/path/to/aedist to check another binary (default: .build/release/aedist), MPIRUN to another mpirun.

What it does:
  1. `conv:28x28x1/c8-p2-c8-p2/c8-u2-c8-u2-c1 --loss bce`: `aedist train --seed 0 --epochs 1 --save-initial` writes the
     initial parameters (ckpt-e0000-s0000000.h5); then, for (rows, ranks) in (64, 1), (1024, 1), (4000, 1), (4000, 2),
     `aedist gradient` (under `mpirun -n RANKS` when RANKS > 1) on the first ROWS images of /train/x of the embedded
     MNIST subset (uint8 scaled by 1/255).
  2. `conv:128x128x3/c8-p2/u2-c3 --loss bce --batch-size 64`: 64 random 128x128x3 float32 images in [0, 1]
     (numpy, seed 0) in a temporary HDF5 file (/train/x, and 4 rows of /val/x); rows 64, 1 rank.
PyTorch rebuilds each model in float64 from the spec and the checkpoint's tensors: images NHWC -> NCHW, conv weights
[filters, k, k, in] -> [filters, in, k, k], TensorFlow's "same" padding (total max((ceil(in/s) - 1)*s + k - in, 0),
the odd pixel at the bottom/right), relu hidden layers, max-pooling N x N stride N, nearest upsampling, and
binary_cross_entropy_with_logits on the output layer's logits with reduction "mean" (the mean over every value, equal
to the mean over samples of each sample's mean). The table shows the loss difference and, per tensor, the largest
|aedist - torch| over the tensor's largest |torch|: for the last layer's bias and weight, and the largest over all
tensors. The target is every relative difference <= 1e-5 (exit status 1 otherwise).
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AEDIST = os.environ.get("AEDIST", os.path.join(ROOT, ".build/release/aedist"))
MPIRUN = os.environ.get("MPIRUN", "mpirun")
MNIST = os.path.join(ROOT, "Sources/AEDistTraining/Resources/mnist5k.h5")
TARGET = 1e-5


def run(command):
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stdout}{result.stderr}")
    return result.stdout


def mpirun_flags():
    return run([os.path.join(ROOT, "scripts/mpirun-flags")]).split()


def parse_spec(spec):
    """conv:HxWxC/ENC/DEC with cF, pN, uN tokens -> (input shape, [(name, kind, arg)]), names as aedist's checkpoints."""
    kind, rest = spec.split(":", 1)
    assert kind == "conv", spec
    shape, encoder, decoder = rest.split("/")
    layers = []
    for part, tokens in (("encoder", encoder), ("decoder", decoder)):
        for i, token in enumerate(tokens.split("-")):
            code, value = token[0], token[1:]
            assert code in "cpu" and value.isdigit(), f"this script handles cF, pN, uN only: {token}"
            layers.append((f"{part}.{i}", {"c": "conv", "p": "pool", "u": "up"}[code], int(value)))
    return tuple(int(n) for n in shape.split("x")), layers


def same_pad(x, k, s=1):
    """TensorFlow's "same" padding of an NCHW tensor: out = ceil(in/s), the odd padding pixel at the bottom/right."""
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad takes the last dimension first: (left, right, top, bottom)
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def torch_gradients(spec, checkpoint, x_nhwc):
    """Mean bce over x (N x H x W x C in [0, 1], float64) and its gradient, in float64, from the checkpoint's tensors."""
    _, layers = parse_spec(spec)
    last_conv = max(i for i, (_, kind, _) in enumerate(layers) if kind == "conv")
    params = {}
    with h5py.File(checkpoint, "r") as f:
        for name, kind, _ in layers:
            if kind == "conv":
                w = f[f"parameters/{name}/weight"][()].astype(np.float64)      # [F, k, k, C]
                params[f"{name}/weight"] = torch.tensor(w.transpose(0, 3, 1, 2).copy(), requires_grad=True)
                params[f"{name}/bias"] = torch.tensor(f[f"parameters/{name}/bias"][()].astype(np.float64),
                                                      requires_grad=True)
        stored = set()
        f["parameters"].visit(lambda p: stored.add(p) if isinstance(f["parameters"][p], h5py.Dataset) else None)
    assert stored == set(params), (sorted(stored), sorted(params))
    x = torch.tensor(x_nhwc, dtype=torch.float64).permute(0, 3, 1, 2).contiguous()   # NCHW
    h = x
    for i, (name, kind, arg) in enumerate(layers):
        if kind == "conv":
            w = params[f"{name}/weight"]
            h = F.conv2d(same_pad(h, w.shape[2]), w, params[f"{name}/bias"])
            if i != last_conv:
                h = torch.relu(h)
        elif kind == "pool":
            h = F.max_pool2d(h, arg, arg)
        else:
            h = F.interpolate(h, scale_factor=arg, mode="nearest")
    assert h.shape == x.shape, (h.shape, x.shape)
    loss = F.binary_cross_entropy_with_logits(h, x, reduction="mean")
    loss.backward()
    # back to aedist's layout: conv weights [F, C, k, k] -> [F, k, k, C]
    return loss.item(), {n: t.grad.numpy().transpose(0, 2, 3, 1) if t.dim() == 4 else t.grad.numpy()
                         for n, t in params.items()}


def initial_checkpoint(spec, directory, extra=()):
    run([AEDIST, "train", "--model", spec, "--loss", "bce", "--seed", "0", "--epochs", "1", "--save-initial",
         "--checkpoint-dir", directory, *extra])
    checkpoint = os.path.join(directory, "ckpt-e0000-s0000000.h5")
    layers = json.loads(run([AEDIST, "inspect", "--json", checkpoint]))["layers"]
    kinds = {"conv": "Conv2D", "pool": "MaxPool2D", "up": "UpSample2D"}
    mine = [(name, kinds[kind]) for name, kind, _ in parse_spec(spec)[1]]
    assert [(l["name"], l["kind"]) for l in layers] == mine, (layers, mine)
    return checkpoint


def compare(spec, checkpoint, data, dataset, x_all, rows, ranks, work, last):
    output = os.path.join(work, f"g-{rows}-{ranks}.h5")
    command = [AEDIST, "gradient", checkpoint, "--data", data, "--dataset", dataset, "--rows", str(rows),
               "--output", output]
    if ranks > 1:
        command = [MPIRUN, "-n", str(ranks), *mpirun_flags(), *command]
    run(command)
    loss, grads = torch_gradients(spec, checkpoint, x_all[:rows])
    with h5py.File(output, "r") as g:
        assert np.array_equal(g["rows"][()], np.arange(rows)), "aedist used other rows"
        aedist_loss = float(g["loss"][0])
        relative = {}
        for name, t in grads.items():
            a = g[f"gradients/{name}"][()].astype(np.float64)
            assert a.shape == t.shape, (name, a.shape, t.shape)
            relative[name] = np.abs(a - t).max() / np.abs(t).max()
    worst = max(relative, key=relative.get)
    return dict(rows=rows, ranks=ranks, aedist_loss=aedist_loss, torch_loss=loss, bias=relative[f"{last}/bias"],
                weight=relative[f"{last}/weight"], worst=relative[worst], worst_name=worst)


def table(title, results, last):
    print(f"\n{title}")
    print(f"{'rows':>5} {'ranks':>5} {'aedist loss':>12} {'loss diff':>10} {last + ' bias':>16} "
          f"{last + ' weight':>18} {'max over all':>12}  (tensor)")
    for r in results:
        print(f"{r['rows']:>5} {r['ranks']:>5} {r['aedist_loss']:>12.8f} {r['aedist_loss'] - r['torch_loss']:>10.2e} "
              f"{r['bias']:>16.2e} {r['weight']:>18.2e} {r['worst']:>12.2e}  ({r['worst_name']})")


def main():
    torch.set_default_dtype(torch.float64)
    print(f"aedist {run([AEDIST, '--version']).strip()}: {AEDIST} ({os.path.realpath(AEDIST)})")
    print(f"torch {torch.__version__}, numpy {np.__version__}, h5py {h5py.__version__}; PyTorch in float64")
    results_all = []
    with tempfile.TemporaryDirectory(prefix="check-gradients-") as work:
        # 1. MNIST conv autoencoder at several batch sizes and rank counts.
        spec = "conv:28x28x1/c8-p2-c8-p2/c8-u2-c8-u2-c1"
        checkpoint = initial_checkpoint(spec, os.path.join(work, "mnist"), ["--batch-size", "64"])
        with h5py.File(MNIST, "r") as f:
            x = f["train/x"][()]
        assert x.dtype == np.uint8, x.dtype
        x = x.astype(np.float64) / 255.0
        last = parse_spec(spec)[1][-1][0]
        results = [compare(spec, checkpoint, MNIST, "/train/x", x, rows, ranks, work, last)
                   for rows, ranks in [(64, 1), (1024, 1), (4000, 1), (4000, 2)]]
        table(f"{spec} --loss bce, /train/x of mnist5k.h5", results, last)
        results_all += results

        # 2. Colour images, larger: 64 random 128x128x3 float32 images in [0, 1].
        spec = "conv:128x128x3/c8-p2/u2-c3"
        data = os.path.join(work, "colour.h5")
        rng = np.random.default_rng(0)
        x = rng.random((68, 128, 128, 3), dtype=np.float32)
        with h5py.File(data, "w") as f:
            f["train/x"] = x[:64]
            f["val/x"] = x[64:]
        checkpoint = initial_checkpoint(spec, os.path.join(work, "colour"),
                                        ["--data", data, "--batch-size", "64"])
        last = parse_spec(spec)[1][-1][0]
        results = [compare(spec, checkpoint, data, "/train/x", x[:64].astype(np.float64), 64, 1, work, last)]
        table(f"{spec} --loss bce, 64 random 128x128x3 images (numpy seed 0)", results, last)
        results_all += results
        shutil.rmtree(work, ignore_errors=True)

    worst = max(max(r["worst"], abs(r["aedist_loss"] - r["torch_loss"]) / abs(r["torch_loss"])) for r in results_all)
    verdict = "within" if worst <= TARGET else "ABOVE"
    print(f"\nlargest relative difference (gradients and loss) {worst:.2e}: {verdict} the target {TARGET:g}")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
