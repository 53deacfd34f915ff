"""`propagate(base, donor, target, method, out)`: the target (instruct) model with the donor's vocabulary.

Roles: base B (the pretrained model, old vocabulary), donor B' (B with a new vocabulary whose embeddings were
trained), target I (an instruct model tuned from B, old vocabulary). Output I': I's body, the donor's vocabulary,
input embeddings E_donor · D_in and (untied) LM head O_donor · D_out, each D estimated by `maps.estimate`.
Tokens that the target's tokenizer adds (chat markers) keep the target's own rows; the output tokenizer is the
donor's vocabulary plus the target's added tokens and chat template. A jaxadapt run dir as donor contributes its
trained embeddings, and its LoRA adapters are merged on top of the target's weights (times `lora_scale`).
Everything is checked before anything is written; the output dir appears complete or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxadapt.config import ModelConfig
from jaxadapt.errors import UserError
from jaxadapt import fs
from jaxadapt.io.hf import load_pretrained, read_config, resolve, save_pretrained
from jaxadapt.lep.maps import METHODS, estimate
from jaxadapt.model import LlamaForCausalLM
from jaxadapt.vocab.tokdir import TokenizerDir, read_tokenizer
from jaxadapt.vocab.transform import build_transform

ARCH_KEYS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "head_dim", "tie_word_embeddings")
PROPAGATION_FILE = "propagation.json"


@dataclass
class Donor:
    """The donor's vocabulary and trained matrices; `lora` holds the run's model when it carries adapters."""

    name: str
    config: ModelConfig
    tokenizer: TokenizerDir
    embed: np.ndarray  # [rows, d]
    head: np.ndarray | None  # [rows, d] (rows of the LM head), None when tied
    lora: LlamaForCausalLM | None = None


def load_donor(path) -> Donor:
    """An HF dir, or a jaxadapt run dir (its latest checkpoint; LoRA factors kept for merging)."""
    p = fs.path(path)
    if (p / "checkpoints").is_dir() and (p / "config.yaml").exists():
        from jaxadapt.train.export import restore_model
        from jaxadapt.train.lora import has_lora

        model, cfg, _, _ = restore_model(p)
        tok = read_tokenizer(cfg.model.tokenizer or cfg.model.path)
        return Donor(str(p), model.config, tok, *_matrices(model), lora=model if has_lora(model) else None)
    d = resolve(str(p))
    model = load_pretrained(d, dtype="float32")
    return Donor(str(d), model.config, read_tokenizer(d), *_matrices(model))


def _matrices(model: LlamaForCausalLM) -> tuple[np.ndarray, np.ndarray | None]:
    embed = np.asarray(model.model.embed_tokens.embedding[...], np.float32)
    head = None if model.lm_head is None else np.asarray(model.lm_head.kernel[...], np.float32).T
    return embed, head


def check_compatible(base: Path, base_cfg: ModelConfig, donor: Donor, target: Path, target_cfg: ModelConfig,
                     base_tok: TokenizerDir, target_tok: TokenizerDir, vocab: str) -> None:
    for name, cfg in ((donor.name, donor.config), (str(target), target_cfg)):
        diff = [f"{k} ({getattr(cfg, k)} vs {getattr(base_cfg, k)})" for k in ARCH_KEYS
                if getattr(cfg, k) != getattr(base_cfg, k)]
        if diff:
            raise UserError(f"{name} and the base {base} differ in {', '.join(diff)}: propagation needs one "
                            "architecture")
    if target_cfg.vocab_size != base_cfg.vocab_size or any(
            target_tok.vocab.get(t) != i for t, i in base_tok.vocab.items()):
        raise UserError(f"the target {target} and the base {base} have different vocabularies: the target must be "
                        "tuned from the base without changing its tokens")
    if vocab == "extended" and donor.tokenizer.tokens[:base_tok.size] != base_tok.tokens:
        raise UserError(f"the donor {donor.name}'s vocabulary does not start with the base {base}'s tokens; for a "
                        "replaced vocabulary pass --vocab replaced")


def propagate(base, donor, target, method: str = "conversion", out=None, *, vocab: str = "extended",
              lora_scale: float = 1.0) -> Path:
    if method not in METHODS:
        raise UserError(f"--method {method!r}: expected one of {METHODS}")
    if vocab not in ("extended", "replaced"):
        raise UserError(f"--vocab {vocab!r}: expected 'extended' or 'replaced'")
    base, target = resolve(base), resolve(target)
    base_cfg, target_cfg = read_config(base), read_config(target)
    base_tok, target_tok = read_tokenizer(base), read_tokenizer(target)
    don = load_donor(donor)
    check_compatible(base, base_cfg, don, target, target_cfg, base_tok, target_tok, vocab)

    transform = build_transform(base_tok, don.tokenizer, "mean")
    common = np.unique(transform.copy_from[transform.copy_from >= 0])
    if method == "overlap" and len(common) < base_cfg.hidden_size:
        raise UserError(f"overlap: only {len(common)} tokens are shared by {base} and {don.name}, fewer than the "
                        f"hidden size {base_cfg.hidden_size}; the map is underdetermined (use conversion)")
    base_model = load_pretrained(base, dtype="float32")
    model = load_pretrained(target, dtype="float32")
    b_embed, b_head = _matrices(base_model)
    t_embed, t_head = _matrices(model)
    del base_model
    n_old = base_tok.size
    report = {"method": method, "vocab": vocab, "base": str(base), "donor": don.name, "target": str(target)}

    fit = estimate(method, b_embed[:n_old], t_embed[:n_old], common=common, transform=transform)
    new_embed = (don.embed.astype(np.float64) @ fit.matrix).astype(np.float32)
    report["embed_tokens"] = {"residual": fit.residual, "rows": fit.rows}
    new_head = None
    if not target_cfg.tie_word_embeddings:
        fit_out = estimate(method, b_head[:n_old], t_head[:n_old], common=common, transform=transform)
        new_head = (don.head.astype(np.float64) @ fit_out.matrix).astype(np.float32)
        report["lm_head"] = {"residual": fit_out.residual, "rows": fit_out.rows}

    tokenizer, kept = output_tokenizer(don, target)
    rows = max(len(tokenizer), new_embed.shape[0])
    rows = -(-rows // 128) * 128
    new_embed, new_head = _pad(new_embed, rows), None if new_head is None else _pad(new_head, rows)
    for tok, out_id in kept.items():  # the target's own chat markers keep their rows
        new_embed[out_id] = t_embed[target_tok.vocab[tok]]
        if new_head is not None:
            new_head[out_id] = t_head[target_tok.vocab[tok]]
    report["target_rows_kept"] = sorted(kept)

    _set_vocab(model, new_embed, new_head, tokenizer)
    if don.lora is not None:
        report["lora_merged"] = _merge_lora_onto(model, don.lora, lora_scale)
        report["lora_scale"] = lora_scale
    return save_pretrained(model, out, tokenizer=tokenizer,
                           extra_files={PROPAGATION_FILE: json.dumps(report, indent=2)})


def output_tokenizer(donor: Donor, target: Path):
    """The donor's vocabulary + the target's added tokens + the target's chat template and special tokens.

    Returns (transformers tokenizer, {target added token: its id in the output})."""
    from transformers import AutoTokenizer

    src = donor.tokenizer.source
    tok = AutoTokenizer.from_pretrained(str(src))
    inst = AutoTokenizer.from_pretrained(str(target))
    added = [t for t in inst.get_added_vocab() if t not in tok.get_vocab()]
    if added:
        tok.add_special_tokens({"additional_special_tokens": added}, replace_extra_special_tokens=False)
    tok.chat_template = inst.chat_template
    for role in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = getattr(inst, role, None)
        if value is not None:
            setattr(tok, role, value)
    vocab = tok.get_vocab()
    kept = {t: vocab[t] for t in inst.get_added_vocab() if t in vocab}
    return tok, kept


def _pad(m: np.ndarray, rows: int) -> np.ndarray:
    if m.shape[0] >= rows:
        return m[:rows].copy()
    return np.concatenate([m, np.broadcast_to(m.mean(axis=0), (rows - m.shape[0], m.shape[1]))]).astype(m.dtype)


def _set_vocab(model: LlamaForCausalLM, embed: np.ndarray, head: np.ndarray | None, tokenizer) -> None:
    model.model.embed_tokens.embedding.set_value(jnp.asarray(embed))
    if head is not None:
        model.lm_head.kernel.set_value(jnp.asarray(head.T))
    ids = {k: tokenizer.convert_tokens_to_ids(getattr(tokenizer, k.replace("_id", ""))) if getattr(
        tokenizer, k.replace("_id", ""), None) else None for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    model.config = model.model.cfg = model.config.replace(vocab_size=embed.shape[0], **ids)


def _merge_lora_onto(model: LlamaForCausalLM, donor: LlamaForCausalLM, scale: float) -> list[str]:
    """kernel += scale * lora_scale * A @ B with the donor's factors, module by module; returns the modules."""
    from jaxadapt.train.config import LORA_TARGETS
    from jaxadapt.train.lora import target_modules

    merged = []
    mine = target_modules(model, LORA_TARGETS)
    for name, lin in target_modules(donor, tuple(mine)).items():
        if lin.lora_a is None:
            continue
        a, b = np.asarray(lin.lora_a[...], np.float32), np.asarray(lin.lora_b[...], np.float32)
        s = np.asarray(lin.lora_scale[...], np.float32)[:, None, None] * scale
        kernel = mine[name].kernel
        kernel.set_value(kernel[...] + jnp.asarray(np.einsum("lir,lro->lio", a, b) * s))
        merged.append(name)
    return merged
