"""KV-cached generation: greedy output equals transformers' token for token; cached logits equal the full forward."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import jaxadapt.generate
from jaxadapt import cpu_decode
from jaxadapt.assets import smollm2_dir
from jaxadapt.cli import main
from jaxadapt.errors import UserError
from jaxadapt.generate import decode_copy, generate, generate_ids, unstack_by_default
from jaxadapt.io.hf import load_pretrained

PROMPTS = ["The capital of the Netherlands is", "Once upon a time, in a small village by the sea, there lived a",
           "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\""]


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoTokenizer

    d = smollm2_dir()
    return d, load_pretrained(d), AutoTokenizer.from_pretrained(str(d))


def _hf_greedy(ref_model, prompts, max_new_tokens, eos_ids):
    """New token ids of transformers' greedy generate on a left-padded batch, each cut before its first EOS."""
    ids = [torch.tensor(p) for p in prompts]
    width = max(len(p) for p in ids)
    batch = torch.stack([torch.cat([torch.zeros(width - len(p), dtype=torch.long), p]) for p in ids])
    mask = torch.stack([torch.cat([torch.zeros(width - len(p)), torch.ones(len(p))]).long() for p in ids])
    with torch.no_grad():  # conftest keeps torch on one thread (see there why)
        out = ref_model.generate(batch, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 use_cache=True)[:, width:].tolist()
    return [row[:next((i for i, t in enumerate(row) if t in eos_ids), len(row))] for row in out]


def test_greedy_matches_transformers_on_smollm2(smollm2):
    from transformers import AutoModelForCausalLM

    d, model, tokenizer = smollm2
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    assert len({len(p) for p in prompts}) == 3
    ref = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32).eval()
    expected = _hf_greedy(ref, prompts, 64, (2,))  # SmolLM2: <|im_end|>, its only EOS
    assert max(len(e) for e in expected) == 64  # at least one row runs the whole budget
    assert generate_ids(model, prompts, eos_ids=(2,), max_new_tokens=64) == expected


@pytest.mark.parametrize("loop", ["kernel", "unstacked", "stacked"])
def test_sliding_window_greedy_matches_transformers(hf_dir, loop, monkeypatch):
    """Window 40 < prompt + generation: the cache must hide keys that slid out, as transformers does. Every decode
    loop: on a copy of each layer's weights, packed for jaxadapt.cpu_decode (XLA:CPU's default) or as they are for
    XLA's dot, and scanning the stacked layers."""
    if loop == "kernel" and not cpu_decode.available():
        pytest.skip("no C++ compiler for jaxadapt.cpu_decode here (tests/test_cpu_decode.py)")
    if loop == "unstacked":
        monkeypatch.setattr(jaxadapt.generate, "uses_cpu_decode", lambda model, unstack: False)
    unstack = loop != "stacked"
    path, ref = hf_dir("mistral_sliding")
    ref.generation_config.eos_token_id, ref.generation_config.pad_token_id = None, 0
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, 300, n).tolist() for n in (30, 17)]
    expected = _hf_greedy(ref, prompts, 40, ())
    model = load_pretrained(path)
    assert unstack_by_default(model)  # a tiny model on CPU
    assert jaxadapt.generate.uses_cpu_decode(model, unstack) == (loop == "kernel")
    assert generate_ids(model, prompts, eos_ids=(), max_new_tokens=40, unstack=unstack) == expected


@pytest.mark.parametrize("name, loop", [("qwen3", "kernel"), ("qwen3_tied", "stacked"), ("gemma2", "kernel"),
                                        ("gemma2", "stacked"), ("gemma3", "kernel"), ("gemma3", "stacked"),
                                        ("qwen2_mixed_sliding", "stacked")])
