#!/usr/bin/env python3
"""Reads aedist checkpoints with h5py — an HDF5 reader aedist did not write — for the end-to-end tests.

  checkpoint_tool.py check FILE           verify the documented layout; print "ok <n> tensors"
  checkpoint_tool.py compare A B          print the largest absolute difference over all parameter, optimizer and buffer tensors
  checkpoint_tool.py flip FILE DATASET     flip one byte inside DATASET's first stored chunk (a silent disk error)
  checkpoint_tool.py tamper KIND FILE      damage a checkpoint the way a hostile or broken writer would (KIND:
                                          huge-tensor, huge-model, string-tensor, missing-optimizer)
  checkpoint_tool.py stats FILE DATASET     print a dataset's shape, sum and min/max
  checkpoint_tool.py config FILE          print the stored config (the root's `config` attribute) as indented JSON
  checkpoint_tool.py make-data KIND FILE  write a data set the way h5py/numpy users do (KIND: float64, uint8-images,
                                          strings, nan, empty, tiny, wide, rgb, rgb-channels-first)
"""
import json
import sys

import h5py
import numpy as np


def tensors(f):
    found = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found[name] = obj[()]

    f["parameters"].visititems(lambda n, o: visit("parameters/" + n, o))
    f["optimizer"].visititems(lambda n, o: visit("optimizer/" + n, o))
    if "buffers" in f:  # BatchNorm's running statistics
        f["buffers"].visititems(lambda n, o: visit("buffers/" + n, o))
    return found


def check(path):
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "aedist-checkpoint", f.attrs["format"]
        assert int(f.attrs["format_version"]) == 1
        config = json.loads(f.attrs["config"])
        for key in ("model", "loss", "data", "optimizer", "schedule", "run"):
            assert key in config, key
        assert int(f.attrs["world_size"]) >= 1
        assert len(f.attrs["layout_hash"]) == 16
        for key in ("epochs_completed", "step_in_epoch", "global_step", "samples_seen", "seed"):
            assert key in f["progress"].attrs, key
        epochs = f["metrics/epoch"][()]
        for column in ("global_step", "samples_seen", "train_loss", "val_loss", "val_mse", "samples_per_sec", "wall_time_s", "lr"):
            assert f["metrics/" + column].shape == epochs.shape, column
        found = tensors(f)
        parameters = [k for k in found if k.startswith("parameters/")]
        assert parameters, "no parameters"
        for name, value in found.items():
            assert value.dtype == np.float32, (name, value.dtype)
            assert np.all(np.isfinite(value)), name
        for name in parameters:
            if name.endswith("/weight"):
                layer = name[len("parameters/"):-len("/weight")]
                weight = found[name].shape
                # dense [out, in] and conv [filters, k, k, in]: bias [out]; transposed conv [in, k, k, filters]:
                # bias [filters]; BatchNorm γ [channels]: β [channels]
                assert found[f"parameters/{layer}/bias"].shape in ((weight[0],), (weight[-1],)), layer
                if f"buffers/{layer}/running_mean" in found:
                    assert found[f"buffers/{layer}/running_mean"].shape == weight, layer
                    assert found[f"buffers/{layer}/running_var"].shape == weight, layer
                    assert np.all(found[f"buffers/{layer}/running_var"] >= 0), layer
        state = f["optimizer"].attrs["name"]
        print(f"ok {len(found)} tensors, optimizer {state}, epochs {list(epochs)}")


def compare(a, b):
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        ta, tb = tensors(fa), tensors(fb)
        assert sorted(ta) == sorted(tb), (sorted(ta), sorted(tb))
        worst = max(float(np.max(np.abs(ta[k].astype(np.float64) - tb[k]))) for k in ta)
        identical = all(np.array_equal(ta[k].view(np.uint32), tb[k].view(np.uint32)) for k in ta)
        print(f"max_abs_diff {worst:.9g} bit_identical {identical}")


def flip(path, dataset):
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(0)
        where = info.byte_offset + info.size // 2
    with open(path, "r+b") as raw:
        raw.seek(where)
        byte = raw.read(1)
        raw.seek(where)
        raw.write(bytes([byte[0] ^ 0x40]))
    print(f"flipped byte {where}")


