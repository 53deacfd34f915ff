"""Text generation with a KV cache: one compiled prefill, then one compiled decode loop (no Python per token).

Prompts are left-padded so that every row's next token lands in the same cache slot; prompt lengths are rounded up
to a multiple of PROMPT_BUCKET so that prompts of similar length reuse the compiled functions.
"""

from __future__ import annotations

import json
import os
import weakref
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxadapt import cpu_decode
from jaxadapt.errors import UserError
from jaxadapt.model import decode_kernels, softcap

PROMPT_BUCKET = 32


def eos_ids_of(cfg, model_dir: Path | None = None) -> tuple[int, ...]:
    """Every end-of-sequence id of the model config and (if the dir has one) its generation_config.json."""
    ids = []
    sources = [cfg.eos_token_id]
    if model_dir is not None and (Path(model_dir) / "generation_config.json").exists():
        sources.append(json.loads((Path(model_dir) / "generation_config.json").read_text()).get("eos_token_id"))
    for value in sources:
        for i in value if isinstance(value, list) else [value]:
            if i is not None and i not in ids:
                ids.append(int(i))
    return tuple(ids)


def default_eos_ids(model, tokenizer, model_dir: Path | None = None) -> tuple[int, ...]:
    """eos_ids_of the model (and its dir) plus the tokenizer's EOS: where generation stops unless told otherwise."""
    ids, tid = eos_ids_of(model.config, model_dir), tokenizer.eos_token_id
    return ids if tid is None or tid in ids else (*ids, tid)


def sample_next(logits, key, temperature: float, top_k: int, top_p: float):
    """Next token ids [batch] from float32 logits [batch, vocab]: argmax when temperature == 0, else a sample from
    the temperature-scaled distribution restricted to the top_k tokens (0 = all) and the top_p nucleus."""
    if temperature == 0:  # argmax as the first index of the maximum (or of a NaN, as argmax): two plain reductions,
        top = jnp.max(logits, axis=-1, keepdims=True)  # half the time of XLA:CPU's argmax
        index = jnp.arange(logits.shape[-1], dtype=jnp.int32)
        return jnp.min(jnp.where((logits == top) | jnp.isnan(logits), index, logits.shape[-1]), axis=-1)
    logits = logits / temperature
    if top_k > 0:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        desc = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(desc, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs  # the most likely token always stays (mass_before = 0)
        cutoff = jnp.min(jnp.where(mass_before < top_p, desc, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def unstack_by_default(model) -> bool:
    """Whether decoding runs on a copy of the layer weights (decode_copy, LlamaModel.unstack_layers): on XLA:CPU,
    and only while that copy takes at most a quarter of the memory still free. The copy halves XLA:CPU's per-token
    weight traffic (README, Performance); on accelerators, where memory is the scarce resource and that copy was
    never shown to pay, the decode loop scans the stacked layers as training does."""
    if jax.default_backend() != "cpu":
        return False
    layer_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model.model.layers)))
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return 4 * layer_bytes <= free


def uses_cpu_decode(model, unstack: bool) -> bool:
    """Whether the decode step runs jaxadapt.cpu_decode's matmul and attention: on the unstacked (CPU) path, with
    float32 or bfloat16 parameters computed in their own dtype, where the kernels could be built."""
    rt = model.runtime
    return (unstack and rt.param_dtype == rt.compute_dtype and rt.param_dtype in ("float32", "bfloat16")
            and cpu_decode.available())


def _pack_linear(w, narrow: bool):
    """A Linear kernel [in, out] in cpu_decode's panels (as bfloat16 when `narrow`) when `out` fills whole panels
    (so that the product needs no slicing), else as it is (Linear then multiplies it with XLA's dot)."""
    if w.shape[1] % cpu_decode.PANEL:
        return w
    return cpu_decode.pack(w.astype(jnp.bfloat16) if narrow else w)


@jax.jit
def _bfloat16_exact(model):
    """Whether every Linear kernel and the head hold only values that bfloat16 represents exactly (the low 16 bits of
    each float32 are 0), as a bfloat16 checkpoint loaded in float32 does."""
    _, state = nnx.split(model.model.layers)
    kernels = [x for path, x in jax.tree_util.tree_leaves_with_path(state) if jax.tree_util.DictKey("kernel") in path]
    low_bits = [jax.lax.bitcast_convert_type(w.astype(jnp.float32), jnp.uint32) & 0xFFFF
                for w in [*kernels, model.head()]]
    return jnp.all(jnp.stack([jnp.all(b == 0) for b in low_bits]))