def test_family_greedy_matches_transformers(name, loop, hf_dir):
    """Qwen3's per-head q/k RMSNorm before RoPE, with head_dim 24 / 32 (not hidden / heads = 16), untied and tied;
    Gemma-2's soft-capped scores and logits with sliding and full layers alternating, Gemma-3's two RoPE bases
    (prompts and generations longer than the window of 40), Qwen2's full layer before its sliding ones: on the packed
    per-layer copy (jaxadapt.cpu_decode, where a C++ compiler is here) and scanning the stack."""
    if loop == "kernel" and not cpu_decode.available():
        pytest.skip("no C++ compiler for jaxadapt.cpu_decode here (tests/test_cpu_decode.py)")
    path, ref = hf_dir(name)
    ref.generation_config.eos_token_id, ref.generation_config.pad_token_id = None, 0
    prompts = [np.random.default_rng(5).integers(3, 300, n).tolist() for n in (49, 7)]
    model = load_pretrained(path)
    unstack = loop != "stacked"
    assert jaxadapt.generate.uses_cpu_decode(model, unstack) == (loop == "kernel")
    got = generate_ids(model, prompts, eos_ids=(), max_new_tokens=32, unstack=unstack)
    assert got == _hf_greedy(ref, prompts, 32, ())


def test_kernel_decode_with_biases_and_outputs_that_fill_no_whole_panel(hf_dir):
    """head_dim 24: the k/v projections have 48 outputs, not a multiple of cpu_decode.PANEL, so they stay XLA dots
    inside the kernel decode step; the q/k/v and MLP biases are added after the kernels' products; the vocabulary
    (300) pads the packed head's last panel."""
    if not cpu_decode.available():
        pytest.skip("no C++ compiler for jaxadapt.cpu_decode here (tests/test_cpu_decode.py)")
    path, ref = hf_dir("llama_bias_head_dim")
    ref.generation_config.eos_token_id, ref.generation_config.pad_token_id = None, 0
    prompts = [np.random.default_rng(2).integers(3, 300, n).tolist() for n in (21, 9)]
    model = load_pretrained(path)
    assert jaxadapt.generate.uses_cpu_decode(model, True)
    layers, head = decode_copy(model, True)
    attn = layers[0]["self_attn"]
    assert [attn[k]["kernel"][...].ndim for k in ("q_proj", "k_proj", "v_proj", "o_proj")] == [3, 2, 2, 3]
    assert head.shape == (10, 64, cpu_decode.PANEL)  # 300 tokens in 10 panels of 32
    assert generate_ids(model, prompts, eos_ids=(), max_new_tokens=40) == _hf_greedy(ref, prompts, 40, ())


def test_bfloat16_kernel_decode_step_matches_xla(hf_dir):
    """A bfloat16 model decodes with the kernels too (float32 arithmetic, each product rounded to bfloat16 once):
    one decode step's logits after a left-padded prefill equal those of XLA's ops on the same bfloat16 weights
    within bfloat16 rounding."""
    if not cpu_decode.available():
        pytest.skip("no C++ compiler for jaxadapt.cpu_decode here (tests/test_cpu_decode.py)")
    from jaxadapt.model import decode_kernels

    model = load_pretrained(hf_dir("llama_gqa")[0], "bfloat16")
    assert jaxadapt.generate.uses_cpu_decode(model, True)
    ids = jnp.asarray(np.random.default_rng(3).integers(3, 300, (2, 40)))
    mask = jnp.asarray(np.arange(40)[None] >= np.array([[0], [9]]))  # row 1 left-padded
    _, cache = jax.jit(lambda m, i, a: m.extend(i, m.init_cache(2, 48), a))(model, ids, mask)
    tok = jnp.asarray([[7], [11]])

    @partial(jax.jit, static_argnames="kernel")
    def step(model, copy, cache, kernel):
        layers, head = copy
        if not kernel:
            return model.logits(model.extend(tok, cache, layers=layers)[0][:, -1])
        with decode_kernels(cpu_decode):
            h = model.extend(tok, cache, layers=layers)[0]
        return cpu_decode.matmul(h[:, -1], head)[:, :300].astype(jnp.float32)

    got = np.asarray(step(model, decode_copy(model, True), cache, kernel=True))
    want = np.asarray(step(model, decode_copy(model, False), cache, kernel=False))
    assert got.dtype == want.dtype == np.float32
    # a few bfloat16 ulps (2^-8 relative) of the largest logit: the two round different partial sums
    np.testing.assert_allclose(got, want, rtol=0, atol=0.02 * np.abs(want).max())
    assert np.mean(got.argmax(-1) == want.argmax(-1)) == 1.0