def tamper(kind, path):
    with h5py.File(path, "r+") as f:
        if kind == "huge-tensor":
            # Declares 10^10 values but stores none: chunked storage reads back its fill value.
            del f["parameters/encoder.0/weight"]
            f.create_dataset("parameters/encoder.0/weight", shape=(100000, 100000), dtype=np.float32, chunks=(100, 100))
        elif kind == "huge-model":
            config = json.loads(f.attrs["config"])
            config["model"]["spec"] = "dense:100000-100000-100000"
            f.attrs["config"] = json.dumps(config)
        elif kind == "string-tensor":
            del f["parameters/encoder.0/bias"]
            f["parameters/encoder.0/bias"] = np.array([b"x"] * 32)
        elif kind == "missing-optimizer":
            del f["optimizer"]
        else:
            sys.exit(f"unknown kind {kind}")


def stats(path, dataset):
    with h5py.File(path, "r") as f:
        x = f[dataset][()].astype(np.float64)
        print(f"shape {'x'.join(map(str, x.shape))} sum {x.sum():.9g} min {x.min():.6g} max {x.max():.6g}")


def make_data(kind, path):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        if kind == "float64":
            # Two clusters in 20 dimensions, float64 like numpy's default.
            x = rng.normal(0.5, 0.1, size=(300, 20)).clip(0, 1)
            f["features"] = x
            f["holdout"] = rng.normal(0.5, 0.1, size=(64, 20)).clip(0, 1)
        elif kind == "uint8-images":
            f["images"] = rng.integers(0, 256, size=(200, 8, 8, 1), dtype=np.uint8)
        elif kind == "strings":
            f["train/x"] = np.array([b"a", b"b", b"c"])
        elif kind == "nan":
            x = rng.random((50, 10)).astype(np.float32)
            x[17, 3] = np.nan
            f["train/x"] = x
        elif kind == "empty":
            f.create_dataset("train/x", shape=(0, 10), dtype=np.float32)
        elif kind == "anomaly":
            # Digits 0-4 to train on; all digits, labelled, to score.
            with h5py.File(sys.argv[4], "r") as source:
                tx, ty, vx, vy = (source[k][()] for k in ("train/x", "train/y", "val/x", "val/y"))
            for name, data in (("train/x", tx[ty < 5]), ("val/x", vx[vy < 5]), ("test/x", vx)):
                f[name] = data
                f[name].attrs["scale"] = np.float32(1 / 255)
            f["test/y"] = vy
        elif kind == "nchw":
            # The embedded training images, channels first as PyTorch stores them.
            with h5py.File(sys.argv[4], "r") as source:
                images = source["train/x"][()]
            f["train/x"] = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
            f["train/x"].attrs["scale"] = np.float32(1 / 255)
        elif kind in ("rgb", "rgb-channels-first"):
            # Colour images: smooth gradients and discs of random colours, 16×16×3 uint8 (channels last as Keras
            # stores them, or channels first as PyTorch does).
            count = 384
            yy, xx = np.mgrid[0:16, 0:16] / 15.0
            images = np.empty((count, 16, 16, 3))
            for i in range(count):
                a, b = rng.random(3), rng.random(3)
                cy, cx, r = rng.uniform(4, 12), rng.uniform(4, 12), rng.uniform(2, 6)
                disc = ((yy * 15 - cy) ** 2 + (xx * 15 - cx) ** 2 < r * r)[..., None]
                images[i] = np.where(disc, b, a * (0.5 + 0.5 * xx[..., None]))
            images = (images * 255).astype(np.uint8)
            if kind == "rgb-channels-first":
                images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
            f["train/x"], f["val/x"] = images[:320], images[320:]
        elif kind == "tiny":
            f["train/x"] = rng.random((3, 10)).astype(np.float32)
        elif kind == "wide":
            f["train/x"] = rng.random((100, 12)).astype(np.float32)
        else:
            sys.exit(f"unknown kind {kind}")


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "check" and len(sys.argv) == 3:
        check(sys.argv[2])
    elif command == "compare" and len(sys.argv) == 4:
        compare(sys.argv[2], sys.argv[3])
    elif command == "flip" and len(sys.argv) == 4:
        flip(sys.argv[2], sys.argv[3])
    elif command == "tamper" and len(sys.argv) == 4:
        tamper(sys.argv[2], sys.argv[3])
    elif command == "config" and len(sys.argv) == 3:
        with h5py.File(sys.argv[2], "r") as f:
            print(json.dumps(json.loads(f.attrs["config"]), indent=1, sort_keys=True))
    elif command == "stats" and len(sys.argv) == 4:
        stats(sys.argv[2], sys.argv[3])
    elif command == "make-data" and len(sys.argv) in (4, 5):
        make_data(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
