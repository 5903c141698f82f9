#!/usr/bin/env python3
"""Independent reference for latte's GPT-2 tokenizer: a direct port of OpenAI's gpt-2 encoder.py.

Only used to produce and cross-check expected ids (tests/data/*.cpp embed them; the C++ tests do not
need Python). The split uses the `regex` package with GPT-2's exact pattern, and BPE is encoder.py's
loop. Input is raw bytes: they are decoded with errors="surrogateescape", so each byte that is not
valid UTF-8 becomes a lone surrogate (neither letter, number nor whitespace for the regex) and maps
back to that byte before byte-level BPE -- the behaviour latte's tokenizer specifies for invalid
UTF-8.

usage:
  gpt2_bpe_reference.py [--dir data/gpt2] < file          print the ids of stdin, space-separated
  gpt2_bpe_reference.py [--dir data/gpt2] --lines < file  one line of ids per input line (w/o '\\n')
"""
import argparse
import json
import sys

import regex

PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(n) for n in cs]))


def get_pairs(word):
    pairs = set()
    prev_char = word[0]
    for char in word[1:]:
        pairs.add((prev_char, char))
        prev_char = char
    return pairs


class Encoder:
    def __init__(self, directory):
        with open(f"{directory}/encoder.json", encoding="utf-8") as f:
            self.encoder = json.load(f)
        with open(f"{directory}/vocab.bpe", encoding="utf-8") as f:
            bpe_data = f.read()
        merges = [tuple(line.split()) for line in bpe_data.split("\n")[1:-1]]
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.byte_encoder = bytes_to_unicode()
        self.cache = {}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        pairs = get_pairs(word)
        if not pairs:
            return token
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        word = " ".join(word)
        self.cache[token] = word
        return word

    def encode_bytes(self, data):
        text = data.decode("utf-8", errors="surrogateescape")
        ids = []
        for piece in PATTERN.findall(text):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8", errors="surrogateescape"))
            ids.extend(self.encoder[t] for t in self.bpe(mapped).split(" "))
        return ids


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", default="data/gpt2")
    parser.add_argument("--lines", action="store_true")
    args = parser.parse_args()
    encoder = Encoder(args.dir)
    data = sys.stdin.buffer.read()
    if args.lines:
        for line in data.split(b"\n"):
            print(" ".join(map(str, encoder.encode_bytes(line))))
    else:
        print(" ".join(map(str, encoder.encode_bytes(data))))


if __name__ == "__main__":
    main()
