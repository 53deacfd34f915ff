"""The EXPERIMENTS.md recipes (configs/experiments/) on a tiny model and word-salad corpora: every one plans with
the tiny overrides, and (a) and (e) run end to end (tokenizers and stats; train, export, propagate, eval). The real
runs (SmolLM2 on Debian text) take an hour on a laptop CPU, so their numbers live in EXPERIMENTS.md."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from tinymodels import build_tiny_lm

from jaxadapt.cli import main
from jaxadapt.recipes.plan import plan
from jaxadapt.recipes.schema import load_recipe

EXPERIMENTS = Path(__file__).resolve().parents[2] / "configs" / "experiments"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return root, build_tiny_lm(root)


def overrides(name: str, root: Path, model: Path) -> list[str]:
    """Point an experiment at the tiny model and corpora, with sizes that fit them."""
    recipe = load_recipe(EXPERIMENTS / name)
    stages = {s.name: s for s in recipe.stages}
    out = [f"runs_root={root / 'runs'}", f"stages.model.config.src={model}"]
    out += [f"stages.{lang}.config.src={root / lang}.jsonl" for lang in ("nl", "en", "ru") if lang in stages]
    for st in recipe.stages:
        if st.kind == "tokenizer_extend" and st.config.get("replace"):
            out.append(f"stages.{st.name}.config.vocab_size=300")
        elif st.kind == "tokenizer_extend" and isinstance(st.config.get("add"), int):  # (a): 1K/5K/20K -> 10/20/40
            out.append(f"stages.{st.name}.config.add={st.config['add'] // 500}")
        if st.config.get("protect"):  # (f): German text of the tiny world
            out.append(f"stages.{st.name}.config.protect=[{root / 'ru.jsonl'}]")
    if "add" in recipe.vars:
        out += ["vars.add=20", "vars.steps=2", "vars.eval_docs=2"]
    out += [f"vars.ood_{lang}={root / lang}.jsonl" for lang in ("nl", "en", "ru") if f"ood_{lang}" in recipe.vars]
    out += [f"vars.ood_de={root / 'ru'}.jsonl"] if "ood_de" in recipe.vars else []  # the tiny world has no German
    return out


@pytest.mark.parametrize("name", sorted(p.name for p in EXPERIMENTS.glob("*.yaml")))
def test_experiment_plans_on_the_tiny_config(name, tiny):
    root, model = tiny
    recipe = load_recipe(EXPERIMENTS / name, overrides(name, root, model))
    assert recipe.name == {"f-staged.yaml": "exp-f-staged"}.get(name, "exp-" + name.split("-")[0])  # tables.py reads
    assert [s.name for s in plan(recipe, EXPERIMENTS / name)] == [s.name for s in recipe.stages]


def test_tokenizer_efficiency_runs(tiny):
    root, model = tiny
    assert main(["run", str(EXPERIMENTS / "a-tokenizer-efficiency.yaml"),
                 *overrides("a-tokenizer-efficiency.yaml", root, model)]) == 0
    for lang in ("nl", "ru"):
        rows = json.loads((root / "runs/exp-a/stages" / f"stats_{lang}/stats.json").read_text())
        target = [r["chars_per_token"] for r in rows if r["corpus"].endswith(f"{lang}/out/heldout.jsonl")]
        assert len(target) == 5  # base, +1K, +5K, +20K, replaced
        assert target[0] < target[1] < target[2] <= target[3]  # more target tokens, fewer tokens per character


def test_lep_experiment_runs(tiny, monkeypatch):
    root, model = tiny
    monkeypatch.setenv("XLA_FLAGS", "")  # the stages run on one CPU device, as on a laptop (batch 4 is not 8-way)
    assert main(["run", str(EXPERIMENTS / "e-lep.yaml"), *overrides("e-lep.yaml", root, model)]) == 0
    stages = root / "runs/exp-e/stages"
    results = {m: json.loads((stages / f"eval_{m}/results.json").read_text())["bpb"]
               for m in ("base", "instruct", "donor", "swap", "overlap", "conversion")}
    for r in results.values():
        assert set(r) == {"nl", "nl-ood", "en", "en-ood", "ru-ood", "de-ood"}
        assert all(math.isfinite(v["bpb"]) for v in r.values())
    # Propagation gives I the donor's vocabulary: Dutch costs fewer tokens than with I's own.
    assert results["conversion"]["nl"]["tokens"] < results["instruct"]["nl"]["tokens"]
