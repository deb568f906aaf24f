#!/usr/bin/env bash
# Regenerates the bundled default model, models/ernie-4.5-tiny-zh/: config.json,
# model.safetensors (bf16) and pretrain_log.json, by pre-training from random weights with
# `ernie-sentiment pretrain` on the unlabelled review corpus plus the text of ChnSentiCorp train
# (its labels unused). Train texts that also occur in ChnSentiCorp dev or test, or share their
# first 30 characters with one, are left out, so dev and test text is never seen.
# The tokenizer (tokenizer.model) comes from scripts/train-tokenizer.sh and is not changed here.
# Took 56 minutes on 2 cores (Zen 3) shared with other work. reviews.txt is not bundled (11 MB):
# it is read from the shared data directory. Usage: scripts/pretrain-default-model.sh [SHARED_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${1:-../shared}
reviews="$shared/data/pretrain/reviews.txt"
senti=data/chnsenticorp  # the bundled copy
model=models/ernie-4.5-tiny-zh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

node -e '
const fs = require("fs")
const texts = (f) => fs.readFileSync(f, "utf8").split("\n").slice(1).filter((l) => l.includes("\t")).map((l) => l.slice(l.indexOf("\t") + 1).trim())
const held = [...texts(process.argv[2]), ...texts(process.argv[3])]
const exact = new Set(held), prefix = new Set(held.map((t) => t.slice(0, 30)))
const kept = texts(process.argv[1]).filter((t) => t && !exact.has(t) && !prefix.has(t.slice(0, 30)))
fs.writeFileSync(process.argv[4], kept.join("\n") + "\n")
console.error(`ChnSentiCorp train: ${kept.length} texts kept for pre-training`)
' "$senti/train.tsv" "$senti/dev.tsv" "$senti/test.tsv" "$work/chnsenticorp-train.txt"

npx tsc -p tsconfig.json
node dist/lib/cli/bin.js pretrain \
  --text "$reviews" --text "$work/chnsenticorp-train.txt" \
  --config scripts/ernie-4.5-tiny-zh.config.json --tokenizer "$model" --out "$work/out" \
  --seq-length 256 --batch-size 32 --epochs 2 --lr 1.5e-3 --warmup-steps 100 --weight-decay 0.1 \
  --eval-documents 500 --eval-steps 100 --save-steps 0 --seed 0
cp "$work/out/config.json" "$work/out/model.safetensors" "$work/out/pretrain_log.json" "$model/"
echo "wrote $model/config.json, model.safetensors, pretrain_log.json"
