#!/usr/bin/env python3
"""Times the EAP-IG Python library (github.com/hannamw/EAP-IG, on TransformerLens) on the same random GPT-2-shaped
model, the same facts and the same edge set (all edges) as a kcirc run, for docs/performance.md's comparison.

    python scripts/bench_eap_ig_python.py MODEL_DIR CIRCUIT.json [--threads 2] [--steps 5]

MODEL_DIR: a folder `cargo run --release --example random_gpt2 -- MODEL_DIR small` wrote (config.json,
model.safetensors, tokenizer.json; random weights). CIRCUIT.json: the circuit file of the kcirc run being
compared (`kcirc discover --model MODEL_DIR ... --out CIRCUIT.json`): its discovery examples are the facts used
here, all in one batch as kcirc runs them. The library is installed from a local copy of its repository
(`pip install /path/to/EAP-IG`), never vendored here.

What the library is asked for: `attribute(..., method='EAP-IG-inputs', ig_steps=STEPS)` over every edge of
`Graph.from_model`. Its own choices are kept (a BOS token prepended, IG points k/STEPS for k = 0..STEPS-1, a
corrupted run: the prompts of the batch rotated by one, the same token lengths); the metric is the mean target
logit at each prompt's last position (kcirc's `--metric logit`, which the README's kcirc command passes). The workload differs from kcirc's in
those details only: the same number of forward and backward passes over the same batch. Prints one JSON line.
"""
import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("circuit")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    t0 = time.time()
    import torch

    torch.set_num_threads(a.threads)
    torch.set_grad_enabled(True)
    from safetensors.torch import load_file
    from transformers import AutoTokenizer
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    import eap.attribute as attribute_module
    from eap.graph import Graph

    # The library allocates its score matrix with device='cuda' unconditionally: keep it on the CPU.
    class CpuTorch:
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def zeros(*args, device=None, **kw):
            return torch.zeros(*args, **kw)

    attribute_module.torch = CpuTorch()

    conf = json.load(open(os.path.join(a.model_dir, "config.json")))
    d, h, layers = conf["n_embd"], conf["n_head"], conf["n_layer"]
    tok = AutoTokenizer.from_pretrained(a.model_dir)  # GPT-2's tokenizer.json; TransformerLens reloads it by path
    cfg = HookedTransformerConfig(
        n_layers=layers,
        d_model=d,
        n_ctx=conf["n_positions"],
        d_head=d // h,
        n_heads=h,
        d_mlp=4 * d,
        d_vocab=conf["vocab_size"],
        act_fn="gelu_new",
        normalization_type="LN",
        eps=conf["layer_norm_epsilon"],
        positional_embedding_type="standard",
        default_prepend_bos=True,
        device="cpu",
    )
    model = HookedTransformer(cfg, tokenizer=tok)
    w = load_file(os.path.join(a.model_dir, "model.safetensors"))
    sd = model.state_dict()
    dh = d // h
    sd["embed.W_E"] = w["wte.weight"]
    sd["pos_embed.W_pos"] = w["wpe.weight"]
    for l in range(layers):
        p, b = f"h.{l}.", f"blocks.{l}."
        for ln_hf, ln_tl in (("ln_1", "ln1"), ("ln_2", "ln2")):
            sd[b + ln_tl + ".w"] = w[p + ln_hf + ".weight"]
            sd[b + ln_tl + ".b"] = w[p + ln_hf + ".bias"]
        qkv, qkv_b = w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"]  # [D, 3D] (x @ W), [3D]
        for i, m in enumerate("QKV"):
            sd[b + f"attn.W_{m}"] = qkv[:, i * d : (i + 1) * d].reshape(d, h, dh).permute(1, 0, 2).contiguous()
            sd[b + f"attn.b_{m}"] = qkv_b[i * d : (i + 1) * d].reshape(h, dh)
        sd[b + "attn.W_O"] = w[p + "attn.c_proj.weight"].reshape(h, dh, d)
        sd[b + "attn.b_O"] = w[p + "attn.c_proj.bias"]
        sd[b + "mlp.W_in"] = w[p + "mlp.c_fc.weight"]
        sd[b + "mlp.b_in"] = w[p + "mlp.c_fc.bias"]
        sd[b + "mlp.W_out"] = w[p + "mlp.c_proj.weight"]
        sd[b + "mlp.b_out"] = w[p + "mlp.c_proj.bias"]
    sd["ln_final.w"] = w["ln_f.weight"]
    sd["ln_final.b"] = w["ln_f.bias"]
    sd["unembed.W_U"] = w["wte.weight"].T.contiguous()  # tied
    sd["unembed.b_U"] = torch.zeros(conf["vocab_size"])
    model.load_state_dict(sd)
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    model.eval()

    facts = json.load(open(a.circuit))["examples"]
    clean = [f["template"].replace("{}", f["subject"]) for f in facts]
    corrupted = clean[1:] + clean[:1]
    labels = [tok.encode(" " + f["object"])[0] for f in facts]
    batch = [(clean, corrupted, torch.tensor(labels))]

    def metric(logits, clean_logits, input_lengths, label):
        rows = torch.arange(logits.shape[0])
        return logits[rows, input_lengths - 1, label].mean()

    graph = Graph.from_model(model)
    loaded = time.time()
    attribute_module.attribute(model, graph, batch, metric, method="EAP-IG-inputs", ig_steps=a.steps, quiet=True)
    done = time.time()
    scores = graph.scores.flatten()
    print(
        json.dumps(
            {
                "bench": "eap-ig-python",
                "edges": int(graph.real_edge_mask.sum().item()),
                "facts": len(clean),
                "steps": a.steps,
                "threads": a.threads,
                "load_s": round(loaded - t0, 2),
                "attribute_s": round(done - loaded, 2),
                "nonzero_scores": int((scores != 0).sum().item()),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
