#!/usr/bin/env bash
# Regenerates models/ernie-4.5-tiny-zh/tokenizer.model: a SentencePiece BPE model with the
# ERNIE-4.5 tokenizer's settings (byte fallback, digits split one per token, no dummy prefix,
# spaces kept, identity normalisation, <unk>/<s>/</s> = 0/1/2), trained on the unlabelled
# review corpus plus ChnSentiCorp train (never dev or test).
#   usage: scripts/train-tokenizer.sh [DATA_DIR]   (default ../shared/data)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
data="${1:-$here/../shared/data}"
out="$here/models/ernie-4.5-tiny-zh"
if ! command -v spm_train >/dev/null; then
  apt-get update -qq && apt-get install -y -qq sentencepiece
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat "$data/pretrain/reviews.txt" > "$work/corpus.txt"
tail -n +2 "$data/chnsenticorp/train.tsv" | cut -f2- >> "$work/corpus.txt"
mkdir -p "$out"
spm_train --input="$work/corpus.txt" --model_prefix="$work/tokenizer" \
  --model_type=bpe --vocab_size=8000 --character_coverage=0.9995 \
  --byte_fallback=true --split_digits=true --add_dummy_prefix=false \
  --remove_extra_whitespaces=false --normalization_rule_name=identity \
  --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 \
  --user_defined_symbols='<|begin_of_sentence|>,<|end_of_sentence|>' \
  --max_sentence_length=8192 --input_sentence_size=2000000 --shuffle_input_sentence=true \
  --num_threads=2 --minloglevel=1
cp "$work/tokenizer.model" "$out/tokenizer.model"
cat > "$out/tokenizer_config.json" <<'JSON'
{
  "tokenizer_class": "LlamaTokenizer",
  "add_bos_token": false,
  "add_eos_token": false,
  "pad_token": "<unk>",
  "unk_token": "<unk>",
  "bos_token": "<s>",
  "eos_token": "</s>",
  "cls_token": "<|begin_of_sentence|>",
  "sep_token": "<|end_of_sentence|>",
  "model_max_length": 4096
}
JSON
echo "wrote $out/tokenizer.model ($(stat -c %s "$out/tokenizer.model") bytes)"
