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
from jaxadapt.io.hf import load_pretrained, read_config, resolve
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


def architecture(section: ModelSection) -> ModelConfig:
    """The run's model config, read before any weight (the attention chunk is sized from it)."""
    return read_config(resolve(section.path)) if _is_checkpoint(section.path) else model_preset(section.path)


def load_for_training(section: ModelSection, rt: Runtime, mesh: Mesh, seed: int = 0):
    """(model, tokenizer or None)."""
    from transformers import AutoTokenizer

    path = section.path
    if _is_checkpoint(path):
        model = load_pretrained(path, mesh=mesh, runtime=rt)
    else:
        model = init_sharded(model_preset(path), rt, mesh, seed)
    tok_path = section.tokenizer or (path if Path(path).is_dir() else None)
    tokenizer = AutoTokenizer.from_pretrained(tok_path) if tok_path else None
    return model, tokenizer
