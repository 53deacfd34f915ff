"""Put a new vocabulary into a base's pipeline: the model's tokens and merges change, ids of added tokens may move,
and everything that refers to a special token by id (the post-processor that adds BOS/EOS) follows."""

from __future__ import annotations

from jaxadapt.vocab.surface import components
from jaxadapt.vocab.tokdir import TokenizerDir, TokenizerError


def with_vocab(base: TokenizerDir, model_vocab: dict[str, int], merges: list[tuple[str, str]],
               added_ids: dict[str, int]) -> TokenizerDir:
    """base's pipeline and model settings with a new BPE vocabulary; added tokens keep their flags, get new ids."""
    missing = [t["content"] for t in base.added if t["content"] not in added_ids]
    if missing:
        raise RuntimeError(f"added tokens without an id in the new vocabulary: {missing[:5]}")
    spec = base.copy_spec()
    added = sorted(({**t, "id": added_ids[t["content"]]} for t in base.added), key=lambda t: t["id"])
    spec["added_tokens"] = added
    # Added tokens go into the model vocabulary too: see extend.py on how the tokenizers library numbers them.
    spec["model"]["vocab"] = {**model_vocab, **{t["content"]: t["id"] for t in added}}
    spec["model"]["merges"] = [list(m) for m in merges]
    unk = spec["model"].get("unk_token")
    if unk is not None and unk not in spec["model"]["vocab"]:
        raise TokenizerError(f"{base.source}: the unknown token {unk!r} must stay in the vocabulary")
    ids = spec["model"]["vocab"]
    for c in components(spec.get("post_processor")):
        for key in ("sep", "cls"):  # Bert/Roberta processors: [token, id]
            if isinstance(c.get(key), list):
                c[key] = [c[key][0], ids[c[key][0]]]
        for entry in (c.get("special_tokens") or {}).values():  # TemplateProcessing
            entry["ids"] = [ids[t] for t in entry["tokens"]]
    return TokenizerDir(spec, base.source)
