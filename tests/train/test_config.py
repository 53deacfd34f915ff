"""The run config's parsed values: `train.trainable` read once into a `Trainable` and written back as spelled, and
`model.remat` taking exactly the model's remat policies."""

from __future__ import annotations

import re

import pytest

from jaxadapt.config.loader import config_hash, dump_yaml, load_config, to_dict
from jaxadapt.errors import UserError
from jaxadapt.model import REMAT_POLICIES, Runtime
from jaxadapt.train.config import RunConfig, TrainConfig, Trainable
from jaxadapt.train.plan import check_args


@pytest.mark.parametrize("spelling, body, lora, rows", [
    ("full", True, False, "all"),
    ("lora", False, True, "none"),
    ("embeddings", False, False, "all"),
    ("new_rows", False, False, "new"),
    ("lora+embeddings", False, True, "all"),
    (" new_rows + lora ", False, True, "new"),
])
def test_trainable_says_which_weights_and_rows_train(spelling, body, lora, rows):
    t = Trainable(spelling)
    assert (t.body, t.lora, t.rows) == (body, lora, rows)
    assert TrainConfig(trainable=spelling).trainable == t  # a string is parsed as the YAML is


@pytest.mark.parametrize("spelling, message", [
    ("lora+everything", "'lora+everything': unknown part(s) ['everything']; expected full | lora | embeddings"),
    ("", "'': unknown part(s) ['']"),
    ("full+lora", "'full+lora': 'full' already trains everything; use it alone"),
    ("embeddings+new_rows", "'embeddings+new_rows': 'embeddings' already trains every row; drop 'new_rows'"),
])
def test_a_bad_trainable_fails_where_the_config_is_read(tmp_path, spelling, message):
    with pytest.raises(UserError) as e:
        TrainConfig(trainable=spelling)
    assert str(e.value).startswith(message)
    config = tmp_path / "run.yaml"
    config.write_text(f"train: {{trainable: '{spelling}'}}\n")
    with pytest.raises(UserError) as from_yaml:
        load_config(RunConfig, config)
    assert str(from_yaml.value) == f"train.trainable: {e.value} in {config}"
    with pytest.raises(UserError, match=re.escape(f"--trainable {e.value}")):
        check_args(spelling, 8, 128, "float32", "none", "h100")


def test_a_trainable_is_a_string_in_yaml():
    with pytest.raises(UserError, match=r"train.trainable: expected a string \(Trainable\), got \['lora'\] \(list\)"):
        load_config(RunConfig, None, ["train.trainable=[lora]"])


def test_trainable_is_written_back_as_spelled(tmp_path):
    """A resume compares the saved config with the new one, so the spelling (order, spaces) must survive a dump."""
    cfg = load_config(RunConfig, None, ["model.path=x", "train.trainable=embeddings + lora"])
    assert to_dict(cfg)["train"]["trainable"] == "embeddings + lora"
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_yaml(cfg))
    assert "  trainable: embeddings + lora\n" in saved.read_text()
    again = load_config(RunConfig, saved)
    assert again == cfg and config_hash(again) == config_hash(cfg)
    assert str(again.train.trainable) == "embeddings + lora" and again.train.trainable.rows == "all"


def test_remat_names_are_the_model_policies(tmp_path):
    """The config, `jaxadapt plan` and the model's Runtime accept the same names: the keys of REMAT_POLICIES."""
    for name in REMAT_POLICIES:
        assert load_config(RunConfig, None, [f"model.remat={name}"]).model.remat == name
        check_args("lora", 8, 128, "float32", name, "h100")
        Runtime(remat=name)
    listed = ", ".join(repr(n) for n in REMAT_POLICIES)
    with pytest.raises(UserError, match=f"model.remat: 'most' is not one of {listed}"):
        load_config(RunConfig, None, ["model.remat=most"])
    with pytest.raises(UserError, match=f"--remat 'most': expected one of {', '.join(REMAT_POLICIES)}"):
        check_args("lora", 8, 128, "float32", "most", "h100")
