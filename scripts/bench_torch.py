#!/usr/bin/env python3
"""PyTorch f32 CPU forward-pass throughput for SmolLM2-135M-Instruct (Q4_1 GGUF dequantised to f32).

    python3 scripts/bench_torch.py [THREADS] [--gguf PATH] [--batch 8] [--seq 32] [--warmup 2] [--runs 5]

Input: fixed random token ids (seed 0), batch x seq, full logits computed, torch.inference_mode().
Prints one JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("threads", nargs="?", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--gguf", help="GGUF path (default: output of scripts/fetch-models.sh)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    if args.gguf:
        gguf = Path(args.gguf).resolve()
    else:
        out = subprocess.run([str(REPO / "scripts" / "fetch-models.sh")], check=True, stdout=subprocess.PIPE,
                             text=True).stdout.strip().splitlines()
        gguf = Path(out[-1])
    if not gguf.is_file():
        sys.exit(f"GGUF not found: {gguf}")

    print(f"[bench_torch] loading {gguf}", file=sys.stderr, flush=True)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    vocab = model.config.vocab_size

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=g, dtype=torch.long)

    def step():
        t0 = time.perf_counter()
        with torch.inference_mode():
            logits = model(input_ids=ids, use_cache=False).logits
        dt = time.perf_counter() - t0
        assert logits.shape == (args.batch, args.seq, vocab) and logits.dtype == torch.float32
        return dt

    for i in range(args.warmup):
        dt = step()
        print(f"[bench_torch] warmup {i}: {dt:.4f}s", file=sys.stderr, flush=True)
    times = []
    for i in range(args.runs):
        times.append(step())
        print(f"[bench_torch] run {i}: {times[-1]:.4f}s", file=sys.stderr, flush=True)

    med = statistics.median(times)
    tokens = args.batch * args.seq
    print(json.dumps({
        "impl": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "seq": args.seq,
        "tokens_per_s": round(tokens / med, 2),
        "median_s": round(med, 6),
        "min_s": round(min(times), 6),
        "max_s": round(max(times), 6),
    }))


if __name__ == "__main__":
    main()
