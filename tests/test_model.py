"""Logits parity with real transformers models, for every supported family, at >= 256 positions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxadapt.io.hf import load_pretrained
from jaxadapt.model import Runtime, init_model
from jaxadapt.config import ModelConfig

SEQ = 288


def _forward(model, ids, mask=None, positions=None, segment_ids=None):
    fn = jax.jit(lambda m, *a: m(*a))
    args = [jnp.asarray(ids)] + [None if a is None else jnp.asarray(a) for a in (mask, positions, segment_ids)]
    return np.asarray(fn(model, *args))


def test_logits_match_transformers(family, hf_dir):
    path, ref_model = hf_dir(family)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 300, size=(3, SEQ))
    mask = np.ones_like(ids)
    mask[1, 200:] = 0  # right padding
    mask[2, 100:] = 0
    with torch.no_grad():
        ref = ref_model(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    out = _forward(load_pretrained(path), ids, mask)
    valid = mask.astype(bool)
    assert np.abs(out - ref)[valid].max() <= 1e-4
    assert (out.argmax(-1) == ref.argmax(-1))[valid].all()


@pytest.mark.parametrize("family_name", ["llama_gqa", "mistral_sliding", "gemma2", "gemma3"])
@pytest.mark.parametrize("attention_chunk", [0, 32])
def test_packed_documents_equal_separate_runs(family_name, attention_chunk, hf_dir):
    """Two documents packed in one row (segment ids, restarted positions) give each document's own logits; also
    with the training attention run 32 queries at a time (Runtime.attention_chunk)."""
    path, ref_model = hf_dir(family_name)
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 300, 170), rng.integers(0, 300, 110)
    ids = np.concatenate([a, b, np.zeros(8, int)])[None]
    segs = np.concatenate([np.full(170, 1), np.full(110, 2), np.zeros(8, int)])[None]
    pos = np.concatenate([np.arange(170), np.arange(110), np.zeros(8, int)])[None]
    out = _forward(load_pretrained(path, runtime=Runtime(attention_chunk=attention_chunk)), ids,
                   (segs > 0).astype(int), pos, segs)
    with torch.no_grad():
        ref_a = ref_model(torch.tensor(a[None])).logits.numpy()[0]
        ref_b = ref_model(torch.tensor(b[None])).logits.numpy()[0]
    assert np.abs(out[0, :170] - ref_a).max() <= 1e-4
    assert np.abs(out[0, 170:280] - ref_b).max() <= 1e-4


def test_left_padding_with_positions_matches_transformers(hf_dir):
    path, ref_model = hf_dir("llama_gqa")
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 300, size=(2, 260))
    mask = np.ones_like(ids)
    mask[0, :60] = 0
    pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    with torch.no_grad():
        ref = ref_model(torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(pos)).logits
    out = _forward(load_pretrained(path), ids, mask, pos)
    valid = mask.astype(bool)
    assert np.abs(out - ref.numpy())[valid].max() <= 1e-4


def test_bfloat16_compute_is_close(hf_dir):
    path, ref_model = hf_dir("llama_gqa")
    ids = np.random.default_rng(3).integers(0, 300, size=(1, 256))
    with torch.no_grad():
        ref = ref_model(torch.tensor(ids)).logits.numpy()
    out = _forward(load_pretrained(path, dtype="bfloat16"), ids)
    # bf16 has ~3 significant digits; logits here have magnitude ~10.
    assert np.abs(out - ref).mean() < 0.1 * np.abs(ref).mean()


@pytest.mark.parametrize("remat, attention_chunk", [("none", 0), ("full", 0), ("dots", 0), ("dots_no_batch", 0),
                                                    ("none", 4), ("full", 4)])
def test_remat_policies_give_identical_gradients(remat, attention_chunk):
    cfg = ModelConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    ids = jnp.asarray(np.random.default_rng(4).integers(0, 128, (2, 16)))
    from flax import nnx

    def grads(rt):
        model = init_model(cfg, rt)
        return nnx.grad(lambda m: m(ids).mean())(model)

    base = jax.tree.leaves(grads(Runtime()))
    other = jax.tree.leaves(grads(Runtime(remat=remat, attention_chunk=attention_chunk)))
    for x, y in zip(base, other):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


def test_scan_compile_time_does_not_grow_with_depth():
    """The layers are scanned: the HLO of a 2-layer and a 12-layer model have the same size."""
    def hlo_size(n):
        cfg = ModelConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=n,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=8)
        model = init_model(cfg)
        ids = jnp.zeros((1, 8), jnp.int32)
        return len(jax.jit(lambda m, i: m(i)).lower(model, ids).as_text())

    small, large = hlo_size(2), hlo_size(12)
    assert abs(large - small) < 0.02 * small


def test_rejects_unsupported_config_values():
    from jaxadapt.config import ConfigError

    with pytest.raises(ConfigError, match="model_type='gpt2'"):
        ModelConfig.from_hf({"model_type": "gpt2"}, source="x/config.json")
    with pytest.raises(ConfigError, match="rope_type='yarn'"):
        ModelConfig.from_hf({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                             "num_hidden_layers": 1, "num_attention_heads": 2,
                             "rope_scaling": {"rope_type": "yarn", "factor": 2.0}})
    gemma = {"model_type": "gemma2", "num_hidden_layers": 2}
    with pytest.raises(ConfigError, match="x/config.json: use_bidirectional_attention=true"):
        ModelConfig.from_hf({**gemma, "use_bidirectional_attention": True}, source="x/config.json")
    with pytest.raises(ConfigError, match="layer_types has 1 entries; expected one per layer"):
        ModelConfig.from_hf({**gemma, "layer_types": ["full_attention"]})
    with pytest.raises(ConfigError, match=r"layer_types holds \['global'\]"):
        ModelConfig.from_hf({**gemma, "layer_types": ["global", "full_attention"]})
    with pytest.raises(ConfigError, match="model_type='gemma3' \\(multimodal\\) without a text_config"):
        ModelConfig.from_hf({"model_type": "gemma3"})
    with pytest.raises(ConfigError, match="hidden_act='relu' is not supported"):
        ModelConfig.from_hf({**gemma, "hidden_activation": "relu"})


def test_every_accepted_activation_has_a_function():
    """The config accepts activations by name without importing jax; the model maps the same names to functions."""
    from jaxadapt.config import model as config_model
    from jaxadapt import model

    assert set(model.ACTIVATIONS) == set(config_model.ACTIVATIONS)


def test_layer_kind_is_static_where_it_can_be():
    """One place decides a layer's kind: a Python bool for uniform models and unrolled layers, a traced flag for the
    scan's layer index where the layers mix (Gemma)."""
    from jaxadapt.model import is_sliding

    gemma = ModelConfig.from_hf({"model_type": "gemma2", "num_hidden_layers": 4})
    llama = ModelConfig.from_hf({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                                 "num_hidden_layers": 2, "num_attention_heads": 2})
    assert is_sliding(llama, jnp.int32(1)) is False
    assert [is_sliding(gemma, i) for i in range(4)] == list(gemma.sliding_layers) == [True, False, True, False]
    flags = jax.jit(lambda i: is_sliding(gemma, i))
    assert [bool(flags(jnp.int32(i))) for i in range(4)] == [True, False, True, False]


