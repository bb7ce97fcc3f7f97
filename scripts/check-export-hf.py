#!/usr/bin/env python3
"""Checks that a model folder written by `kcirc edit --out` loads in Hugging Face transformers and gives kcirc's
logits: `python3 scripts/check-export-hf.py DIR [kcirc binary] [--tokenizer-json]` (needs torch and transformers;
CI has neither, so the test suite checks the kcirc side: written and reloaded logits equal). `--tokenizer-json`
tokenizes with the folder's tokenizer.json as it is instead of the family's tokenizer class, which transformers
picks from `model_type` (for a test model carrying another family's tokenizer, as tests/fixtures/qwen2-tiny does).
"""
import json
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

args = [a for a in sys.argv[1:] if a != "--tokenizer-json"]
folder = args[0]
kcirc = args[1] if len(args) > 1 else "target/release/kcirc"
prompts = ["The capital city of France is", "Paris 12 ünïcode and more"]
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
if "--tokenizer-json" in sys.argv:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=f"{folder}/tokenizer.json")
else:
    tok = AutoTokenizer.from_pretrained(folder)
worst = 0.0
for p in prompts:
    ids = tok(p, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0, -1]
    out = subprocess.run([kcirc, "predict", "--quiet", "--model", folder, "--prompt", p, "--top-k", "5"],
                         check=True, capture_output=True, text=True).stdout
    pred = json.loads(out)
    assert pred["tokens"] == ids[0].tolist(), (pred["tokens"], ids[0].tolist())
    for c in pred["top"]:
        worst = max(worst, abs(c["logit"] - logits[c["id"]].item()))
    top = torch.topk(logits, 5).indices.tolist()
    assert top == [c["id"] for c in pred["top"]], (top, pred["top"])
print(f"{folder}: transformers loads it; token ids and top-5 equal; max |logit diff| over the top-5 {worst:.2e}")
assert worst < 1e-4
