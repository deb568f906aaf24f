"""Peer of `npm run bench:generate`: greedy decoding with a KV cache of an ERNIE-4.5 checkpoint in
PyTorch on the CPU, batch 1, written plainly as a user would (transformers' Ernie4_5 graph, one
layer loop per token). It reads the checkpoint bench:generate wrote (config.json and
model.safetensors, the same random bf16 weights), so the greedy tokens can be compared.

setup: apt-get install -y python3-torch        (Debian's PyTorch; run with /usr/bin/python3)
run:   /usr/bin/python3 generate_peer.py MODEL_DIR PROMPT_IDS NEW_TOKENS DTYPE THREADS
       PROMPT_IDS comma-separated; DTYPE bfloat16 | float32 (the weights are cast to it)
prints one line per figure and, last, a JSON object: prefill and decode tokens/s, the tokens, and
the ten largest logits after the prompt ([id, value]).

Architecture (ERNIE-4.5, as ../shared/fixtures/README.md states it): RMSNorm computed in fp32,
RoPE on adjacent pairs (2i, 2i+1) with theta_i = pos * rope_theta^(-2i/head_dim), GQA (query
head h reads key/value head h // (heads / kv_heads)), causal attention with softmax in fp32,
MLP down(silu(gate(x)) * up(x)), pre-norm residuals, the LM head tied to the embedding unless
the checkpoint has lm_head.weight."""
import json
import math
import mmap
import struct
import sys
import time

import torch

DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
SIZES = {"BF16": 2, "F16": 2, "F32": 4}


def read_safetensors(file, dtype):
    with open(file, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    n = struct.unpack("<Q", mm[:8])[0]
    header = json.loads(mm[8:8 + n])
    tensors = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        stored = torch.frombuffer(bytearray(mm[8 + n + a:8 + n + b]), dtype=DTYPES[t["dtype"]], count=(b - a) // SIZES[t["dtype"]])
        tensors[name] = stored.view(t["shape"]).to(dtype)
    return tensors


class Decoder:
    def __init__(s, directory, dtype, max_len):
        cfg = json.load(open(f"{directory}/config.json"))
        if cfg.get("model_type") != "ernie4_5":
            raise SystemExit(f"generate_peer.py runs ERNIE-4.5 (model_type ernie4_5), not {cfg.get('model_type')}")
        w = read_safetensors(f"{directory}/model.safetensors", dtype)
        s.dtype, s.eps = dtype, cfg["rms_norm_eps"]
        s.H, s.KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        s.D = cfg.get("head_dim") or cfg["hidden_size"] // s.H
        s.L = cfg["num_hidden_layers"]
        s.embed = w["model.embed_tokens.weight"]
        s.head = w.get("lm_head.weight", s.embed)
        s.final_norm = w["model.norm.weight"]
        names = ("input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                 "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
        s.layers = [[w[f"model.layers.{l}.{n}.weight"] for n in names] for l in range(s.L)]
        inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, s.D, 2, dtype=torch.float64) / s.D))
        angles = torch.arange(max_len, dtype=torch.float64)[:, None] * inv[None]
        s.cos, s.sin = angles.cos().float(), angles.sin().float()
        s.k_cache = torch.zeros(s.L, s.KV, max_len, s.D, dtype=dtype)
        s.v_cache = torch.zeros(s.L, s.KV, max_len, s.D, dtype=dtype)
        s.length = 0

    def norm(s, x, w):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + s.eps)).to(s.dtype) * w

    def rope(s, t, pos):
        # t [T, heads, D]: pairs (2i, 2i+1) rotated by position pos + row
        T = t.shape[0]
        cos, sin = s.cos[pos:pos + T, None, :], s.sin[pos:pos + T, None, :]
        t32 = t.float()
        a, b = t32[..., 0::2], t32[..., 1::2]
        return torch.stack((a * cos - b * sin, b * cos + a * sin), -1).flatten(-2).to(s.dtype)

    def step(s, ids):
        """Runs ids after the cached tokens; returns the last one's logits (fp32)."""
        T, pos, S = len(ids), s.length, s.length + len(ids)
        H, KV, D = s.H, s.KV, s.D
        mask = torch.full((T, S), float("-inf")).triu(pos + 1)
        h = s.embed[torch.tensor(ids)]
        lin = torch.nn.functional.linear
        for l, (n1, n2, wq, wk, wv, wo, wg, wu, wd) in enumerate(s.layers):
            x = s.norm(h, n1)
            q = s.rope(lin(x, wq).view(T, H, D), pos)
            k = s.rope(lin(x, wk).view(T, KV, D), pos)
            s.k_cache[l, :, pos:S] = k.transpose(0, 1)
            s.v_cache[l, :, pos:S] = lin(x, wv).view(T, KV, D).transpose(0, 1)
            keys = s.k_cache[l, :, :S].repeat_interleave(H // KV, 0)
            values = s.v_cache[l, :, :S].repeat_interleave(H // KV, 0)
            scores = (q.transpose(0, 1) @ keys.transpose(-1, -2)).float() / math.sqrt(D) + mask
            a = torch.softmax(scores, -1).to(s.dtype) @ values
            h = h + lin(a.transpose(0, 1).reshape(T, H * D), wo)
            x = s.norm(h, n2)
            h = h + lin(torch.nn.functional.silu(lin(x, wg)) * lin(x, wu), wd)
        s.length = S
        return lin(s.norm(h[-1:], s.final_norm), s.head).float()[0]

    def greedy(s, prompt, new_tokens):
        """The greedy tokens, the prompt's last logits, and the seconds to the first token (prefill) and for the rest (decode)."""
        s.length = 0
        t0 = time.perf_counter()
        logits = s.step(prompt)
        tokens = [int(logits.argmax())]
        t1 = time.perf_counter()
        while len(tokens) < new_tokens:
            tokens.append(int(s.step([tokens[-1]]).argmax()))
        return tokens, logits, t1 - t0, time.perf_counter() - t1


def main():
    directory, prompt, new_tokens, dtype, threads = sys.argv[1:6]
    prompt, new_tokens, dtype = [int(x) for x in prompt.split(",")], int(new_tokens), getattr(torch, dtype)
    torch.set_num_threads(int(threads))
    with torch.inference_mode():
        decoder = Decoder(directory, dtype, len(prompt) + new_tokens)
        decoder.greedy(prompt[:8], 4)  # warm-up
        tokens, logits, prefill_s, decode_s = decoder.greedy(prompt, new_tokens)
    figures = {"prefill_tokens_per_s": len(prompt) / prefill_s, "decode_tokens_per_s": (new_tokens - 1) / decode_s}
    top = logits.topk(10)
    print(f"peer {str(dtype)[6:]}, {threads} threads: prefill {len(prompt)} tokens {prefill_s * 1e3:.0f} ms, "
          f"decode {new_tokens - 1} tokens {decode_s:.2f} s, {figures['decode_tokens_per_s']:.1f} tok/s", flush=True)
    print(json.dumps({"dtype": str(dtype)[6:], "threads": int(threads), **figures, "tokens": tokens,
                      "top_logits": [[int(i), float(v)] for v, i in zip(top.values, top.indices)]}))


if __name__ == "__main__":
    main()