def test_float32_decode_of_bfloat16_exact_weights_reads_them_as_bfloat16(hf_dir, monkeypatch):
    """A float32 model whose weights are all exact bfloat16 values (a bfloat16 checkpoint loaded in float32) decodes
    from bfloat16 copies of its kernels and head, to the same tokens as from float32 copies; one weight off the
    bfloat16 grid keeps everything float32."""
    if not cpu_decode.available():
        pytest.skip("no C++ compiler for jaxadapt.cpu_decode here (tests/test_cpu_decode.py)")
    model = load_pretrained(hf_dir("llama_tied")[0])
    for _, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param):
            var[...] = var[...].astype(jnp.bfloat16).astype(jnp.float32)
    prompts = [[5, 6, 7, 8, 9], [11, 12]]
    layers, head = decode_copy(model, True)
    assert head.dtype == layers[0]["mlp"]["down_proj"]["kernel"][...].dtype == jnp.bfloat16
    narrow = generate_ids(model, prompts, eos_ids=(), max_new_tokens=32)
    monkeypatch.setattr(jaxadapt.generate, "_bfloat16_exact", lambda model: False)
    jaxadapt.generate._COPY.clear()  # the same weights, copied again
    layers, head = decode_copy(model, True)
    assert head.dtype == jnp.float32
    assert generate_ids(model, prompts, eos_ids=(), max_new_tokens=32) == narrow
    monkeypatch.undo()
    down = model.model.layers.mlp.down_proj.kernel
    down[...] = down[...].at[0, 0, 0].add(1e-6)
    assert decode_copy(model, True)[1].dtype == jnp.float32


def test_decode_with_unmerged_lora_equals_the_merged_model(hf_dir):
    """A run dir's model generates with its LoRA factors attached (jaxadapt.train.export.restore_model): on every
    decode path their products are added to the packed or plain kernels' and must give the merged model's tokens.
    LoRA on half the layers, with non-zero B, and large enough to change the greedy tokens."""
    from jaxadapt.train.config import LoraConfig
    from jaxadapt.train.lora import add_lora, merge_lora

    path, _ = hf_dir("llama_gqa")
    prompts = [[5, 6, 7, 8, 9], [11, 12]]
    model = load_pretrained(path)
    base = generate_ids(model, prompts, eos_ids=(), max_new_tokens=24)
    add_lora(model, LoraConfig(rank=4, alpha=8, layers=(0, 2)), seed=1)
    for name in ("q_proj", "v_proj", "down_proj"):
        lin = getattr(model.model.layers.self_attn if name.endswith(("q_proj", "v_proj")) else model.model.layers.mlp,
                      name)
        lin.lora_b[...] = jax.random.normal(jax.random.key(len(name)), lin.lora_b[...].shape) * 0.5
    got = {unstack: generate_ids(model, prompts, eos_ids=(), max_new_tokens=24, unstack=unstack)
           for unstack in (True, False)}
    merge_lora(model)
    want = generate_ids(model, prompts, eos_ids=(), max_new_tokens=24)
    assert want != base
    assert got == {True: want, False: want}


def test_decode_copy_is_reused_until_the_weights_change(hf_dir):
    """The per-model copy of the layer weights (jaxadapt.generate.decode_copy) is made once, and made again after
    the model's weights change, so that generation never runs on stale weights."""
    model = load_pretrained(hf_dir("llama_tied")[0])
    kernel = jaxadapt.generate.uses_cpu_decode(model, True)
    first = decode_copy(model, kernel)
    assert decode_copy(model, kernel) is first
    prompts = [[5, 6, 7, 8], [9, 10]]
    before = generate_ids(model, prompts, eos_ids=(), max_new_tokens=12)
    emb = model.model.embed_tokens.embedding
    emb[...] = emb[...][::-1]  # the head (tied) and the inputs change
    down = model.model.layers.mlp.down_proj.kernel
    down[...] = -down[...]  # so does a weight that lives in the copy
    assert decode_copy(model, kernel) is not first
    after = generate_ids(model, prompts, eos_ids=(), max_new_tokens=12)
    assert after != before and after == generate_ids(model, prompts, eos_ids=(), max_new_tokens=12, unstack=False)


@pytest.mark.parametrize("family_name,dtype", [("llama_gqa", "float32"), ("mistral_sliding", "float32"),
                                               ("llama_gqa", "bfloat16"), ("qwen3", "float32")])
