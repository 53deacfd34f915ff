"""One LoRA update (train/lora.lora_delta) for the two places that add it to the weights: merging a run's adapters
(merge_lora, before an HF export) and propagating a LoRA run into an instruct model (lep/propagate)."""

import numpy as np

from jaxadapt.lep.propagate import _lora_updates
from jaxadapt.model import init_model
from jaxadapt.params import LORA_SPECS
from jaxadapt.train.config import LoraConfig
from jaxadapt.train.lora import add_lora, lora_delta, merge_lora, target_modules

from trainhelpers import CFG


def test_merge_and_propagation_add_the_same_update():
    model = init_model(CFG)
    cfg = LoraConfig(rank=4, alpha=8, targets=("q_proj", "down_proj"), layers=(-1,))  # layer 1 of 2 only
    add_lora(model, cfg)
    rng = np.random.default_rng(0)
    mods = target_modules(model, cfg.targets)
    for lin in mods.values():  # B is 0 at step 0: give it values, as training would
        lin.lora_b[...] = rng.normal(size=lin.lora_b.shape).astype(np.float32)
    deltas = {name: np.asarray(lora_delta(lin)) for name, lin in mods.items()}
    for name, lin in mods.items():  # scale * A @ B, layer by layer; zeros outside lora.layers
        a, b = np.asarray(lin.lora_a[...]), np.asarray(lin.lora_b[...])
        np.testing.assert_allclose(deltas[name][1], 2.0 * a[1] @ b[1], rtol=1e-5, atol=1e-6)
        assert not deltas[name][0].any() and np.abs(deltas[name][1]).max() > 0.1

    updates = _lora_updates(model)
    assert sorted(updates) == sorted(LORA_SPECS[n].hf_name(1) for n in cfg.targets)  # only the adapted layer
    for name in cfg.targets:
        np.testing.assert_array_equal(updates[LORA_SPECS[name].hf_name(1)], deltas[name][1].T)

    before = {name: np.asarray(lin.kernel[...]) for name, lin in mods.items()}
    merge_lora(model)
    for name, lin in target_modules(model, cfg.targets).items():
        assert lin.lora_a is None
        np.testing.assert_allclose(np.asarray(lin.kernel[...]), before[name] + deltas[name], rtol=0, atol=1e-6)
