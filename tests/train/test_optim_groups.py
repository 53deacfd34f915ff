"""Per-group learning rates (optim.groups), seen-row embedding updates and the embedding weight-decay default."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxadapt.errors import UserError
from jaxadapt.model import init_model
from jaxadapt.sharding import make_mesh, path_str
from jaxadapt.train.config import GroupScales, OptimConfig, validate
from jaxadapt.train.lora import add_lora
from jaxadapt.train.optim import make_optimizer
from jaxadapt.train.partition import resolve_old_vocab
from jaxadapt.train.step import build_engine, shard_batch

from trainhelpers import CFG, batch, run_cfg


def trained(trainable, steps=3, mesh=(2, 2, 2), vocab=128, **optim):
    """(params before, params after `steps` steps on one batch whose ids are < vocab)."""
    rc = run_cfg(trainable, steps=steps)
    rc = dataclasses.replace(rc, optim=dataclasses.replace(rc.optim, schedule="constant", **optim))
    model = init_model(CFG)
    if rc.train.trainable.lora:
        add_lora(model, rc.lora)
    engine, state = build_engine(model, rc, make_mesh(*mesh), old_vocab=100)
    before = jax.tree.map(np.asarray, state["params"])
    for _ in range(steps):
        state, _ = engine.step(state, shard_batch(batch(b=16, vocab=vocab), engine, 1))
    return before, jax.tree.map(np.asarray, state["params"])


def rows(params):
    return params["model"]["embed_tokens"]["embedding"], params["lm_head"]["kernel"].T


def test_old_rows_at_zero_stay_bit_identical_even_with_embedding_weight_decay():
    before, after = trained("embeddings", groups=GroupScales(old_rows=0.0), embedding_weight_decay=True)
    for b, a in zip(rows(before), rows(after)):
        assert np.array_equal(a[:100], b[:100])
        assert not np.allclose(a[100:], b[100:])


def test_a_group_multiplier_scales_the_update():
    """Adam's first update does not depend on the gradient's size, so old rows at 0.1 move exactly 0.1 as far."""
    base_before, base_after = trained("embeddings", steps=1)
    before, after = trained("embeddings", steps=1, groups=GroupScales(old_rows=0.1))
    for b0, a0, b, a in zip(rows(base_before), rows(base_after), rows(before), rows(after)):
        np.testing.assert_allclose(a[:100] - b[:100], 0.1 * (a0[:100] - b0[:100]), rtol=1e-4, atol=1e-7)
        np.testing.assert_array_equal(a[100:], a0[100:])


def test_frozen_lora_and_frozen_body():
    before, after = trained("lora+embeddings", groups=GroupScales(lora=0.0))
    for (p, b), a in zip(jax.tree_util.tree_flatten_with_path(before)[0], jax.tree.leaves(after)):
        assert np.array_equal(a, b) == ("lora_" in path_str(p)), path_str(p)
    before, after = trained("full", groups=GroupScales(body=0.0))
    for (p, b), a in zip(jax.tree_util.tree_flatten_with_path(before)[0], jax.tree.leaves(after)):
        assert np.array_equal(a, b) == (path_str(p) not in ("model/embed_tokens/embedding", "lm_head/kernel"))


@pytest.mark.parametrize("mesh", [(8, 1, 1), (1, 2, 4)])
def test_seen_updates_move_only_the_rows_of_tokens_in_the_batch(mesh):
    """Every id of the batch is < 64: rows 64.. of the tied-style embedding and the head keep their values."""
    before, after = trained("embeddings", mesh=mesh, vocab=64, embedding_updates="seen")
    for b, a in zip(rows(before), rows(after)):
        assert np.array_equal(a[64:], b[64:])
        assert not np.any(np.all(a[:64] == b[:64], axis=1)), "every seen row moved"
    _, everywhere = trained("embeddings", mesh=mesh, vocab=64)
    assert not np.allclose(rows(everywhere)[1][64:], rows(before)[1][64:]), "plain AdamW moves unseen head rows"


def test_embeddings_are_not_decayed_by_default():
    params = {"model": {"embed_tokens": {"embedding": np.ones((4, 2), np.float32)}},
              "lm_head": {"kernel": np.ones((2, 4), np.float32)}}
    grads = jax.tree.map(np.zeros_like, params)
    for flag, moved in ((False, False), (True, True)):
        opt = make_optimizer(OptimConfig(learning_rate=0.1, weight_decay=0.5, embedding_weight_decay=flag), 10)
        updates, _ = opt.update(grads, opt.init(params), params)
        assert all(np.any(u != 0) == moved for u in jax.tree.leaves(updates))


@pytest.mark.parametrize("optim, message", [
    (OptimConfig(learning_rate=-1.0), "optim.learning_rate=-1.0: expected a positive number"),
    (OptimConfig(groups=GroupScales(old_rows=-0.5)), "optim.groups.old_rows=-0.5: expected a learning-rate"),
])
def test_bad_optimizer_values(optim, message):
    with pytest.raises(UserError, match=message):
        validate(dataclasses.replace(run_cfg(), optim=optim))


def test_old_vocab_comes_from_adaptation_json_only_where_rows_differ(tmp_path):
    rc = dataclasses.replace(run_cfg("embeddings"), model=dataclasses.replace(run_cfg().model, path=str(tmp_path)))
    split = dataclasses.replace(rc, optim=OptimConfig(groups=GroupScales(old_rows=0.1)))
    assert resolve_old_vocab(rc) is None and resolve_old_vocab(split) is None, "no adaptation.json: all rows old"
    (tmp_path / "adaptation.json").write_text('{"old_vocab_size": 100}')
    assert resolve_old_vocab(rc) is None and resolve_old_vocab(split) == 100
