"""Parameter groups by path alone: what the trainable filter, the update scales and the decay mask all read."""

from __future__ import annotations

import jax
import pytest
from flax import nnx

from jaxadapt.model import LoRAParam, init_model
from jaxadapt.params import LORA_TARGETS
from jaxadapt.sharding import path_str
from jaxadapt.train.config import LoraConfig, Trainable
from jaxadapt.train.lora import add_lora
from jaxadapt.train.partition import ROW_AXIS, group, split_trainable

from trainhelpers import CFG


@pytest.fixture(scope="module")
def adapted():
    model = init_model(CFG)
    add_lora(model, LoraConfig(rank=2))
    return model


def param_paths(state) -> set[str]:
    return {path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(state))[0]}


def test_groups_by_path_agree_with_the_variable_types(adapted):
    """A LoRA factor is known by its path as it was by its type (LoRAParam); the per-token leaves are the parameter
    table's `vocab`-axis ones, the embedding's rows and the untied LM head's columns."""
    assert ROW_AXIS == {"model/embed_tokens/embedding": 0, "lm_head/kernel": 1}
    kinds = {}
    for path, var in nnx.iter_graph(adapted):
        if isinstance(var, nnx.Param):
            p = path_str(path)
            kinds[p] = group(p)
            assert (kinds[p] == "lora") == isinstance(var, LoRAParam), p
    assert {p for p, k in kinds.items() if k == "rows"} == set(ROW_AXIS)
    assert sum(k == "lora" for k in kinds.values()) == 2 * len(LORA_TARGETS)  # lora_a, lora_b of each target


@pytest.mark.parametrize("spelling, groups", [
    ("lora", {"lora"}), ("embeddings", {"rows"}), ("new_rows", {"rows"}), ("lora+embeddings", {"lora", "rows"}),
    ("full", {"rows", "body"}),
])
def test_split_trainable_takes_exactly_the_groups_it_names(adapted, spelling, groups):
    _, trained, frozen = split_trainable(adapted, Trainable(spelling))
    every = param_paths(nnx.state(adapted, nnx.Param))
    assert param_paths(trained) == {p for p in every if group(p) in groups}
    assert param_paths(frozen) & every == every - param_paths(trained)
