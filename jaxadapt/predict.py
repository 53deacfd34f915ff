"""`jaxadapt predict`: the quickest end-to-end check that a checkpoint loads and says something sensible."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from jaxadapt.errors import UserError
from jaxadapt.modelref import model_dir


def top_next_tokens(model_spec: str, text: str, k: int = 5) -> list[tuple[str, float]]:
    """The k most likely next tokens after `text` (decoded strings) with their softmax probabilities."""
    from jaxadapt.io.hf import load_pretrained, load_tokenizer

    if k < 1:
        raise UserError(f"top_k={k}; expected at least 1")
    d = model_dir(model_spec)
    tokenizer = load_tokenizer(d)
    ids = tokenizer(text)["input_ids"]
    if not ids:
        raise UserError(f"text={text!r} encodes to no tokens")
    model = load_pretrained(d)
    probs = np.asarray(jax.nn.softmax(model(jnp.asarray([ids]))[0, -1]))
    top = np.argsort(-probs, kind="stable")[:k]
    return [(tokenizer.decode([int(i)]), float(probs[i])) for i in top]
