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

import jax
import numpy as np

from jaxadapt.config import ModelConfig
from jaxadapt.config.model import check_dtype
from jaxadapt.errors import UserError
from jaxadapt.io.hf import read_config, resolve
from jaxadapt.io.rewrite import checkpoint_dtype, read_vocab_matrices, rewrite
from jaxadapt.lep.maps import METHODS, estimate
from jaxadapt.vocab.adapt import pad_rows, padded_size
from jaxadapt.vocab.tokdir import TokenizerDir, read_tokenizer
from jaxadapt.vocab.transform import build_transform

ARCH_KEYS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "head_dim", "tie_word_embeddings")
PROPAGATION_FILE = "propagation.json"


@dataclass
class Donor:
    """The donor's vocabulary and trained matrices; `lora` the adapters of a LoRA run, by HF tensor name."""

    name: str
    config: ModelConfig
    tokenizer: TokenizerDir
    embed: np.ndarray  # [rows, d]
    head: np.ndarray | None  # [rows, d] (rows of the LM head), None when tied
    lora: dict[str, np.ndarray] | None = None  # HF weight name -> the update to add, [out, in] float32


def load_donor(path) -> Donor:
    """An HF dir (only its vocabulary matrices are read), or a jaxadapt run dir (its latest checkpoint) or one of its
    checkpoints, LoRA updates kept for merging."""
    from jaxadapt.modelref import run_of

    run = run_of(path)
    if run is not None:
        from jaxadapt.train.export import restore_model
        from jaxadapt.train.lora import has_lora

        model, cfg, _, _ = restore_model(*run)
        tok = read_tokenizer(cfg.model.tokenizer or cfg.model.path)
        embed = np.asarray(model.model.embed_tokens.embedding[...], np.float32)
        head = None if model.lm_head is None else np.asarray(model.lm_head.kernel[...], np.float32).T
        return Donor(str(path), model.config, tok, embed, head,
                     lora=_lora_updates(model) if has_lora(model) else None)
    d = resolve(str(path))
    return Donor(str(d), read_config(d), read_tokenizer(d), *read_vocab_matrices(d))


def _lora_updates(model) -> dict[str, np.ndarray]:
    """lora_delta^T per adapted layer and module ([out, in], as HF stores it), named as the HF weight it adds to."""
    from jaxadapt.params import LORA_SPECS
    from jaxadapt.train.lora import lora_delta, target_modules

    out = {}
    for name, lin in target_modules(model, tuple(LORA_SPECS)).items():
        if lin.lora_a is None:
            continue
        delta = np.asarray(jax.device_get(lora_delta(lin)))
        for i in np.flatnonzero(np.asarray(lin.lora_scale[...])):
            out[LORA_SPECS[name].hf_name(i)] = delta[i].T
    return out


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
              lora_scale: float = 1.0, dtype: str | None = None) -> Path:
    """Write I' to `out` in `dtype` (default: the target's own). Only the vocabulary matrices of B, B' and I are
    held in memory; the target's other tensors stream through one at a time (with a LoRA donor's update added)."""
    if method not in METHODS:
        raise UserError(f"--method {method!r}: expected one of {METHODS}")
    if vocab not in ("extended", "replaced"):
        raise UserError(f"--vocab {vocab!r}: expected 'extended' or 'replaced'")
    if dtype is not None:
        check_dtype(dtype)
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
    b_embed, b_head = read_vocab_matrices(base)
    t_embed, t_head = read_vocab_matrices(target)
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
    del b_embed, b_head, fit

    tokenizer, kept = output_tokenizer(don, target)
    rows = padded_size(max(len(tokenizer), new_embed.shape[0]))
    new_embed, new_head = pad_rows(new_embed, rows), None if new_head is None else pad_rows(new_head, rows)
    for tok, out_id in kept.items():  # the target's own chat markers keep their rows
        new_embed[out_id] = t_embed[target_tok.vocab[tok]]
        if new_head is not None:
            new_head[out_id] = t_head[target_tok.vocab[tok]]
    report["target_rows_kept"] = sorted(kept)
    del t_embed, t_head

    replace = {"model.embed_tokens.weight": lambda: new_embed}
    if new_head is not None:
        replace["lm_head.weight"] = lambda: new_head
    lora = don.lora or {}
    if don.lora is not None:
        report["lora_merged"] = sorted({n.split(".")[-2] for n in lora})
        report["lora_scale"] = lora_scale
    ids = {k: tokenizer.convert_tokens_to_ids(getattr(tokenizer, k[:-3])) if getattr(tokenizer, k[:-3], None)
           else None for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    out_cfg = target_cfg.replace(vocab_size=rows, **ids)
    return rewrite(target, out, out_cfg, dtype or checkpoint_dtype(target), replace=replace,
                   edit=(lambda name, w: w + lora_scale * lora[name] if name in lora else w) if lora else None,
                   tokenizer=tokenizer, extra_files={PROPAGATION_FILE: json.dumps(report, indent=2)})


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
