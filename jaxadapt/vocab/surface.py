"""What a token stands for as text, and how a tokenizer splits that text in the middle of a sentence.

Tokens are stored in a pipeline-specific alphabet: byte-level BPE (GPT-2, Llama-3, SmolLM2, Qwen2) maps every byte to
a printable character (a space is `Ġ`); SentencePiece-style tokenizers (Llama-2, Mistral) write a space as `▁` and
bytes without a character token as `<0xNN>`. Comparing or re-tokenising tokens across tokenizers needs the bytes
behind them, and "mid-sentence" tokenisation: no prefix space or `▁` prepended and no BOS added, as a piece of a
longer text is seen (METHODS.md §2).
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache

from tokenizers import Tokenizer

from jaxadapt.vocab.tokdir import BYTE_TOKEN, TokenizerDir, TokenizerError

BYTE_LEVEL, METASPACE, PLAIN = "byte_level", "metaspace", "plain"
SPACE = "▁"


@lru_cache(maxsize=1)
def byte_to_char() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the alphabet of byte-level BPE)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


@lru_cache(maxsize=1)
def char_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_char().items()}


def components(node) -> list[dict]:
    """A pipeline component and everything nested in it (Sequence members), flattened."""
    if not isinstance(node, dict):
        return []
    out = [node]
    for key in ("pretokenizers", "normalizers", "decoders", "processors"):
        for child in node.get(key) or []:
            out += components(child)
    return out


def style(spec: dict) -> str:
    """How spec's tokens spell text: BYTE_LEVEL, METASPACE (▁ for a space) or PLAIN (as is)."""
    parts = components(spec.get("pre_tokenizer")) + components(spec.get("decoder"))
    if any(c.get("type") == "ByteLevel" for c in parts):
        return BYTE_LEVEL
    parts += components(spec.get("normalizer"))
    if any(c.get("type") == "Metaspace" for c in parts) or any(
            c.get("type") == "Replace" and SPACE in json.dumps(c, ensure_ascii=False) for c in parts):
        return METASPACE
    return PLAIN


def token_bytes(token: str, how: str) -> bytes:
    """The UTF-8 bytes a token stands for (a byte-level token may be part of a character)."""
    if how == BYTE_LEVEL:
        table = char_to_byte()
        if all(c in table for c in token):
            return bytes(table[c] for c in token)
        return token.encode()
    if how == METASPACE:
        if BYTE_TOKEN.fullmatch(token):
            return bytes([int(token[3:5], 16)])
        return token.replace(SPACE, " ").encode()
    return token.encode()


def spell(data: bytes, how: str) -> str:
    """The inverse of token_bytes for text that is whole characters (byte-level: any bytes)."""
    if how == BYTE_LEVEL:
        table = byte_to_char()
        return "".join(table[b] for b in data)
    text = data.decode()
    return text.replace(" ", SPACE) if how == METASPACE else text


def midsentence(spec: dict) -> Tokenizer:
    """spec's tokenizer with prefix insertion (a leading space or ▁) and the post-processor (BOS/EOS) turned off."""
    s = copy.deepcopy(spec)
    s["post_processor"] = None
    s["normalizer"] = _drop_prepend(s.get("normalizer"))
    for c in components(s.get("pre_tokenizer")):
        if c.get("type") == "Metaspace":
            c["prepend_scheme"] = "never"
            c.pop("add_prefix_space", None)
        if c.get("type") == "ByteLevel":
            c["add_prefix_space"] = False
    return Tokenizer.from_str(json.dumps(s))


def _drop_prepend(node):
    if not isinstance(node, dict):
        return node
    if node.get("type") == "Prepend":
        return None
    if node.get("type") == "Sequence":
        kept = [n for n in (_drop_prepend(c) for c in node["normalizers"]) if n is not None]
        return {**node, "normalizers": kept} if kept else None
    return node


class Decomposer:
    """Splits byte strings into a tokenizer's ids the way it would inside a sentence."""

    def __init__(self, tok: TokenizerDir):
        self.tok, self.how = tok, style(tok.spec)
        self.mid = midsentence(tok.spec)
        self.byte_fallback = bool(tok.model.get("byte_fallback"))

    def __call__(self, data: bytes) -> list[int]:
        try:
            return self.mid.encode(data.decode(), add_special_tokens=False).ids
        except UnicodeDecodeError:
            return self._partial(data)

    def _partial(self, data: bytes) -> list[int]:
        """Bytes that are not whole UTF-8 characters (a byte-level token may end inside one)."""
        if self.how == BYTE_LEVEL:
            return [t.id for t in self.mid.model.tokenize(spell(data, BYTE_LEVEL))]
        ids, i = [], 0
        while i < len(data):
            for j in range(len(data), i, -1):  # the longest decodable run from i, else one raw byte
                try:
                    text = data[i:j].decode()
                except UnicodeDecodeError:
                    continue
                ids += self.mid.encode(text, add_special_tokens=False).ids
                i = j
                break
            else:
                byte_id = self.tok.vocab.get(f"<0x{data[i]:02X}>") if self.byte_fallback else None
                ids += [] if byte_id is None else [byte_id]
                i += 1
        return ids


def require_bpe(tok: TokenizerDir, what: str) -> str:
    """The style of a BPE tokenizer that jaxadapt can extend; anything else is a clear error."""
    name = tok.source or "tokenizer"
    if tok.model.get("type") != "BPE":
        raise TokenizerError(f"{name}: {what} needs a BPE tokenizer, this one is {tok.model.get('type')}")
    if tok.model.get("continuing_subword_prefix") or tok.model.get("end_of_word_suffix"):
        raise TokenizerError(f"{name}: {what} does not support BPE with subword prefixes/suffixes")
    how = style(tok.spec)
    if how == PLAIN:
        raise TokenizerError(f"{name}: {what} needs a byte-level or SentencePiece-style (▁) tokenizer")
    return how
