"""Train a target-language tokenizer from scratch in one of the three styles the adapted model families use.

- bpe: byte-level BPE (Llama-3, SmolLM2, Qwen2): every byte is a token, so nothing is ever unknown.
- spm-bpe: SentencePiece-style BPE (Llama-2, Mistral): `▁` marks a space, a BOS is added, characters outside the
  learned alphabet fall back to `<0xNN>` byte tokens.
- unigram: SentencePiece-style Unigram (LEP's "Unigram") with the same pipeline and byte fallback.
Digits are split into single tokens unless asked otherwise (LEP, Llama-2).
"""

from __future__ import annotations

from jaxadapt.errors import UserError
from jaxadapt.vocab.fresh import alphabet, train_bpe, train_unigram
from jaxadapt.vocab.surface import BYTE_LEVEL, METASPACE, SPACE
from jaxadapt.vocab.tokdir import TokenizerDir
from jaxadapt.vocab.words import word_counts

KINDS = ("bpe", "spm-bpe", "unigram")
DEFAULT_SPECIAL = {"bpe": ["<|endoftext|>"], "spm-bpe": ["<unk>", "<s>", "</s>"], "unigram": ["<unk>", "<s>", "</s>"]}
ROLES = {"<unk>": "unk_token", "<s>": "bos_token", "</s>": "eos_token", "<|endoftext|>": "eos_token"}
BYTES = [f"<0x{b:02X}>" for b in range(256)]


def train(texts: list[str], vocab_size: int, kind: str = "bpe", split_digits: bool = True,
          special_tokens: list[str] | None = None) -> tuple[TokenizerDir, dict]:
    """(the tokenizer, its tokenizer_config.json) with at most vocab_size tokens, special tokens first."""
    if kind not in KINDS:
        raise UserError(f"--kind {kind!r}: expected one of {KINDS}")
    special = list(dict.fromkeys(special_tokens if special_tokens is not None else DEFAULT_SPECIAL[kind]))
    spm = kind != "bpe"
    if spm and "<unk>" not in special:
        special.insert(0, "<unk>")  # byte fallback still needs an unknown token for the model to be valid
    skeleton = TokenizerDir(_pipeline(kind, split_digits, special), None)
    words = word_counts(skeleton, texts)
    chars = alphabet(words, BYTE_LEVEL if kind == "bpe" else METASPACE)
    floor = len(special) + len(chars) + (256 if spm else 0)
    if vocab_size < floor:
        raise UserError(f"--vocab-size {vocab_size} is below the alphabet: {len(special)} special tokens, "
                        f"{len(chars)} characters" + (" and 256 byte tokens" if spm else "") + f" need {floor}")
    fixed = special + (BYTES if spm else [])
    ids = {t: i for i, t in enumerate(fixed)}
    spec = skeleton.copy_spec()
    if kind == "unigram":
        pieces = train_unigram(words, vocab_size - len(BYTES), "<unk>", special)
        low = min(score for _, score in pieces[len(special):]) - 10.0
        learned = [p for p in pieces if p[0] not in ids]
        vocab = [[t, 0.0] for t in special] + [[t, low] for t in BYTES] + [list(p) for p in learned]
        spec["model"] = {"type": "Unigram", "unk_id": ids["<unk>"], "vocab": vocab, "byte_fallback": True}
    else:
        learned, merges = train_bpe(words, vocab_size - len(fixed), chars)
        vocab = dict(ids)
        for tok, _ in sorted(learned.items(), key=lambda kv: kv[1]):
            vocab.setdefault(tok, len(vocab))
        spec["model"].update(vocab=vocab, merges=[list(m) for m in merges])
    spec["added_tokens"] = [{"id": ids[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True} for t in special]
    config = {"tokenizer_class": "TokenizersBackend", "clean_up_tokenization_spaces": False,
              **{ROLES[t]: t for t in special if t in ROLES}}
    return TokenizerDir(spec, None), config


def _pipeline(kind: str, split_digits: bool, special: list[str]) -> dict:
    digits = [{"type": "Digits", "individual_digits": True}] if split_digits else []
    if kind == "bpe":
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        return {"version": "1.0", "added_tokens": [], "normalizer": None, "post_processor": None,
                "pre_tokenizer": {"type": "Sequence", "pretokenizers": digits + [byte_level]},
                "decoder": {**byte_level},
                "model": {"type": "BPE", "vocab": {}, "merges": [], "byte_fallback": False, "fuse_unk": False,
                          "unk_token": None, "dropout": None, "continuing_subword_prefix": None,
                          "end_of_word_suffix": None, "ignore_merges": False}}
    metaspace = {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "first", "split": True}
    bos = special.index("<s>") if "<s>" in special else None
    post = None if bos is None else {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [bos], "tokens": ["<s>"]}}}
    decoder = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    return {"version": "1.0", "added_tokens": [], "normalizer": None, "post_processor": post,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [metaspace] + digits}, "decoder": decoder,
            "model": {"type": "BPE", "vocab": {"<unk>": 0}, "merges": [], "byte_fallback": True, "fuse_unk": True,
                      "unk_token": "<unk>", "dropout": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "ignore_merges": False}}