def test_gemma_configs_fill_transformers_defaults():
    """A sparse Gemma config.json (the multimodal Gemma-3's text_config above all) means what transformers reads from
    it: the class defaults, the layer pattern spelled out, Gemma-3's per-kind RoPE parameters."""
    from transformers import AutoConfig

    for hf in ({"model_type": "gemma2", "num_hidden_layers": 4},
               {"model_type": "gemma3_text", "num_hidden_layers": 7, "rope_scaling": {"rope_type": "linear",
                                                                                     "factor": 8.0}}):
        ours, ref = ModelConfig.from_hf(hf), AutoConfig.for_model(**hf)
        assert list(ours.layer_types) == ref.layer_types
        assert (ours.vocab_size, ours.head_dim, ours.sliding_window, ours.query_pre_attn_scalar) == (
            ref.vocab_size, ref.head_dim, ref.sliding_window, ref.query_pre_attn_scalar)
        assert (ours.attn_logit_softcapping, ours.final_logit_softcapping, ours.tie_word_embeddings) == (
            ref.attn_logit_softcapping, ref.final_logit_softcapping, ref.tie_word_embeddings)
        back = AutoConfig.for_model(**ours.to_hf())
        assert back.to_dict()["rope_parameters"] == ref.to_dict()["rope_parameters"]
        assert ModelConfig.from_hf(back.to_dict()) == ours


