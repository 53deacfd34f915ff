"""Helpers of the vocab tests (a module of its own: `conftest` is a name every test dir shares).

mistral_tokenizer_dir: a real SentencePiece-BPE tokenizer as tokenizer.json, Mistral-7B-v0.1's
(jaxadapt.assets.mistral_spm: the model file of the PyPI wheel `mistral-common`, 32000 pieces, byte fallback). We
parse the protobuf with transformers' bundled schema and write the tokenizer.json the HF hub carries for
Mistral-7B-v0.1: the legacy Prepend/Replace normaliser, merges ordered by piece score, BOS added by the
post-processor.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from jaxadapt.assets import mistral_spm
from jaxadapt.fs import cache_dir

# Text every tokenizer must round-trip: Latin, Cyrillic, emoji (ZWJ and flags), odd whitespace, ligatures, CJK.
MIXED = ("Het weer in Amsterdam: 12°C, regen.\n\tDe kaas — naïef café  Ölkanne ĳs\n"
         "Привет, мир! Съешь же ещё этих мягких французских булок 😀🇳🇱 👩‍💻  \n  a\u00a0b  ﬁ  漢字 ")


def mistral_tokenizer_dir() -> Path:
    dest = cache_dir("mistral-v1-tokenizer")
    if (dest / "tokenizer.json").exists():
        return dest
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        spec, config = _convert(mistral_spm().read_bytes())
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
        for name in ("tokenizer_config.json", "tokenizer.json"):  # tokenizer.json last: it marks completion
            os.replace(Path(tmp) / name, dest / name)
    return dest


def _convert(proto: bytes) -> tuple[dict, dict]:
    from transformers.tokenization_utils_base import generate_merges
    from transformers.utils import sentencepiece_model_pb2_new as pb

    m = pb.ModelProto()
    m.ParseFromString(proto)
    vocab = {p.piece: i for i, p in enumerate(m.pieces)}
    merges = generate_merges(vocab, {p.piece: p.score for p in m.pieces})
    special = [(i, p.piece) for i, p in enumerate(m.pieces) if p.type in (2, 3)]  # UNKNOWN, CONTROL
    spec = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, t in special],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [vocab["<s>"]], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [list(p) for p in merges]},
    }
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "add_bos_token": True, "add_eos_token": False, "legacy": True, "clean_up_tokenization_spaces": False,
              "chat_template": "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}"
                               "{{ '[INST] ' + m['content'] + ' [/INST]' }}{% else %}{{ m['content'] + eos_token }}"
                               "{% endif %}{% endfor %}"}
    return spec, config


def bits_per_byte(model, tokenizer, texts: list[str], start_id: int) -> float:
    """Total NLL of texts (each after one `start_id` token, so every text token is predicted) / (UTF-8 bytes * ln 2).

    All texts go in one padded batch: one compilation per token length, shared by models of the same vocabulary."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    encs = [[start_id] + tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    length = -(-max(map(len, encs)) // 64) * 64
    ids = np.zeros((len(encs), length), np.int32)
    mask = np.zeros((len(encs), length), bool)
    for i, e in enumerate(encs):
        ids[i, : len(e)], mask[i, : len(e)] = e, True
    logits = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask))[:, :-1]
    logp = jax.nn.log_softmax(logits, axis=-1)
    target = jnp.take_along_axis(logp, jnp.asarray(ids)[:, 1:, None], axis=-1)[..., 0]
    nll = -float((target * mask[:, 1:]).sum())
    return nll / (sum(len(t.encode()) for t in texts) * math.log(2))
