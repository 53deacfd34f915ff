"""The "auto" chunk sizes: logits and training attention chunked only where one device would hold more than the
budget, into as few chunks as fit."""

import jax
import pytest

from jaxadapt.config.presets import model_preset
from jaxadapt.sharding import make_mesh
from jaxadapt.train.chunking import CHUNK_BUDGET, auto_attention_chunk, auto_logits_chunk
from jaxadapt.train.config import ModelSection, RunConfig, TrainConfig
from jaxadapt.train.step import resolve_attention_chunk, resolve_logits_chunk


def test_auto_logits_chunk_keeps_a_device_under_the_budget():
    assert auto_logits_chunk(4, 256, 49152) == 0  # SmolLM2 at 4 x 256: 0.2 GiB, all at once
    chunk = auto_logits_chunk(8, 4096, 128256)  # Llama-3 at 8 x 4096: 16 GiB whole
    assert chunk == 256 and 8 * chunk * 128256 * 4 <= CHUNK_BUDGET < 8 * 2 * chunk * 128256 * 4
    assert auto_logits_chunk(8, 1000, 128256) == 250  # the largest divisor of 1000 that fits (500 would not)
    assert auto_logits_chunk(1, 64, 10**9) == 1  # never below one position


def test_auto_logits_chunk_counts_the_rows_of_one_device():
    def resolve(data, **train):
        cfg = RunConfig(train=TrainConfig(seq_len=4096, **train))
        return resolve_logits_chunk(cfg, make_mesh(data, 1, 1, devices=jax.devices()[:data]), 128256)

    assert resolve(1, batch_size=8) == 256
    assert resolve(8, batch_size=8) == 2048  # one row per device: 2.1 GB whole, halves fit
    assert resolve(1, batch_size=8, grad_accum=4) == 1024  # 2 rows per micro-batch
    assert resolve(1, batch_size=8, objective="dpo") == 128  # chosen + rejected rows
    assert resolve(1, batch_size=8, logits_chunk=64) == 64  # a number is taken as given


def test_auto_attention_chunk_counts_the_layers_the_backward_keeps():
    assert auto_attention_chunk(4, 9, 256, 30, "none") == 0  # SmolLM2 at 4 x 256: 0.3 GiB for all 30 layers
    # Llama-3-8B, one row of 4096 per device: 2 GiB of scores per layer; 2048 queries fit the budget exactly.
    assert auto_attention_chunk(1, 32, 4096, 32, "full") == 2048
    assert 32 * 2048 * 4096 * 4 <= CHUNK_BUDGET < 32 * 4096 * 4096 * 4
    # 0.5 GiB per layer: one layer at a time fits (remat full), all 16 kept by remat none / dots do not, and any
    # chunking keeps only the chunk's inputs: the largest proper divisor.
    for remat, chunk in (("full", 0), ("dots_no_batch", 0), ("none", 512), ("dots", 512)):
        assert auto_attention_chunk(4, 32, 1024, 16, remat) == chunk, remat
    assert auto_attention_chunk(64, 64, 1031, 1, "full") == 1  # a prime length: one query at a time


def test_resolve_attention_chunk_counts_one_devices_rows_and_heads():
    llama = model_preset("llama3-8b")  # 32 query heads, 32 layers

    def resolve(mesh=(1, 1, 1), **kw):
        model = {k: kw.pop(k) for k in ("attention_chunk", "attention_impl", "remat") if k in kw}
        cfg = RunConfig(model=ModelSection(**model), train=TrainConfig(seq_len=4096, **kw))
        return resolve_attention_chunk(cfg, make_mesh(*mesh, devices=jax.devices()[:mesh[0] * mesh[1] * mesh[2]]),
                                       llama)

    assert resolve(batch_size=1, remat="full") == 2048
    assert resolve(batch_size=8, remat="full") == 256  # 8 rows on one device
    assert resolve((1, 8, 1), batch_size=8, remat="full") == 2048  # fsdp=8: one row per device
    assert resolve((1, 1, 8), batch_size=1, remat="full") == 0  # tensor=8: 4 heads per device, 0.25 GiB
    assert resolve(batch_size=8, grad_accum=8, remat="full") == 2048  # one row per micro-batch
    assert resolve(batch_size=1, remat="full", objective="dpo") == 1024  # chosen + rejected
    assert resolve(batch_size=8, attention_impl="cudnn") == 0  # a fused kernel keeps no scores
    assert resolve(batch_size=8, attention_chunk=64) == 64  # a number is taken as given


