#!/usr/bin/env bash
# Signing/verification throughput: ckptguard vs sha256sum vs model_signing (key mode),
# all in the same run on the same data.
#
#   bench/bench_sign.sh                 # 1 GiB file + 256 MiB directory of 4096 files, warm cache
#   SIZE_MB=4096 RUNS=5 bench/bench_sign.sh
#   COLD=1 bench/bench_sign.sh          # evict the test files from the page cache before each run
#
# Env: CKPTGUARD_BIN (default target/x86_64-unknown-linux-gnu/release/ckptguard), MODEL_SIGNING (default: model_signing
# next to $PYTHON or on PATH), SIZE_MB (1024), NFILES (4096), FILE_KB (64), RUNS (3, best-of),
# BENCH_DIR (parent of the temporary directory; default $TMPDIR or /tmp).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CK="${CKPTGUARD_BIN:-$REPO/target/x86_64-unknown-linux-gnu/release/ckptguard}"
SIZE_MB="${SIZE_MB:-1024}"
NFILES="${NFILES:-4096}"
FILE_KB="${FILE_KB:-64}"
RUNS="${RUNS:-3}"
COLD="${COLD:-0}"

if [[ -z "${MODEL_SIGNING:-}" ]]; then
  if command -v model_signing >/dev/null; then MODEL_SIGNING="$(command -v model_signing)"
  elif [[ -x /tmp/venv/bin/model_signing ]]; then MODEL_SIGNING=/tmp/venv/bin/model_signing
  else MODEL_SIGNING=""; fi
fi
[[ -x "$CK" ]] || { echo "ckptguard binary not found at $CK (cargo build --release)" >&2; exit 2; }

WORK="$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/ckptguard-bench-sign.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

echo "# ckptguard sign/verify benchmark  ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
echo "# host: $(nproc) cores, $(uname -sr); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# ckptguard: $CK"
echo "# model_signing: ${MODEL_SIGNING:-not found} $([[ -n "$MODEL_SIGNING" ]] && "$MODEL_SIGNING" --version 2>/dev/null | head -1)"
echo "# sha256sum: $(sha256sum --version | head -1)"
echo "# best of $RUNS runs, cache: $([[ "$COLD" == 1 ]] && echo cold || echo warm)"

echo "# preparing data: ${SIZE_MB} MiB file, ${NFILES} x ${FILE_KB} KiB files ..." >&2
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom > big.bin
mkdir -p many
for ((i = 0; i < NFILES; i++)); do
  d="many/d$((i % 16))/e$((i % 7))"
  mkdir -p "$d"
  head -c "$((FILE_KB * 1024))" /dev/urandom > "$d/f$i.bin"
done
"$CK" keygen -o key >/dev/null

evict() {
  # Drop only our own files from the page cache (no root needed).
  find "$1" -type f -exec dd if={} iflag=nocache count=0 status=none \; 2>/dev/null || true
}
warm() { find "$1" -type f -exec cat {} + >/dev/null; }

# best_of NAME TARGET CMD...: run CMD $RUNS times, print the best wall time in seconds.
best_of() {
  local target="$1"; shift
  local best="" t0 t1 dt
  for ((r = 0; r < RUNS; r++)); do
    if [[ "$COLD" == 1 ]]; then evict "$target"; else warm "$target"; fi
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>"$WORK/last.err" || { echo "FAILED: $*" >&2; cat "$WORK/last.err" >&2; return 1; }
    t1=$(date +%s.%N)
    dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')
    if [[ -z "$best" ]] || awk -v x="$dt" -v y="$best" 'BEGIN{exit !(x<y)}'; then best="$dt"; fi
  done
  echo "$best"
}

sha_tree() { find "$1" -type f -print0 | sort -z | xargs -0 sha256sum; }

bench_target() {
  local label="$1" target="$2" bytes
  bytes=$(find "$target" -type f -printf '%s\n' | awk '{s+=$1} END{print s}')
  echo
  echo "## $label: $(awk -v b="$bytes" 'BEGIN{printf "%.0f MiB", b/1048576}'), $(find "$target" -type f | wc -l) file(s)"
  declare -A T
  if [[ -f "$target" ]]; then
    T[sha256sum]=$(best_of "$target" sha256sum "$target")
  else
    T[sha256sum]=$(best_of "$target" sha_tree "$target")
  fi
  T[ck_sign]=$(best_of "$target" "$CK" sign --key key.pem --signature ck.sig "$target")
  T[ck_verify]=$(best_of "$target" "$CK" verify --key key.pub.pem --signature ck.sig "$target")
  if [[ -n "$MODEL_SIGNING" ]]; then
    T[ms_sign]=$(best_of "$target" "$MODEL_SIGNING" sign key --private_key key.pem --signature ms.sig "$target")
    T[ms_verify]=$(best_of "$target" "$MODEL_SIGNING" verify key --public_key key.pub.pem --signature ms.sig "$target")
    # Cross-check in the same run: each tool accepts the other's signature.
    "$MODEL_SIGNING" verify key --public_key key.pub.pem --signature ck.sig "$target" >/dev/null
    "$CK" verify --key key.pub.pem --signature ms.sig "$target" >/dev/null
  fi
  printf "%-24s %9s %11s %14s\n" "tool" "seconds" "MB/s" "vs sha256sum"
  for k in sha256sum ck_sign ck_verify ms_sign ms_verify; do
    [[ -n "${T[$k]:-}" ]] || continue
    case $k in
      sha256sum) name="sha256sum" ;; ck_sign) name="ckptguard sign" ;; ck_verify) name="ckptguard verify" ;;
      ms_sign) name="model_signing sign key" ;; ms_verify) name="model_signing verify key" ;;
    esac
    awk -v n="$name" -v t="${T[$k]}" -v b="$bytes" -v s="${T[sha256sum]}" \
      'BEGIN{printf "%-24s %9.3f %11.0f %13.2fx\n", n, t, b/t/1e6, s/t}'
  done
  if [[ -n "${T[ms_sign]:-}" ]]; then
    awk -v a="${T[ms_sign]}" -v b="${T[ck_sign]}" -v c="${T[ms_verify]}" -v d="${T[ck_verify]}" \
      'BEGIN{printf "speed-up vs model_signing: sign %.2fx, verify %.2fx\n", a/b, c/d}'
  fi
}

bench_target "single file" big.bin
bench_target "directory" many
