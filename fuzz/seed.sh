#!/usr/bin/env bash
# Seeds each fuzz target's corpus from the committed fixtures (corpora are not committed).
set -euo pipefail
cd "$(dirname "$0")"
for t in pickle_ops pickle_machine scan_bytes; do
  mkdir -p "corpus/$t"
  find ../fixtures/pickle -type f ! -name '*.md' ! -name '*.json' -size -64k -exec cp -t "corpus/$t" {} +
done
mkdir -p corpus/zip_reader corpus/scan_bytes
find ../fixtures/containers ../fixtures/pickle -type f \( -name '*.pt' -o -name '*.ckpt' -o -name '*.npz' -o -name '*.tar' \) -size -256k -exec cp -t corpus/zip_reader {} +
cp corpus/zip_reader/* corpus/scan_bytes/ 2>/dev/null || true
echo "seeded: $(ls corpus/pickle_machine | wc -l) pickles, $(ls corpus/zip_reader | wc -l) containers"
