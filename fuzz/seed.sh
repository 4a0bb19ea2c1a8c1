#!/usr/bin/env bash
# Seeds each fuzz target's corpus from the committed fixtures (corpora are not committed).
# Files are named by content hash, so fixtures with the same name do not collide.
set -euo pipefail
cd "$(dirname "$0")"
add() { # target file...
  local t=$1; shift
  mkdir -p "corpus/$t"
  for f in "$@"; do cp "$f" "corpus/$t/$(sha1sum < "$f" | cut -c1-16)"; done
}
mapfile -t pickles < <(find ../fixtures/pickle -type f ! -name '*.md' ! -name '*.json' -size -64k)
mapfile -t containers < <(find ../fixtures/containers ../fixtures/pickle -type f \( -name '*.pt' -o -name '*.ckpt' -o -name '*.npz' -o -name '*.tar' -o -name '*.npy' \) -size -256k)
add pickle_ops "${pickles[@]}"
add pickle_machine "${pickles[@]}"
add zip_reader "${containers[@]}"
add scan_bytes "${pickles[@]}" "${containers[@]}"
add safe_load "${containers[@]}"
mapfile -t sigs < <(find ../crates/sign ../fixtures -name '*.sig' -size -64k 2>/dev/null)
mkdir -p corpus/sign_bundle
if [ ${#sigs[@]} -gt 0 ]; then add sign_bundle "${sigs[@]}"; fi
# Real bundles (single file and directory), made with the release binary if it is built.
bin=../target/x86_64-unknown-linux-gnu/release/ckptguard
if [ -x "$bin" ]; then
  tmp=$(mktemp -d)
  mkdir -p "$tmp/m/sub" && echo a > "$tmp/m/a.txt" && echo b > "$tmp/m/sub/b.bin"
  "$bin" keygen -o "$tmp/k" >/dev/null
  "$bin" sign --key "$tmp/k.pem" "$tmp/m" >/dev/null
  "$bin" sign --key "$tmp/k.pem" "$tmp/m/a.txt" -s "$tmp/one.sig" >/dev/null
  add sign_bundle "$tmp/m/model.sig" "$tmp/one.sig"
  rm -rf "$tmp"
fi
for t in pickle_ops pickle_machine zip_reader scan_bytes safe_load sign_bundle; do echo "$t: $(ls "corpus/$t" | wc -l) seeds"; done