def test_qwen3_config_and_biases_like_transformers(tmp_path, make_hf_model):
    """Qwen3's config keys as transformers reads them: head_dim defaults to 128 (not hidden / heads), attention_bias
    adds q/k/v *and* o_proj biases (unlike Qwen2's), the sliding window follows use_sliding_window / layer_types. A
    Qwen3 with biases (none of the published ones has them) still matches transformers."""
    from transformers import AutoConfig

    base = {"model_type": "qwen3", "vocab_size": 300, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4}
    cfg = ModelConfig.from_hf(base)
    assert cfg.head_dim == 128 and cfg.qk_norm and not cfg.attention_bias and not cfg.o_proj_bias
    assert cfg.sliding_window is None and cfg.num_key_value_heads == 4
    biased = ModelConfig.from_hf({**base, "head_dim": 24, "attention_bias": True})
    assert biased.attention_bias and biased.o_proj_bias
    hf = AutoConfig.for_model(**biased.to_hf())
    assert (hf.head_dim, hf.attention_bias, hf.sliding_window, type(hf).__name__) == (24, True, None, "Qwen3Config")
    assert ModelConfig.from_hf(hf.to_dict()) == biased
    sliding = ModelConfig.from_hf({**base, "use_sliding_window": True, "sliding_window": 16, "max_window_layers": 0})
    assert sliding.sliding_window == 16
    assert AutoConfig.for_model(**sliding.to_hf()).layer_types == ["sliding_attention"] * 2
    mixed = ModelConfig.from_hf({**base, "use_sliding_window": True, "sliding_window": 16, "max_window_layers": 1})
    assert mixed.sliding_layers == (False, True)
    back = AutoConfig.for_model(**mixed.to_hf())
    assert back.layer_types == ["full_attention", "sliding_attention"] and back.max_window_layers == 1
    assert ModelConfig.from_hf(back.to_dict()) == mixed

    ref = make_hf_model("qwen3", num_key_value_heads=2, head_dim=24, attention_bias=True)
    ref.save_pretrained(tmp_path / "biased")
    model = load_pretrained(tmp_path / "biased")
    assert model.model.layers.self_attn.o_proj.bias is not None
    ids = np.random.default_rng(5).integers(0, 300, (1, 64))
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    assert np.abs(_forward(model, ids) - want).max() <= 1e-4


@pytest.mark.parametrize("family_name", ["llama_gqa", "gemma2"])
def test_splash_attention_in_the_model_matches_transformers(family_name, hf_dir):
    """attention_impl=splash (Pallas interpret mode off a TPU) through the whole model: right padding, and for Gemma-2
    the per-layer choice between the sliding and the full kernel inside the scan, with soft-capped scores."""
    path, ref_model = hf_dir(family_name)
    ids = np.random.default_rng(4).integers(0, 300, size=(2, SEQ))
    mask = np.ones_like(ids)
    mask[1, 150:] = 0
    with torch.no_grad():
        ref = ref_model(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    out = _forward(load_pretrained(path, runtime=Runtime(attention_impl="splash")), ids, mask)
    valid = mask.astype(bool)
    assert np.abs(out - ref)[valid].max() <= 1e-4
