"""The model a run starts from: an HF checkpoint loaded straight into its shardings, or a preset architecture
initialised randomly, also directly sharded (smoke tests, benchmarks, capacity planning)."""

from __future__ import annotations

from pathlib import Path

import jax
from flax import nnx
from jax.sharding import Mesh

from jaxadapt.config import ModelConfig
from jaxadapt.config.presets import list_presets, model_preset
from jaxadapt.errors import UserError
from jaxadapt.io.hf import has_tokenizer, load_pretrained, load_tokenizer, read_config, resolve
from jaxadapt.model import LlamaForCausalLM, Runtime, abstract_model, init_model
from jaxadapt.sharding import tree_shardings
from jaxadapt.train.config import ModelSection


def init_sharded(cfg, rt: Runtime, mesh: Mesh, seed: int = 0) -> LlamaForCausalLM:
    """Random init compiled with output shardings: no device ever holds the whole model."""
    graphdef, abstract = nnx.split(abstract_model(cfg, rt))
    shardings = tree_shardings(abstract, mesh)
    state = jax.jit(lambda: nnx.state(init_model(cfg, rt, seed)), out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def _is_checkpoint(path: str) -> bool:
    """True for an HF dir or hub id, False for a preset (name or config file); a UserError for anything else."""
    if Path(path).is_dir() or ("/" in path and not path.endswith((".yaml", ".yml", ".json"))):
        return True
    if path in list_presets() or path.endswith((".yaml", ".yml", ".json")):
        return False
    raise UserError(f"model.path={path!r}: not a directory, a hub id (org/name) or a preset "
                    f"({', '.join(list_presets())})")


def checkpoint_dir(path: str) -> Path | None:
    """The HF dir a model.path names (a hub id's snapshot), where its adaptation.json and generation_config.json
    are; None for a preset."""
    return resolve(path) if _is_checkpoint(path) else None


def architecture(section: ModelSection) -> ModelConfig:
    """The run's model config, read before any weight (the attention chunk is sized from it)."""
    return read_config(resolve(section.path)) if _is_checkpoint(section.path) else model_preset(section.path)


def load_training_tokenizer(section: ModelSection):
    """model.tokenizer, else the checkpoint's own tokenizer (a hub id's too); None for a preset or a checkpoint
    without tokenizer files (the caller then brings its own token ids). Read before the weights, so the data can be
    checked first."""
    if section.tokenizer:
        return load_tokenizer(resolve(section.tokenizer))
    d = checkpoint_dir(section.path)
    return load_tokenizer(d) if d is not None and has_tokenizer(d) else None


def load_model(section: ModelSection, rt: Runtime, mesh: Mesh, seed: int = 0) -> LlamaForCausalLM:
    if _is_checkpoint(section.path):
        return load_pretrained(section.path, mesh=mesh, runtime=rt)
    return init_sharded(model_preset(section.path), rt, mesh, seed)