@partial(jax.jit, static_argnames=("kernel", "narrow"))
def _decode_copy(model, kernel: bool, narrow: bool = False):
    """(layers, head): each layer's weights on their own (LlamaModel.unstack_layers; Linear kernels packed for
    cpu_decode when `kernel`) and, for cpu_decode, the packed [hidden, vocab] head (None otherwise). `narrow`: the
    packed float32 weights stored as bfloat16 (see decode_copy)."""
    if not kernel:
        return model.model.unstack_layers(), None
    head = model.head()
    return (model.model.unstack_layers(pack=partial(_pack_linear, narrow=narrow)),
            cpu_decode.pack(head.astype(jnp.bfloat16) if narrow else head))


_COPY: dict = {}  # the last model's decode copy, see decode_copy


def decode_copy(model, kernel: bool):
    """_decode_copy of the model, made once per set of weights: copying (and packing) the layers costs XLA:CPU as
    much as decoding a good share of a generation. The copy of the last model used is kept while every one of its
    parameter arrays is alive and unchanged (held by weak reference: updating or dropping the model frees it).

    A float32 model whose Linear kernels and head are all exact bfloat16 values (a bfloat16 checkpoint loaded in
    float32, as most hub checkpoints are) gets them packed as bfloat16: cpu_decode reads half the bytes per token
    and computes the same float32 products."""
    leaves = jax.tree.leaves(nnx.state(model))
    hit = _COPY.get("refs")
    if hit is not None and _COPY["kernel"] == kernel and len(hit) == len(leaves) \
            and all(r() is x for r, x in zip(hit, leaves)):
        return _COPY["value"]
    _COPY.clear()
    token = object()
    narrow = kernel and model.runtime.param_dtype == "float32" and bool(_bfloat16_exact(model))
    _COPY.update(refs=[weakref.ref(x) for x in leaves], kernel=kernel, value=_decode_copy(model, kernel, narrow),
                 token=token)
    weakref.finalize(leaves[0], lambda: _COPY.get("token") is token and _COPY.clear())
    return _COPY["value"]


@partial(jax.jit, static_argnames=("max_new_tokens", "temperature", "top_k", "top_p", "kernel"))
def _generate(model, copy, ids, mask, key, eos, *, max_new_tokens, temperature, top_k, top_p, kernel):
    """-> tokens [batch, max_new_tokens] (after a row's EOS: repeats of that EOS). Stops once every row is done.
    `copy`: None (scan the stacked layers) or decode_copy's (layers, head); `kernel`: decode with
    jaxadapt.cpu_decode on it (see uses_cpu_decode)."""
    b, p = ids.shape
    sample = partial(sample_next, temperature=temperature, top_k=top_k, top_p=top_p)
    h, cache = model.extend(ids, model.init_cache(b, p + max_new_tokens), mask)
    layers, head = copy if copy is not None else (None, None)
    tok = sample(model.logits(h[:, -1]), jax.random.fold_in(key, 0))

    def step(tok, cache):
        """Logits of the next token and the cache after `tok` [batch]."""
        if not kernel:
            h, cache = model.extend(tok[:, None], cache, layers=layers)
            return model.logits(h[:, -1]), cache
        with decode_kernels(cpu_decode):
            h, cache = model.extend(tok[:, None], cache, layers=layers)
        logits = cpu_decode.matmul(h[:, -1], head)[:, :model.config.vocab_size].astype(jnp.float32)
        return softcap(logits, model.config.final_logit_softcapping), cache

    out = jnp.zeros((b, max_new_tokens), jnp.int32).at[:, 0].set(tok)
    done = jnp.isin(tok, eos)

    def cond(carry):
        i, _, _, _, done = carry
        return (i < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        i, out, cache, tok, done = carry
        logits, cache = step(tok, cache)
        new = sample(logits, jax.random.fold_in(key, i))
        tok = jnp.where(done, tok, new)
        return i + 1, out.at[:, i].set(tok), cache, tok, done | jnp.isin(tok, eos)

    _, out, _, _, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), out, cache, tok, done))
    return out


