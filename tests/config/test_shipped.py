"""The configs that ship as package data: in a checkout, the package's configs are the repository's configs/ (one
copy), and a recipe argument is a path or the name of a shipped recipe. The wheel itself: tests/test_wheel.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from jaxadapt.config.shipped import CONFIGS_DIR, PRESETS_DIR, shipped_names, shipped_recipe
from jaxadapt.errors import UserError
from jaxadapt.recipes.schema import recipe_file

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_reads_the_checkouts_configs():
    assert CONFIGS_DIR.samefile(ROOT / "configs")
    assert shipped_names(PRESETS_DIR) == sorted(p.stem for p in (ROOT / "configs" / "models").glob("*.yaml"))


def test_a_recipe_by_name_is_a_shipped_recipe_or_experiment():
    assert shipped_recipe("chocollama-lora").samefile(ROOT / "configs" / "recipes" / "chocollama-lora.yaml")
    assert shipped_recipe("b-initialisation").samefile(ROOT / "configs" / "experiments" / "b-initialisation.yaml")
    assert recipe_file("lep-extended") == str(shipped_recipe("lep-extended"))
    with pytest.raises(UserError, match=r"recipe 'chocolama-lora': no such file, and no recipe of that name ships "
                                        r"with jaxadapt \(shipped: .*chocollama-lora, chocollama-tokentrans"):
        recipe_file("chocolama-lora")


def test_a_path_or_url_is_taken_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chocollama-lora").write_text("name: mine\n")  # a file of that name wins over the shipped recipe
    for arg in ("chocollama-lora", "my.yaml", "sub/chocollama-lora", "gs://bucket/r.yaml"):
        assert recipe_file(arg) == arg
