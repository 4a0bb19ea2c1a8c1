#!/usr/bin/env python3
"""Whole-process timing of `ckptguard scan` vs `picklescan` on the same files (stdlib only).

Normally started by bench/bench_scan.sh, which resolves the binaries.  Each command is run once per
file per round (a fresh process each time, like a user or CI would), rounds interleave the two tools
to spread out machine noise.  With --engine hyperfine, hyperfine does the measuring per file and this
script only summarises its JSON.

Prints per-file mean +- stdev (ms) for both tools, the per-file ratio picklescan/ckptguard, and the
aggregate ratio (sum of picklescan means / sum of ckptguard means) plus the geometric mean of the
per-file ratios.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def ckptguard_cmd(binary: str, path: str) -> list[str]:
    return [binary, "scan", "--format", "json", path]


def picklescan_cmd(binary: str, path: str) -> list[str]:
    return [binary, "-p", path]


def time_once(cmd: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL).returncode
    return time.perf_counter() - t0, rc


def measure_python(files, ck, ps, runs, warmup):
    results = []
    for path in files:
        cmds = {"ckptguard": ckptguard_cmd(ck, path), "picklescan": picklescan_cmd(ps, path)}
        times = {k: [] for k in cmds}
        rcs = {k: collections.Counter() for k in cmds}
        for _ in range(warmup):
            for cmd in cmds.values():
                time_once(cmd)
        for i in range(runs):
            order = list(cmds) if i % 2 == 0 else list(reversed(cmds))
            for k in order:
                dt, rc = time_once(cmds[k])
                times[k].append(dt)
                rcs[k][rc] += 1
        results.append({"file": path, "times": times, "rcs": {k: dict(v) for k, v in rcs.items()}})
        progress(path, times)
    return results


def measure_hyperfine(files, ck, ps, runs, warmup, hyperfine):
    results = []
    with tempfile.TemporaryDirectory() as td:
        for path in files:
            out = os.path.join(td, "hf.json")
            cmd = [hyperfine, "-N", "-i", "--style", "none", "--warmup", str(warmup), "--runs", str(runs),
                   "--export-json", out, "-n", "ckptguard", " ".join(ckptguard_cmd(ck, path)),
                   "-n", "picklescan", " ".join(picklescan_cmd(ps, path))]
            r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                sys.stderr.write(r.stderr)
                raise SystemExit(f"bench_scan: hyperfine failed on {path}")
            with open(out) as f:
                data = json.load(f)
            times, rcs = {}, {}
            for r in data["results"]:
                times[r["command"]] = r["times"]
                rcs[r["command"]] = dict(collections.Counter(r.get("exit_codes") or []))
            results.append({"file": path, "times": times, "rcs": rcs})
            progress(path, times)
    return results


def progress(path, times):
    print(f"  measured {os.path.basename(path)}", file=sys.stderr, flush=True)


def summarize(results, root):
    rows = []
    for r in results:
        ck, ps = r["times"]["ckptguard"], r["times"]["picklescan"]
        ck_m, ps_m = statistics.fmean(ck), statistics.fmean(ps)
        rows.append({
            "file": os.path.relpath(r["file"], root) if root else r["file"],
            "ckptguard_ms": ck_m * 1e3, "ckptguard_sd_ms": (statistics.stdev(ck) if len(ck) > 1 else 0) * 1e3,
            "picklescan_ms": ps_m * 1e3, "picklescan_sd_ms": (statistics.stdev(ps) if len(ps) > 1 else 0) * 1e3,
            "ratio": ps_m / ck_m if ck_m > 0 else float("inf"),
            "exit_codes": r["rcs"],
        })
    width = max([len(x["file"]) for x in rows] + [4])
    print(f"{'file':<{width}}  {'ckptguard ms':>16}  {'picklescan ms':>16}  {'ps/ck':>8}")
    for x in rows:
        print(f"{x['file']:<{width}}  {x['ckptguard_ms']:>8.2f} ±{x['ckptguard_sd_ms']:>6.2f}  "
              f"{x['picklescan_ms']:>8.2f} ±{x['picklescan_sd_ms']:>6.2f}  {x['ratio']:>7.1f}x")
    tot_ck = sum(x["ckptguard_ms"] for x in rows)
    tot_ps = sum(x["picklescan_ms"] for x in rows)
    ratios = [x["ratio"] for x in rows if 0 < x["ratio"] < float("inf")]
    geo = math.exp(statistics.fmean(math.log(r) for r in ratios)) if ratios else float("nan")
    agg = tot_ps / tot_ck if tot_ck > 0 else float("inf")
    print()
    print(f"files: {len(rows)}")
    print(f"total of per-file means: ckptguard {tot_ck:.1f} ms, picklescan {tot_ps:.1f} ms")
    print(f"aggregate ratio picklescan/ckptguard (sum of means): {agg:.2f}x")
    print(f"geometric mean of per-file ratios: {geo:.2f}x")
    for tool in ("ckptguard", "picklescan"):
        hist = collections.Counter()
        for x in rows:
            for rc, n in x["exit_codes"].get(tool, {}).items():
                hist[int(rc)] += n
        print(f"{tool} exit codes: {dict(sorted(hist.items()))}")
    return {"rows": rows, "total_ckptguard_ms": tot_ck, "total_picklescan_ms": tot_ps,
            "aggregate_ratio": agg, "geomean_ratio": geo}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckptguard", required=True, help="ckptguard binary")
    ap.add_argument("--picklescan", required=True, help="picklescan executable")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--engine", choices=("auto", "python", "hyperfine"), default="auto")
    ap.add_argument("--root", default="", help="print file paths relative to this directory")
    ap.add_argument("--json", help="also write the summary as JSON here")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args(argv)
    if a.runs < 1:
        ap.error("--runs must be >= 1")
    for tool, path in (("ckptguard", a.ckptguard), ("picklescan", a.picklescan)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            print(f"bench_scan: {tool} not found or not executable: {path}", file=sys.stderr)
            return 2
    files = [os.path.abspath(f) for f in a.files]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        print(f"bench_scan: missing files: {missing[:5]}", file=sys.stderr)
        return 2
    hyperfine = shutil.which("hyperfine")
    engine = a.engine
    if engine == "auto":
        engine = "hyperfine" if hyperfine and not any(
            any(c.isspace() for c in s) for s in files + [a.ckptguard, a.picklescan]) else "python"
    if engine == "hyperfine" and not hyperfine:
        print("bench_scan: hyperfine not installed", file=sys.stderr)
        return 2
    print(f"engine: {engine}, runs: {a.runs}, warmup: {a.warmup}, files: {len(files)}")
    print(f"ckptguard:  {' '.join(ckptguard_cmd(a.ckptguard, 'FILE'))}")
    print(f"picklescan: {' '.join(picklescan_cmd(a.picklescan, 'FILE'))}")
    print()
    if engine == "hyperfine":
        results = measure_hyperfine(files, a.ckptguard, a.picklescan, a.runs, a.warmup, hyperfine)
    else:
        results = measure_python(files, a.ckptguard, a.picklescan, a.runs, a.warmup)
    summary = summarize(results, a.root)
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump({"engine": engine, "runs": a.runs, "warmup": a.warmup, **summary}, f, indent=1)
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
