"""Shared fixtures: tiny HF-style configs of every family, real transformers models saved to disk."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch a hub
# 8 simulated CPU devices for mesh tests; single-device code still runs on device 0 only.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest
import torch

# Once JAX has run in this process (8 simulated devices), multi-threaded torch gets ~10x slower on this CPU;
# the torch references here are small, so one thread is both fast and deterministic.
torch.set_num_threads(1)

from tinymodels import FAMILIES, hf_model  # noqa: E402


@pytest.fixture(params=sorted(FAMILIES))
def family(request):
    return request.param


@pytest.fixture
def hf_dir(tmp_path):
    """Factory: save a random tiny HF model of a family to a dir; returns (dir, torch model)."""

    def make(name: str, **extra):
        model_type, overrides = FAMILIES[name]
        model = hf_model(model_type, **{**overrides, **extra})
        out = tmp_path / name
        model.save_pretrained(out)
        return out, model

    return make


@pytest.fixture
def make_hf_model():
    """The `hf_model` factory as a fixture, for tests that need a model not in FAMILIES."""
    return hf_model


@pytest.fixture(scope="module")
def make_hf_model_module():
    """`make_hf_model` for module-scoped fixtures."""
    return hf_model


@pytest.fixture(scope="module")
def gcs(request):
    """A GCS emulator for the module, with the module's BUCKET created: (gcsfs filesystem, environment)."""
    from gcsemu import emulated_gcs

    yield from emulated_gcs(request.module.BUCKET)
