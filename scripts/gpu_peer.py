#!/usr/bin/env python3
"""PyTorch's figures at ernie_check's benchmark shapes, on the same GPU (scripts/check-gpu.sh).

One JSON object per line, in the form of ernie_check's bench lines (native/check/bench.cc), so
the two can be read side by side:
  gemm                torch.matmul(a, b.t()), a [m, k] and b [n, k] bf16 (bf16 out), TFLOP/s = 2 m n k / s,
                      at the ERNIE-4.5-0.3B layer shapes for 1024 tokens and 4096^3;
  attention_forward   F.scaled_dot_product_attention(q, k, v, is_causal=True), bf16, 16 heads,
  attention_backward  2 kv heads (GQA), head dim 128, T = 512 / 2048 / 8192 with B T = 16384;
                      forward 4 B H T^2 D / 2 flops, backward 2.5x that (flash-attention's count);
  memory              torch.cuda.max_memory_allocated over the runs.
Times are the median of --iterations runs after one warm-up, with CUDA events.
Without PyTorch or a CUDA device it prints one line saying why and exits 0.

  python3 scripts/gpu_peer.py [--iterations N]
  python3 scripts/gpu_peer.py --device cpu --quick --iterations 1   # a dry run of the code, no GPU
"""
import argparse
import json
import statistics
import sys
import time

GEMM_SHAPES = [(1024, 2048, 1024), (1024, 256, 1024), (1024, 1024, 2048), (1024, 3072, 1024), (1024, 1024, 3072), (4096, 4096, 4096)]
HEADS, KV_HEADS, HEAD_DIM, TOKENS = 16, 2, 128, 16384
SEQS = (512, 2048, 8192)


def emit(obj):
    print(json.dumps(obj), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a dry run of this script's code (its times mean nothing)")
    parser.add_argument("--quick", action="store_true", help="the two smallest GEMMs and T = 512 with batch 1 only")
    args = parser.parse_args()

    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # not installed, or broken
        emit({"bench": "peer", "impl": "torch", "skipped": f"PyTorch is not importable: {e}"})
        return 0
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        emit({"bench": "peer", "impl": "torch", "torch": torch.__version__, "skipped": "torch.cuda.is_available() is False (no CUDA device, or a CPU-only PyTorch)"})
        return 0

    if cuda:
        dev = torch.device("cuda", 0)
        major, minor = torch.cuda.get_device_capability(dev)
        common = {"impl": "torch", "torch": torch.__version__, "device": torch.cuda.get_device_name(dev), "cc": f"{major}.{minor}"}
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.cuda.reset_peak_memory_stats(dev)
    else:
        dev = torch.device("cpu")
        common = {"impl": "torch", "torch": torch.__version__, "device": "cpu (dry run: times mean nothing)", "cc": ""}

    def seconds(fn):
        fn()
        if not cuda:
            times = []
            for _ in range(args.iterations):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return statistics.median(times)
        torch.cuda.synchronize(dev)
        times = []
        for _ in range(args.iterations):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / 1e3)
        return statistics.median(times)

    def run(label, fields, fn, flops):
        line = {"bench": label, **common, **fields}
        try:
            s = seconds(fn)
            line["seconds"] = float(f"{s:.6e}")
            line["tflops"] = round(flops / s / 1e12, 2)
        except Exception as e:  # out of memory, an unsupported kernel: say so and go on
            line["error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
        emit(line)

    gen = torch.Generator(device=dev).manual_seed(1)
    for m, n, k in GEMM_SHAPES[:2] if args.quick else GEMM_SHAPES:
        a = torch.randn(m, k, device=dev, dtype=torch.bfloat16, generator=gen)
        b = torch.randn(n, k, device=dev, dtype=torch.bfloat16, generator=gen) * 0.05
        run("gemm", {"m": m, "n": n, "k": k, "dtype": "bf16", "out": "bf16"}, lambda a=a, b=b: torch.matmul(a, b.t()), 2.0 * m * n * k)
        del a, b

    if not hasattr(F, "scaled_dot_product_attention"):
        emit({"bench": "attention", **common, "skipped": f"F.scaled_dot_product_attention needs PyTorch 2.0 or later (this is {torch.__version__})"})
        SEQS_RUN = ()
    else:
        SEQS_RUN = SEQS[:1] if args.quick else SEQS
    # GQA in SDPA itself where this PyTorch has it (2.5+); else k and v repeated to 16 heads
    # outside the timed region (the same flops, more memory traffic).
    try:
        F.scaled_dot_product_attention(*(torch.zeros(1, h, 8, 8, device=dev, dtype=torch.bfloat16) for h in (2, 1, 1)), is_causal=True, enable_gqa=True)
        gqa = True
    except Exception:
        gqa = False
    for T in SEQS_RUN:
        B = 1 if args.quick else TOKENS // T
        fwd_flops = 4.0 * B * HEADS * T * T * HEAD_DIM / 2
        fields = {"batch": B, "seq": T, "heads": HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM, "causal": True, "gqa_in_kernel": gqa}
        try:
            q = torch.randn(B, HEADS, T, HEAD_DIM, device=dev, dtype=torch.bfloat16, generator=gen, requires_grad=True)
            k = torch.randn(B, KV_HEADS, T, HEAD_DIM, device=dev, dtype=torch.bfloat16, generator=gen)
            v = torch.randn(B, KV_HEADS, T, HEAD_DIM, device=dev, dtype=torch.bfloat16, generator=gen)
            if not gqa:
                k, v = (x.repeat_interleave(HEADS // KV_HEADS, dim=1) for x in (k, v))
            k.requires_grad_(True)
            v.requires_grad_(True)
            extra = {"enable_gqa": True} if gqa else {}

            def forward(q=q, k=k, v=v, extra=extra):
                with torch.no_grad():
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True, **extra)

            run("attention_forward", fields, forward, fwd_flops)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, **extra)
            dout = torch.randn_like(out)
            run("attention_backward", fields, lambda out=out, dout=dout, q=q, k=k, v=v: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True), 2.5 * fwd_flops)
            del q, k, v, out, dout
        except Exception as e:
            emit({"bench": "attention", **common, **fields, "error": str(e).splitlines()[0] if str(e) else type(e).__name__})
        if cuda:
            torch.cuda.empty_cache()

    if cuda:
        emit({"bench": "memory", **common, "torch_max_allocated_bytes": torch.cuda.max_memory_allocated(dev), "torch_max_reserved_bytes": torch.cuda.max_memory_reserved(dev)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
