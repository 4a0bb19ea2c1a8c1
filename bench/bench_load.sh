#!/usr/bin/env bash
# Safe loading / conversion throughput on a ~1 GiB torch checkpoint (generated once with torch):
# cp vs `ckptguard convert` vs safetensors.torch.save_file(torch.load(...)), and
# `ckptguard inspect` vs torch.load(weights_only=True). Prints medians and ratios.
#
# Usage: bench/bench_load.sh
# Environment:
#   CKPTGUARD_BIN  ckptguard binary                 (default: newest <repo>/target/[<triple>/]release/ckptguard)
#   PYTHON         python with torch + safetensors  (default: /tmp/venv/bin/python, else <repo>/.venv)
#   BENCH_DIR      where the checkpoint and outputs go (default: $TMPDIR/ckptguard-bench-load)
#   SIZE_MIB       checkpoint size (default 1024); RUNS: runs per measurement (default 5)
#   BENCH_JSON     also write the results as JSON here
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${CKPTGUARD_BIN:-}" ]]; then
  # the newest release build (the workspace may build for an explicit target triple)
  CKPTGUARD_BIN="$(ls -t "$REPO/target/release/ckptguard" "$REPO"/target/*/release/ckptguard 2>/dev/null | head -1 || true)"
  CKPTGUARD_BIN="${CKPTGUARD_BIN:-$REPO/target/release/ckptguard}"
fi
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  for p in /tmp/venv/bin/python "$REPO/.venv/bin/python"; do
    [[ -x "$p" ]] && { PYTHON="$p"; break; }
  done
fi
if [[ ! -x "$CKPTGUARD_BIN" ]]; then
  echo "bench_load: ckptguard binary not found at '$CKPTGUARD_BIN' (cargo build --release)" >&2
  exit 2
fi
if [[ -z "$PYTHON" ]] || ! "$PYTHON" -c 'import torch, safetensors' 2>/dev/null; then
  echo "bench_load: need a python with torch and safetensors (set PYTHON)" >&2
  exit 2
fi
args=(--bin "$CKPTGUARD_BIN" --python "$PYTHON" --size-mib "${SIZE_MIB:-1024}" --runs "${RUNS:-5}")
[[ -n "${BENCH_DIR:-}" ]] && args+=(--dir "$BENCH_DIR")
[[ -n "${BENCH_JSON:-}" ]] && args+=(--json "$BENCH_JSON")
exec "$PYTHON" "$REPO/bench/bench_load.py" "${args[@]}"