def test_auto_attention_is_cudnn_only_on_a_gpu_computing_in_half_precision(monkeypatch):
    """The default `auto`: XLA's attention here (CPU), chunked as before; on a GPU, cuDNN's fused kernel for
    bfloat16 / float16 compute (never chunked), XLA's for float32, which cuDNN does not take."""
    from types import SimpleNamespace

    from jaxadapt.errors import UserError
    from jaxadapt.train.step import resolve_attention_impl

    def cfg(dtype, impl="auto"):
        return RunConfig(model=ModelSection(compute_dtype=dtype, attention_impl=impl),
                         train=TrainConfig(seq_len=4096, batch_size=8))

    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    assert ModelSection().attention_impl == "auto"
    assert resolve_attention_impl(cfg("bfloat16")) == "xla"
    assert resolve_attention_chunk(cfg("bfloat16"), mesh, model_preset("llama3-8b")) > 0
    monkeypatch.setattr(jax, "devices", lambda *a: [SimpleNamespace(platform="gpu")])
    assert resolve_attention_impl(cfg("bfloat16")) == "cudnn"
    assert resolve_attention_chunk(cfg("bfloat16"), mesh, model_preset("llama3-8b")) == 0
    assert resolve_attention_impl(cfg("float32")) == "xla"
    assert resolve_attention_impl(cfg("float32"), compute_dtype="bfloat16") == "cudnn"  # export/eval --dtype
    assert resolve_attention_impl(cfg("bfloat16", None)) is None  # jax's own choice, as configs before `auto`
    gemma2 = model_preset("gemma2-2b")  # soft-capped scores: cuDNN cannot compute them
    assert resolve_attention_impl(cfg("bfloat16"), model_cfg=gemma2) == "xla"
    assert resolve_attention_impl(cfg("bfloat16"), model_cfg=model_preset("gemma3-1b")) == "cudnn"
    with pytest.raises(UserError, match="cudnn has no soft-capped attention scores, which this gemma2 model uses"):
        resolve_attention_impl(cfg("bfloat16", "cudnn"), model_cfg=gemma2)


def test_auto_attention_is_splash_on_a_tpu_and_splash_wants_one(monkeypatch):
    """On a TPU `auto` is the splash kernel (jaxadapt.splash) whatever the compute dtype, never chunked; asking for
    splash anywhere else is refused (Pallas could only interpret the TPU kernel there)."""
    from types import SimpleNamespace

    from jaxadapt.config.loader import load_config
    from jaxadapt.errors import UserError
    from jaxadapt.train.step import resolve_attention_impl

    def cfg(dtype, impl="auto"):
        return RunConfig(model=ModelSection(compute_dtype=dtype, attention_impl=impl),
                         train=TrainConfig(seq_len=4096, batch_size=8))

    assert load_config(RunConfig, None, ["model.attention_impl=splash"]).model.attention_impl == "splash"
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    with pytest.raises(UserError, match="splash runs on a TPU only.*this is a cpu"):
        resolve_attention_impl(cfg("bfloat16", "splash"))
    # a TPU run exported or evaluated elsewhere computes as `auto` would there
    assert resolve_attention_impl(cfg("bfloat16", "splash"), training=False) == "xla"
    monkeypatch.setattr(jax, "devices", lambda *a: [SimpleNamespace(platform="tpu")])
    for dtype in ("bfloat16", "float32"):
        assert resolve_attention_impl(cfg(dtype)) == "splash"
        assert resolve_attention_impl(cfg(dtype, "splash")) == "splash"
        assert resolve_attention_chunk(cfg(dtype), mesh, model_preset("llama3-8b")) == 0
    assert resolve_attention_impl(cfg("bfloat16", "xla")) == "xla"  # an explicit choice stands


@pytest.mark.parametrize("value", ["auto", 0, 256])
def test_attention_chunk_config_values(value):
    from jaxadapt.train.config import validate

    validate(RunConfig(model=ModelSection(path="smollm2-135m", attention_chunk=value), train=TrainConfig(seq_len=512)))