def test_cached_decode_logits_equal_full_forward(family_name, dtype, hf_dir):
    """In bfloat16 the cache holds uint16 bit patterns (see jaxadapt.model.KVCache), and the two computations round
    differently."""
    path, _ = hf_dir(family_name)
    model = load_pretrained(path, dtype)
    ids = jnp.asarray(np.random.default_rng(1).integers(0, 300, (2, 60)))
    mask = np.ones((2, 60), bool)
    mask[1, :12] = False  # left padding
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    full = np.asarray(jax.jit(lambda m, *a: m(*a))(model, ids, jnp.asarray(mask), jnp.asarray(positions)))

    @jax.jit
    def step(m, new_ids, cache, new_mask):
        h, cache = m.extend(new_ids, cache, new_mask)
        return m.logits(h), cache

    logits, cache = step(model, ids[:, :20], model.init_cache(2, 64), jnp.asarray(mask[:, :20]))
    assert cache.k.dtype == (jnp.uint16 if dtype == "bfloat16" else jnp.float32)
    got = [logits]
    for i in range(20, 60):
        logits, cache = step(model, ids[:, i:i + 1], cache, None)
        got.append(logits)
    tol = 1e-4 if dtype == "float32" else 2 ** -7 * np.abs(full).max()  # two bfloat16 ulps of the largest
    assert np.abs(np.concatenate(got, axis=1) - full)[mask].max() <= tol


def test_greedy_pick_is_argmax_with_ties_and_nans():
    logits = np.random.default_rng(0).standard_normal((5, 300)).astype(np.float32)
    logits[1, [7, 90]] = logits[1].max() + 1  # a tie: the first index wins
    logits[2, 40] = logits[3, [5, 250]] = np.nan  # argmax points at the first NaN
    logits[4] = -np.inf
    got = jax.jit(lambda x: jaxadapt.generate.sample_next(x, None, 0.0, 0, 1.0))(logits)
    assert np.asarray(got).tolist() == np.asarray(jnp.argmax(logits, axis=-1)).tolist() == [int(got[0]), 7, 40, 5, 0]


def test_sampling_is_reproducible_and_filters_like_greedy(hf_dir):
    path, _ = hf_dir("llama_gqa")
    model = load_pretrained(path)
    prompts = [[5, 6, 7, 8], [9, 10]]

    def run(**kw):
        return generate_ids(model, prompts, max_new_tokens=24, **kw)

    sampled = run(temperature=1.0, seed=3)
    assert sampled == run(temperature=1.0, seed=3)
    assert sampled != run(temperature=1.0, seed=4)
    greedy = run()
    assert run(temperature=1.0, top_k=1, seed=5) == greedy
    assert run(temperature=1.0, top_p=1e-6, seed=5) == greedy  # the nucleus keeps only the most likely token


def test_text_generation_stop_strings_and_chat(smollm2):
    _, model, tokenizer = smollm2
    prompt = ["The capital of the Netherlands is"]
    text = generate(model, tokenizer, prompt, max_new_tokens=16)[0]
    assert "Amsterdam" in text
    assert generate(model, tokenizer, prompt, max_new_tokens=16, stop=["Amsterdam"])[0] == text[:text.index("Amsterdam")]
    reply = generate(model, tokenizer, ["What is the capital of France?"], chat=True, max_new_tokens=24)[0]
    assert "Paris" in reply and "<|im" not in reply


def test_bad_input_is_a_user_error(smollm2, capsys):
    _, model, tokenizer = smollm2
    with pytest.raises(UserError, match=r"prompts=\[\]"):
        generate(model, tokenizer, [])
    with pytest.raises(UserError, match="max_new_tokens=0"):
        generate(model, tokenizer, ["hi"], max_new_tokens=0)
    with pytest.raises(UserError, match="top_p=0"):
        generate_ids(model, [[1]], top_p=0.0)
    assert main(["generate", "smollm2", "--prompt", "hi", "--max-new-tokens", "0"]) == 2
    assert "--max-new-tokens=0" in capsys.readouterr().err


def test_cli_generates(capsys):
    assert main(["generate", "smollm2", "--prompt", "The capital of the Netherlands is", "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### The capital of the Netherlands is\n") and "Amsterdam" in out