def generate_ids(model, prompts: list[list[int]], *, eos_ids=(), max_new_tokens: int = 64, temperature: float = 0.0,
                 top_p: float = 1.0, top_k: int = 0, seed: int = 0, unstack: bool | None = None) -> list[list[int]]:
    """The new token ids of each prompt (token ids) in one batch, up to and excluding the first EOS. `unstack`
    (default: unstack_by_default) trades a second copy of the layer weights for faster decoding."""
    if not prompts:
        raise UserError("prompts=[]; expected at least one prompt")
    if any(len(p) == 0 for p in prompts):
        raise UserError(f"prompt {[len(p) for p in prompts].index(0)} has no tokens; expected at least one")
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens={max_new_tokens}; expected at least 1")
    if temperature < 0:
        raise UserError(f"temperature={temperature}; expected >= 0 (0 = greedy)")
    if not 0.0 < top_p <= 1.0:
        raise UserError(f"top_p={top_p}; expected a value in (0, 1]")
    if top_k < 0:
        raise UserError(f"top_k={top_k}; expected >= 0 (0 = no top-k filter)")
    width = -(-max(len(p) for p in prompts) // PROMPT_BUCKET) * PROMPT_BUCKET
    ids = np.zeros((len(prompts), width), np.int32)
    mask = np.zeros((len(prompts), width), bool)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):], mask[row, width - len(p):] = p, True
    eos = jnp.asarray(list(eos_ids) or [-1], jnp.int32)
    unstack = unstack_by_default(model) if unstack is None else bool(unstack)
    kernel = uses_cpu_decode(model, unstack)
    out = np.asarray(_generate(model, decode_copy(model, kernel) if unstack else None, jnp.asarray(ids),
                               jnp.asarray(mask), jax.random.key(seed), eos, max_new_tokens=max_new_tokens,
                               temperature=float(temperature), top_k=int(top_k), top_p=float(top_p), kernel=kernel))
    result = []
    for row in out.tolist():
        ends = [i for i, t in enumerate(row) if t in eos_ids]
        result.append(row[:ends[0]] if ends else row)
    return result


def generate(model, tokenizer, prompts: list[str], *, chat: bool = False, max_new_tokens: int = 64,
             temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: int = 0, stop=(),
             batch_size: int | None = None, eos_ids=None) -> list[str]:
    """Continue each prompt; `chat` wraps it as a user turn with the tokenizer's chat template first.

    Generation ends at any EOS id (default: the model config's and the tokenizer's) or at max_new_tokens; the text
    is then cut before the first stop string. batch_size (default: all prompts at once) bounds memory.
    """
    new = generate_tokens(model, tokenizer, prompts, chat=chat, max_new_tokens=max_new_tokens,
                          temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, batch_size=batch_size,
                          eos_ids=eos_ids)
    return [_cut_at_stop(tokenizer.decode(ids, skip_special_tokens=True), stop) for ids in new]


def generate_tokens(model, tokenizer, prompts: list[str], *, chat: bool = False, max_new_tokens: int = 64,
                    temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: int = 0,
                    batch_size: int | None = None, eos_ids=None) -> list[list[int]]:
    """The new token ids of each prompt, as `generate` makes them (no stop strings): for metrics on ids (%Gen)."""
    if not prompts:
        raise UserError("prompts=[]; expected at least one prompt")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"batch_size={batch_size}; expected at least 1")
    if eos_ids is None:
        eos_ids = default_eos_ids(model, tokenizer)
    token_ids = [_encode(tokenizer, p, chat) for p in prompts]
    batch_size = batch_size or len(token_ids)
    return [ids for start in range(0, len(token_ids), batch_size)
            for ids in generate_ids(model, token_ids[start:start + batch_size], eos_ids=eos_ids,
                                    max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                                    seed=seed)]


def _encode(tokenizer, prompt: str, chat: bool) -> list[int]:
    if not chat:
        return tokenizer(prompt)["input_ids"]
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{tokenizer.name_or_path}: the tokenizer has no chat template; drop --chat")
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]  # the template already holds any BOS


def _cut_at_stop(text: str, stop) -> str:
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[:min(cuts)] if cuts else text


def load_for_generation(spec: str, mesh: str | None = None, dtype: str | None = None):
    """(model, tokenizer, eos ids) of any model reference (modelref.open_model; a run dir with LoRA applied)."""
    from jaxadapt.modelref import open_model

    opened = open_model(spec, mesh, dtype)
    return opened.model, opened.tokenizer, eos_ids_of(opened.model.config, opened.home)
