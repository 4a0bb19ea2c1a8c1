#!/usr/bin/env bash
# Time `ckptguard scan` against picklescan on the same fixture files, in the same run, one whole
# process per file per run.  Prints per-file means, picklescan/ckptguard ratios and the aggregate ratio.
#
# Usage: bench/bench_scan.sh [FILE...]
#   no FILE: every benign fixture, every malicious/opcode and malicious/numpy fixture, and the
#            protocol-4 file of every malicious/reduce family (BENCH_SET=all: every fixture file).
# Environment:
#   CKPTGUARD_BIN  ckptguard binary           (default: <repo>/target/x86_64-unknown-linux-gnu/release/ckptguard)
#   VENV           venv holding picklescan    (default: <repo>/.venv; uses $VENV/bin/picklescan)
#   RUNS / WARMUP  measured / warm-up runs per file and tool (default 5 / 1)
#   ENGINE         auto | python | hyperfine  (default auto: hyperfine if installed)
#   BENCH_JSON     also write the summary JSON here (e.g. bench/out/scan.json; bench/out is gitignored)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CKPTGUARD_BIN="${CKPTGUARD_BIN:-$REPO/target/x86_64-unknown-linux-gnu/release/ckptguard}"
VENV="${VENV:-$REPO/.venv}"
RUNS="${RUNS:-5}"
WARMUP="${WARMUP:-1}"
ENGINE="${ENGINE:-auto}"
BENCH_SET="${BENCH_SET:-sample}"
PICKLESCAN="$VENV/bin/picklescan"

if [[ ! -x "$CKPTGUARD_BIN" ]]; then
  echo "bench_scan: ckptguard binary not found at '$CKPTGUARD_BIN'." >&2
  echo "  build it with 'cargo build --release' or point CKPTGUARD_BIN at it." >&2
  exit 2
fi
if [[ ! -x "$PICKLESCAN" ]]; then
  echo "bench_scan: picklescan not found at '$PICKLESCAN'." >&2
  echo "  create the venv ('python3 -m venv $VENV && $VENV/bin/pip install picklescan') or set VENV." >&2
  exit 2
fi

# stdlib-only harness: any python3 will do, prefer the venv's
PY="$VENV/bin/python"
[[ -x "$PY" ]] || PY="$(command -v python3 || true)"
if [[ -z "$PY" ]]; then
  echo "bench_scan: no python3 found for the timing harness" >&2
  exit 2
fi

FILES=()
if [[ $# -gt 0 ]]; then
  FILES=("$@")
else
  FIX="$REPO/fixtures/pickle"
  if [[ ! -d "$FIX" ]]; then
    echo "bench_scan: no files given and $FIX does not exist (run fixtures/gen_pickles.py)" >&2
    exit 2
  fi
  if [[ "$BENCH_SET" == "all" ]]; then
    pattern=( -type f ! -name manifest.json ! -name README.md ! -name .gitattributes )
    mapfile -t FILES < <(find "$FIX" "${pattern[@]}" | LC_ALL=C sort)
  else
    mapfile -t FILES < <( { find "$FIX/benign" "$FIX/malicious/opcode" "$FIX/malicious/numpy" -type f 2>/dev/null
                             find "$FIX/malicious/reduce" -type f -name '*_p4.pkl' 2>/dev/null; } | LC_ALL=C sort)
  fi
fi
if [[ ${#FILES[@]} -eq 0 ]]; then
  echo "bench_scan: no files to scan" >&2
  exit 2
fi

extra=()
[[ -n "${BENCH_JSON:-}" ]] && extra+=(--json "$BENCH_JSON")

exec "$PY" "$REPO/bench/bench_scan.py" \
  --ckptguard "$CKPTGUARD_BIN" --picklescan "$PICKLESCAN" \
  --runs "$RUNS" --warmup "$WARMUP" --engine "$ENGINE" --root "$REPO" "${extra[@]}" -- "${FILES[@]}"
