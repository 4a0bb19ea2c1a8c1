#!/usr/bin/env python3
"""Throughput of safe loading and conversion on a ~1 GiB torch checkpoint, in one run:

* ``cp`` of the checkpoint (the ceiling for writing a file of that size here),
* ``ckptguard convert`` (scan + load + safetensors, whole process),
* the Python route ``safetensors.torch.save_file(torch.load(p, weights_only=True), out)``,
  timed in-process (torch already imported) and as a whole process,
* ``ckptguard inspect`` (scan + load path, no tensor bytes touched) vs
  ``torch.load(weights_only=True)`` (in-process and whole process).

Every timing is the median of --runs runs on a warm page cache; outputs are deleted and
``sync``ed between runs, outside the timed region. Normally started by bench/bench_load.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

GEN = textwrap.dedent(
    """
    import sys, torch
    from collections import OrderedDict
    path, mib = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    sd = OrderedDict()
    n = max(1, mib // 16)
    for i in range(n):
        # 16 MiB each: a transformer-ish mix of float32 and bfloat16 matrices
        if i % 4 == 3:
            sd[f"layers.{i}.mlp.weight"] = torch.randn(4096, 2048).bfloat16()
        else:
            sd[f"layers.{i}.attn.weight"] = torch.randn(4096, 1024)
        sd[f"layers.{i}.norm.bias"] = torch.zeros(1024)
    torch.save({"state_dict": sd, "epoch": 3, "hyper_parameters": {"lr": 1e-3, "layers": n}}, path)
    """
)

PY_ROUTE = textwrap.dedent(
    """
    import json, os, statistics, sys, time
    t0 = time.perf_counter()
    import torch, safetensors.torch as st
    imported = time.perf_counter() - t0
    src, out, runs, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        obj = torch.load(src, weights_only=True)
        if mode == "convert":
            sd = obj["state_dict"] if "state_dict" in obj else obj
            st.save_file(sd, out)
        times.append(time.perf_counter() - t)
        del obj
        if mode == "convert":
            os.remove(out)
            os.sync()
    print(json.dumps({"median": statistics.median(times), "import": imported}))
    """
)


def timed(cmd: list[str], runs: int, cleanup=None) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - t)
        if r.returncode != 0:
            sys.exit(f"bench_load: {' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode()[-500:]}")
        if cleanup:
            cleanup()
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--python", default=sys.executable, help="a python with torch and safetensors")
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "ckptguard-bench-load"))
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()

    os.makedirs(a.dir, exist_ok=True)
    src = os.path.join(a.dir, f"bench_{a.size_mib}mib.pt")
    if not os.path.exists(src):
        print(f"generating {src} with torch ...", flush=True)
        subprocess.run([a.python, "-c", GEN, src, str(a.size_mib)], check=True)
    size = os.path.getsize(src)
    with open(src, "rb") as f:  # warm the page cache
        while f.read(64 << 20):
            pass
    out = os.path.join(a.dir, "out.safetensors")
    cp_out = os.path.join(a.dir, "copy.pt")

    def rm(p):
        def f():
            if os.path.exists(p):
                os.remove(p)
            os.sync()
        return f

    rm(out)()
    rm(cp_out)()
    res: dict[str, float] = {"bytes": size}
    # Rounds interleave the commands so that machine noise (writeback, other load) hits all.
    cmds = {
        "cp": (["cp", src, cp_out], rm(cp_out)),
        "convert": ([a.bin, "convert", src, "-o", out, "--key", "state_dict"], rm(out)),
        "convert_whole": ([a.bin, "convert", src, "-o", out], rm(out)),
        "inspect": ([a.bin, "inspect", src], None),
    }
    samples: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(a.runs):
        for k, (cmd, clean) in cmds.items():
            samples[k].append(timed(cmd, 1, clean))
    for k, v in samples.items():
        res[k] = statistics.median(v)
    res["samples"] = samples  # type: ignore[assignment]

    def py(mode: str) -> dict:
        r = subprocess.run([a.python, "-c", PY_ROUTE, src, out, str(a.runs), mode], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"bench_load: python route failed: {r.stderr[-800:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    conv = py("convert")
    res["py_convert"] = conv["median"]
    res["py_convert_process"] = conv["median"] + conv["import"]
    load = py("load")
    res["torch_load"] = load["median"]
    res["torch_load_process"] = load["median"] + load["import"]

    mib = size / (1 << 20)
    tp = lambda t: mib / t  # noqa: E731
    print(f"checkpoint: {src} ({mib:.0f} MiB), {a.runs} interleaved runs each, medians, warm page cache")
    print(f"  cp                                         {res['cp']:7.3f} s  {tp(res['cp']):7.0f} MiB/s")
    print(f"  ckptguard convert --key state_dict         {res['convert']:7.3f} s  {tp(res['convert']):7.0f} MiB/s"
          f"  = {100 * res['cp'] / res['convert']:.0f}% of cp")
    print(f"  ckptguard convert (whole checkpoint)       {res['convert_whole']:7.3f} s  {tp(res['convert_whole']):7.0f} MiB/s")
    print(f"  python save_file(torch.load(...))          {res['py_convert']:7.3f} s in-process"
          f" ({res['py_convert_process']:.3f} s with imports)")
    print(f"  ckptguard inspect                          {res['inspect']:7.3f} s")
    print(f"  torch.load(weights_only=True)              {res['torch_load']:7.3f} s in-process"
          f" ({res['torch_load_process']:.3f} s with imports)")
    r_cp = res["cp"] / res["convert"]
    r_py = res["py_convert"] / res["convert"]
    r_ld = res["torch_load"] / res["inspect"]
    print("ratios:")
    print(f"  convert throughput / cp throughput         {r_cp:6.2f}  (goal >= 0.80: {'PASS' if r_cp >= 0.8 else 'FAIL'})")
    print(f"  python route / ckptguard convert           {r_py:6.2f}x (goal >= 3: {'PASS' if r_py >= 3 else 'FAIL'};"
          f" {res['py_convert_process'] / res['convert']:.1f}x whole process)")
    print(f"  torch.load / ckptguard inspect             {r_ld:6.2f}x ({res['torch_load_process'] / res['inspect']:.1f}x whole process)")
    res.update(ratio_cp=r_cp, ratio_python=r_py, ratio_load=r_ld)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    rm(out)()
    return 0


if __name__ == "__main__":
    sys.exit(main())
