"""ckptguard.load vs torch.load(weights_only=True) on a real checkpoint of >= 500 MB, same run.

    python bench/bench_pyload.py [--size-mb 640] [--repeat 5] [--keep]

Writes a Lightning-style checkpoint with torch.save (a transformer-like state_dict of ~200
float32/bfloat16 tensors, plus small plain values) under bench/out/, warms the page cache, then
times, alternating and taking the median:

* ``torch.load(p, weights_only=True)`` — torch's safe-ish loader: reads every byte into memory;
* ``torch.load(p, weights_only=True, mmap=True)`` — torch's zero-copy variant;
* ``ckptguard.load(p)`` — scans the file, then rebuilds it from the symbolic pickle; tensors
  are views of a copy-on-write mapping, so bytes are read when first touched;
* each of them followed by touching every page of every tensor (one byte per 4 KiB), so that
  the lazily mapped loaders pay for their page faults too ("load+touch");
* each of them followed by summing every tensor, i.e. reading every byte ("load+sum").

The results are checked to be equal, and the ratios ckptguard / torch printed (goal: <= 1.0).
"""

from __future__ import annotations

import argparse
import gc
import os
import pathlib
import statistics
import time
from collections import OrderedDict

import torch

import ckptguard

OUT = pathlib.Path(__file__).resolve().parent / "out"


def make_checkpoint(path: pathlib.Path, size_mb: int) -> None:
    g = torch.Generator().manual_seed(0)
    d, ff, vocab = 1024, 4096, 32000
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    sd["embed.weight"] = torch.randn(vocab, d, generator=g)
    layer = 0
    while sum(t.numel() * t.element_size() for t in sd.values()) < size_mb * 2**20:
        p = f"layers.{layer}."
        for name in ("q", "k", "v", "o"):
            sd[p + f"attn.{name}.weight"] = torch.randn(d, d, generator=g)
            sd[p + f"attn.{name}.bias"] = torch.randn(d, generator=g)
        sd[p + "mlp.up.weight"] = torch.randn(ff, d, generator=g).to(torch.bfloat16)
        sd[p + "mlp.down.weight"] = torch.randn(d, ff, generator=g).to(torch.bfloat16)
        sd[p + "norm1.weight"] = torch.ones(d)
        sd[p + "norm2.weight"] = torch.ones(d)
        layer += 1
    ckpt = {"epoch": 3, "global_step": 12000, "pytorch-lightning_version": "2.6.6", "state_dict": sd,
            "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 4, "completed": 3}}}},
            "hyper_parameters": {"lr": 3e-4, "layers": layer, "betas": (0.9, 0.95)}}
    torch.save(ckpt, path)


def touch(obj) -> int:
    """Reads one byte of every 4 KiB page of every tensor: all pages are resident afterwards
    (the lazily mapped loaders fault them in), at almost no compute cost."""
    s = 0
    for t in obj["state_dict"].values():
        s += int(t.reshape(-1).view(torch.uint8)[::4096].sum())
    return s


def read_all(obj) -> float:
    """Reads every byte (a sum over every tensor): the cost of actually using the weights."""
    return sum(float(t.sum(dtype=torch.float64)) for t in obj["state_dict"].values())


def timed(fn):
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=640)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the generated checkpoint")
    a = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    path = OUT / f"bench_pyload_{a.size_mb}mb.ckpt"
    if not path.exists():
        print(f"writing {path} ...", flush=True)
        make_checkpoint(path, a.size_mb)
    size = path.stat().st_size
    n_tensors = None

    runs = {
        "torch.load(weights_only=True)": lambda: torch.load(path, weights_only=True, map_location="cpu"),
        "torch.load(weights_only=True, mmap=True)": lambda: torch.load(path, weights_only=True, mmap=True,
                                                                       map_location="cpu"),
        "ckptguard.load": lambda: ckptguard.load(path),
    }
    # warm the page cache and check that every loader returns the same tensors
    ref = runs["torch.load(weights_only=True)"]()
    ours = runs["ckptguard.load"]()
    n_tensors = len(ref["state_dict"])
    for k, v in ref["state_dict"].items():
        assert torch.equal(v, ours["state_dict"][k]), k
    assert ours["hyper_parameters"] == ref["hyper_parameters"]
    del ref, ours

    times: dict[str, list[float]] = {k: [] for k in runs}
    touched: dict[str, list[float]] = {k: [] for k in runs}
    summed: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(a.repeat):
        for name, fn in runs.items():
            t, obj = timed(fn)
            times[name].append(t)
            del obj
            t, _ = timed(lambda fn=fn: touch(fn()))
            touched[name].append(t)
            t, _ = timed(lambda fn=fn: read_all(fn()))
            summed[name].append(t)

    print(f"\ncheckpoint: {path.name}, {size / 2**20:.0f} MiB, {n_tensors} tensors; "
          f"median of {a.repeat} runs, warm page cache, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"{'loader':44} {'load':>9} {'load+touch':>11} {'load+sum':>9}")
    for name in runs:
        print(f"{name:44} {statistics.median(times[name]):8.3f}s {statistics.median(touched[name]):10.3f}s "
              f"{statistics.median(summed[name]):8.3f}s")
    base = "torch.load(weights_only=True)"
    for metric, d in (("load", times), ("load+touch", touched), ("load+sum", summed)):
        r = statistics.median(d["ckptguard.load"]) / statistics.median(d[base])
        print(f"ckptguard.load / {base}, {metric}: {r:.3f}x")
    if not a.keep:
        path.unlink()


if __name__ == "__main__":
    main()
