#!/usr/bin/env python3
"""Writes Tests/Reference/dense-784-32.h5: one PyTorch training step of aedist's `dense:784-32` autoencoder, the
reference that Tests/AEDistIOTests/PyTorchReferenceTests.swift checks aedist against (in the spirit of
karpathy/llm.c's test_gpt2.c).

Run from the repository root, in a venv that holds torch, h5py and numpy (folders .venv*/ are git-ignored):

    python3 -m venv .venv-reference
    .venv-reference/bin/pip install torch h5py numpy
    .venv-reference/bin/python scripts/make-reference-dense.py

What it computes, in float32 on the CPU:
  - the batch: the first 64 images of /train/x in Sources/AEDistTraining/Resources/mnist5k.h5 (uint8 4000x28x28x1),
    scaled by 1/255 and flattened to 64 x 784;
  - the model: encoder.0 = Linear(784 -> 32) + ReLU, decoder.0 = Linear(32 -> 784), sigmoid output (aedist's
    `dense:784-32` with activation relu and output activation sigmoid); weights in PyTorch's [out, in] orientation,
    drawn after torch.manual_seed(0) from uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), biases from uniform(-0.05, 0.05)
    (non-zero, so bias gradients and bias updates are checked too);
  - the loss: binary_cross_entropy_with_logits(logits, batch, reduction='mean'), the mean over all 64 x 784 values
    (equal to aedist's mean over samples of each sample's mean);
  - its gradients, then one step of torch.optim.Adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0).

File layout (float32 datasets, uncompressed; layer paths as in aedist's checkpoints):
    /batch [64, 784]                          /code [64, 32] (encoder output, after ReLU)
    /logits [64, 784]                         /output [64, 784] (sigmoid of the logits)
    /loss [1] float64
    /parameters/<layer>/<weight|bias>         initial parameters
    /gradients/<layer>/<weight|bias>          gradients of the mean loss
    /after_adam/<layer>/<weight|bias>         parameters after the one Adam step
    attributes on /: torch_version, made_by, and the settings above
Running it again writes the same values (for the same torch version).
"""
import os
import sys

import h5py
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "Sources/AEDistTraining/Resources/mnist5k.h5")
OUTPUT = os.path.join(ROOT, "Tests/Reference/dense-784-32.h5")

BATCH = 64
INPUT = 784
CODE = 32
SEED = 0
BIAS_BOUND = 0.05
LEARNING_RATE = 1e-3
BETAS = (0.9, 0.999)
EPSILON = 1e-8


def load_batch():
    with h5py.File(DATA, "r") as f:
        x = f["/train/x"]
        assert x.dtype == np.uint8 and x.shape[1:] == (28, 28, 1), (x.dtype, x.shape)
        pixels = x[:BATCH]
    return torch.from_numpy(pixels.reshape(BATCH, INPUT).astype(np.float32) * np.float32(1 / 255))


def build_model():
    torch.manual_seed(SEED)
    model = torch.nn.Module()
    model.encoder = torch.nn.Sequential(torch.nn.Linear(INPUT, CODE), torch.nn.ReLU())
    model.decoder = torch.nn.Sequential(torch.nn.Linear(CODE, INPUT))
    with torch.no_grad():
        for layer in (model.encoder[0], model.decoder[0]):
            bound = 1 / layer.in_features ** 0.5
            layer.weight.uniform_(-bound, bound)
            layer.bias.uniform_(-BIAS_BOUND, BIAS_BOUND)
    return model


def tensors(model):
    """(path, tensor) in aedist's buffer order (per layer, weight then bias), "encoder.0.weight" as "encoder.0/weight"."""
    for name, tensor in model.named_parameters():
        layer, kind = name.rsplit(".", 1)
        yield f"{layer}/{kind}", tensor


def main():
    torch.set_default_dtype(torch.float32)
    torch.use_deterministic_algorithms(True)
    batch = load_batch()
    model = build_model()
    initial = {path: t.detach().clone() for path, t in tensors(model)}

    code = model.encoder(batch)
    logits = model.decoder(code)
    output = torch.sigmoid(logits)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch, reduction="mean")
    loss.backward()
    gradients = {path: t.grad.detach().clone() for path, t in tensors(model)}

    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, betas=BETAS, eps=EPSILON, weight_decay=0)
    optimizer.step()
    after = {path: t.detach().clone() for path, t in tensors(model)}

    os.makedirs(os.path.dirname(OUTPUT), exist_ok=True)
    with h5py.File(OUTPUT, "w") as f:
        def put(path, tensor):
            f.create_dataset(path, data=tensor.detach().numpy().astype(np.float32))

        put("/batch", batch)
        for path in initial:
            put(f"/parameters/{path}", initial[path])
        put("/code", code)
        put("/logits", logits)
        put("/output", output)
        f.create_dataset("/loss", data=np.array([loss.item()], dtype=np.float64))
        for path in gradients:
            put(f"/gradients/{path}", gradients[path])
        for path in after:
            put(f"/after_adam/{path}", after[path])
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["made_by"] = "scripts/make-reference-dense.py"
        f.attrs["model"] = "dense:784-32 (activation relu, output activation sigmoid)"
        f.attrs["batch"] = f"first {BATCH} rows of /train/x in Sources/AEDistTraining/Resources/mnist5k.h5, scaled by 1/255"
        f.attrs["initialization"] = (f"torch.manual_seed({SEED}); per layer, weight ~ uniform(+-1/sqrt(fan_in)) then "
                                     f"bias ~ uniform(+-{BIAS_BOUND})")
        f.attrs["loss"] = "binary_cross_entropy_with_logits, mean over all values"
        f.attrs["optimizer"] = f"Adam lr={LEARNING_RATE} betas={BETAS} eps={EPSILON} weight_decay=0, one step"

    print(f"torch {torch.__version__}: loss {loss.item():.9f}")
    for path in gradients:
        print(f"  {path:18} |param| <= {initial[path].abs().max():.6f}  |grad| <= {gradients[path].abs().max():.3e}"
              f"  |step| <= {(after[path] - initial[path]).abs().max():.3e}")
    print(f"wrote {os.path.relpath(OUTPUT, ROOT)} ({os.path.getsize(OUTPUT):,} bytes)")


if __name__ == "__main__":
    sys.exit(main())
