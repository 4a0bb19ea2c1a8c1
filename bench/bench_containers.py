"""Container scan benchmark, one run, same files for every tool.

1. Makes a >= 1 GiB torch checkpoint (torch.save of a state_dict) and reports how many bytes
   `ckptguard scan` reads to judge it (--format json: bytes_read), and its wall time.
2. Times ckptguard, picklescan and modelscan on that file and on the real benign checkpoints
   in fixtures/containers (Lightning, Fabric, DeepSpeed states, torch zips), whole process per
   file, and prints the ratios.

Usage: python bench/bench_containers.py  (env: CKPTGUARD_BIN, PICKLESCAN, MODELSCAN, RUNS, GIB)
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
BIN = os.environ.get("CKPTGUARD_BIN", str(ROOT / "target/x86_64-unknown-linux-gnu/release/ckptguard"))
PICKLESCAN = os.environ.get("PICKLESCAN") or shutil.which("picklescan")
MODELSCAN = os.environ.get("MODELSCAN") or shutil.which("modelscan")
RUNS = int(os.environ.get("RUNS", "3"))
GIB = float(os.environ.get("GIB", "1.0"))


def big_checkpoint():
    path = OUT / f"big_{GIB:g}gib.pt"
    if path.exists():
        return path
    import torch

    OUT.mkdir(parents=True, exist_ok=True)
    n = int(GIB * (1 << 30) / 4 / 64) + 1  # 64 float32 tensors
    sd = {f"layer{i}.weight": torch.empty(n, dtype=torch.float32).uniform_() for i in range(64)}
    sd["meta"] = {"epoch": 3, "lr": 1e-3}
    torch.save(sd, path)
    return path


def timed(cmd):
    ts = []
    for _ in range(RUNS):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    if not Path(BIN).exists():
        sys.exit(f"ckptguard binary not found at {BIN}: cargo build --release")
    big = big_checkpoint()
    size = big.stat().st_size
    r = json.loads(subprocess.run([BIN, "scan", "--format", "json", str(big)], capture_output=True, text=True).stdout)
    f = r["files"][0]
    print(f"big checkpoint: {big.name}, {size / (1 << 30):.2f} GiB, verdict {f['verdict']}, "
          f"bytes read {f['bytes_read']} ({f['bytes_read'] / (1 << 20):.3f} MiB, {100 * f['bytes_read'] / size:.4f}% of the file)")
    files = [big]
    for e in json.loads((ROOT / "fixtures/containers/manifest.json").read_text()):
        p = ROOT / e["path"]
        if e["expect"] == "safe" and p.is_file() and p.suffix in (".pt", ".ckpt"):
            files.append(p)
        elif e["expect"] == "safe" and e["kind"] == "deepspeed_dir":
            files.extend(sorted(p.rglob("*_states.pt")))
    tools = [("ckptguard", lambda p: [BIN, "scan", str(p)])]
    if PICKLESCAN:
        tools.append(("picklescan", lambda p: [PICKLESCAN, "-p", str(p)]))
    if MODELSCAN:
        tools.append(("modelscan", lambda p: [MODELSCAN, "-p", str(p)]))
    print(f"\n{'file':60} " + " ".join(f"{n:>12}" for n, _ in tools) + "   ratios vs ckptguard")
    totals = {n: 0.0 for n, _ in tools}
    for p in files:
        row = {n: timed(c(p)) for n, c in tools}
        for n in row:
            totals[n] += row[n]
        rel = str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else p.name
        ratios = " ".join(f"{n} {row[n] / row['ckptguard']:.1f}x" for n in row if n != "ckptguard")
        print(f"{rel[-60:]:60} " + " ".join(f"{row[n] * 1000:10.1f}ms" for n, _ in tools) + f"   {ratios}")
    print("\ntotal: " + ", ".join(f"{n} {t:.2f}s" for n, t in totals.items()))
    for n, t in totals.items():
        if n != "ckptguard":
            print(f"aggregate {n}/ckptguard: {t / totals['ckptguard']:.1f}x")


if __name__ == "__main__":
    main()
