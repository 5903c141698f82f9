#!/usr/bin/env bash
# Builds real English token corpora offline from Debian packages, tokenized with GPT-2 BPE:
#   small      data/kjv/       the King James Bible (package bible-kjv), one document per book;
#                              ~1.2M tokens, the quickstart corpus
#   linux-doc  data/linuxdoc/  the Linux 6.1 documentation (package linux-doc-6.1), HTML pages
#                              converted to text (scripts/html_to_text.py), one document per page
#   all        both
# Each directory gets <name>_val_000000.bin, <name>_train_NNNNNN.bin and manifest.json; see
# docs/data.md. Re-running is cheap: finished shards are verified and skipped.
# Needs the built CLI (scripts/setup.sh builds build/latte; override with LATTE=path) and the GPT-2
# vocabulary (fetched into data/gpt2/ if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-small}
LATTE=${LATTE:-build/latte}
WORKERS=${WORKERS:-$(nproc)}

case "$what" in
  small|linux-doc|all) ;;
  *) echo "usage: $0 [small|linux-doc|all]" >&2; exit 2 ;;
esac
if [[ ! -x "$LATTE" ]]; then
  echo "error: $LATTE not found; build latte first (scripts/setup.sh) or set LATTE=/path/to/latte" >&2
  exit 1
fi
[[ -f data/gpt2/encoder.json && -f data/gpt2/vocab.bpe ]] || scripts/fetch_gpt2_tokenizer.sh

need_package() {  # need_package <package> <file it provides>
  if [[ ! -e "$2" ]]; then
    echo "installing $1 (provides $2)" >&2
    if [[ $(id -u) -eq 0 ]]; then apt-get install -y "$1" >&2; else sudo apt-get install -y "$1" >&2; fi
  fi
}

prepare_kjv() {
  need_package bible-kjv /usr/bin/bible
  need_package bible-kjv-text /usr/lib/bible.data
  local text=data/kjv/text
  # The text is extracted once: regenerating it would change the inputs' mtimes and the manifest
  # would (rightly) refuse to resume shards made from "different" inputs.
  if [[ ! -f $text/.complete ]]; then
    rm -rf "$text" && mkdir -p "$text"
    # `bible -l` pretty-prints "Book N" chapter headings and "  V text" verses (one per line with
    # a wide line limit); a new book starts at each heading whose book name changes.
    bible -l 100000 gen1:1-rev22:21 | awk -v dir="$text" '
      /^[1-3]? ?[A-Z][A-Za-z ]* [0-9]+$/ {
        book = $0; sub(/ [0-9]+$/, "", book)
        if (book != current) {
          current = book; n++
          if (out) close(out)
          name = book; gsub(/ /, "_", name)
          out = sprintf("%s/%02d_%s.txt", dir, n, name)
        }
        print > out; next
      }
      { sub(/^  /, ""); if (out) print > out }'
    local books; books=$(ls "$text" | wc -l)
    [[ $books -eq 66 ]] || { echo "error: expected 66 books from bible(1), got $books" >&2; exit 1; }
    touch "$text/.complete"
  fi
  "$LATTE" tokenize --tokenizer gpt2 --tokenizer-dir data/gpt2 --input "$text" --output data/kjv \
    --format bin --doc-mode file --val-tokens 100K --shard-tokens 500K --workers "$WORKERS"
}

prepare_linuxdoc() {
  local html=/usr/share/doc/linux-doc-6.1/html
  need_package linux-doc-6.1 "$html/index.html"
  local text=data/linuxdoc/text/linuxdoc.jsonl
  if [[ ! -f $text ]]; then
    mkdir -p "$(dirname "$text")"
    # translations/ is not English; _sources/, _static/, _images/ are not pages.
    python3 scripts/html_to_text.py "$html" "$text" --exclude translations
  fi
  "$LATTE" tokenize --tokenizer gpt2 --tokenizer-dir data/gpt2 --input "$text" --output data/linuxdoc \
    --format bin --doc-mode jsonl --val-tokens 500K --shard-tokens 4M --workers "$WORKERS"
}

if [[ $what == small || $what == all ]]; then prepare_kjv; fi
if [[ $what == linux-doc || $what == all ]]; then prepare_linuxdoc; fi
