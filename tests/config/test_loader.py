"""The YAML run-config system: inheritance, overrides, every validation message, dump/hash/save."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from jaxadapt.config import loader
from jaxadapt.config.loader import config_hash, dump_yaml, load_config, save_resolved, to_dict
from jaxadapt.errors import UserError


@dataclass(frozen=True)
class Optim:
    learning_rate: float = 1e-3
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    betas: tuple[float, float] = (0.9, 0.95)


@dataclass(frozen=True)
class Data:
    path: str
    weights: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Train:
    steps: int
    optim: Optim = Optim()
    layers: list[int] = ()
    tags: tuple[str, ...] = ()
    seed: int | None = None
    warmup: int | str = 0
    resume: bool = False
    lang: str = "en"
    flags: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Positive:
    value: int = 1

    def __post_init__(self):
        if self.value <= 0:
            raise ValueError(f"value={self.value} must be positive")


@dataclass(frozen=True)
class Run:
    train: Train
    name: str = "run"
    data: Data | None = None
    positive: Positive = Positive()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def error(tmp_path, text: str, overrides=(), schema=Run) -> str:
    path = write(tmp_path, "x.yaml", text)
    with pytest.raises(UserError) as e:
        load_config(schema, path, overrides)
    return str(e.value)


# ------------------------------------------------------------------------------------------ loading
def test_defaults_and_types(tmp_path):
    path = write(tmp_path, "x.yaml", "train:\n  steps: 10\n  layers: [1, 2]\n  optim: {learning_rate: 1}\n")
    cfg = load_config(Run, path)
    assert cfg == Run(train=Train(steps=10, layers=(1, 2), optim=Optim(learning_rate=1.0)))
    assert type(cfg.train.optim.learning_rate) is float  # an int is accepted for a float and converted
    assert cfg.train.layers == (1, 2)  # a list in a frozen dataclass becomes a tuple, so the config hashes
    hash(cfg.train.optim)


def test_yaml_12_scalars(tmp_path):
    """`3e-4` is a float and `no` a string (both wrong in YAML 1.1), leading zeros stay decimal."""
    text = "train: {steps: 010, lang: no, tags: [on, 2024-01-01], optim: {learning_rate: 3e-4}}\n"
    cfg = load_config(Run, write(tmp_path, "x.yaml", text))
    assert cfg.train.steps == 10 and cfg.train.lang == "no" and cfg.train.tags == ("on", "2024-01-01")
    assert cfg.train.optim.learning_rate == 3e-4


def test_no_file_means_defaults_and_overrides_only():
    cfg = load_config(Run, None, ["train.steps=5"])
    assert cfg == Run(train=Train(steps=5))
    with pytest.raises(UserError, match=r"^train: required key is missing \(Train, no default\) in no config file$"):
        load_config(Run, None)


def test_nested_bases_merge_deeply_and_later_wins(tmp_path):
    write(tmp_path, "common/base.yaml", "name: base\ntrain:\n  steps: 1\n  tags: [a, b]\n  optim: {learning_rate: 0.1}\n")
    write(tmp_path, "common/mid.yaml", "base: base.yaml\ntrain:\n  steps: 2\n  optim: {schedule: linear}\n")
    write(tmp_path, "common/other.yaml", "train:\n  steps: 3\n  tags: [c]\n")
    top = write(tmp_path, "runs/top.yaml", "base: [../common/mid.yaml, ../common/other.yaml]\ntrain:\n  seed: 7\n")
    cfg = load_config(Run, top)
    assert cfg.name == "base"
    assert cfg.train.steps == 3 and cfg.train.seed == 7
    assert cfg.train.tags == ("c",)  # lists are replaced, not concatenated
    assert cfg.train.optim == Optim(learning_rate=0.1, schedule="linear")  # mappings merge key by key


def test_diamond_bases_are_not_a_cycle(tmp_path):
    write(tmp_path, "root.yaml", "train: {steps: 1}\n")
    write(tmp_path, "a.yaml", "base: root.yaml\nname: a\n")
    write(tmp_path, "b.yaml", "base: root.yaml\n")
    assert load_config(Run, write(tmp_path, "top.yaml", "base: [a.yaml, b.yaml]\n")).name == "a"


def test_base_cycle_names_the_files(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: c.yaml\n")
    write(tmp_path, "c.yaml", "base: b.yaml\n")
    with pytest.raises(UserError) as e:
        load_config(Run, tmp_path / "a.yaml")
    assert str(e.value) == f"config inheritance cycle: {tmp_path}/b.yaml -> {tmp_path}/c.yaml -> {tmp_path}/b.yaml"


def test_missing_and_bad_base(tmp_path):
    msg = error(tmp_path, "base: nope.yaml\n")
    assert msg == f"base: {tmp_path}/nope.yaml not found (named in {tmp_path}/x.yaml)"
    assert "base: expected a file name or a list of file names, got 3 (int)" in error(tmp_path, "base: 3\n")


def test_file_errors(tmp_path):
    with pytest.raises(UserError, match="missing.yaml: config file not found"):
        load_config(Run, tmp_path / "missing.yaml")
    assert "x.yaml: invalid YAML:" in error(tmp_path, "train: [1, 2\n") and "line 2" in error(tmp_path, "train: [1, 2\n")
    assert "expected a mapping of keys at the top level, got [1, 2] (list)" in error(tmp_path, "[1, 2]\n")


# ------------------------------------------------------------------------------------------ overrides
def test_overrides_parse_yaml_scalars(tmp_path):
    path = write(tmp_path, "x.yaml", "train: {steps: 1, seed: 3}\n")
    cfg = load_config(Run, path, [
        "train.optim.learning_rate=3e-4", "train.resume=true", "train.seed=null", "train.tags=[a,b]",
        "name=no", "data.path=/tmp/corpus", "data.weights={en: 1, sw: 0.5}",
    ])
    assert cfg.train.optim.learning_rate == 3e-4 and cfg.train.resume is True and cfg.train.seed is None
    assert cfg.train.tags == ("a", "b") and cfg.name == "no"
    assert cfg.data == Data(path="/tmp/corpus", weights={"en": 1.0, "sw": 0.5})  # a null section is created


def test_override_replaces_a_section(tmp_path):
    path = write(tmp_path, "x.yaml", "train: {steps: 1, optim: {learning_rate: 0.5, schedule: linear}}\n")
    cfg = load_config(Run, path, ["train.optim={learning_rate: 0.1}"])
    assert cfg.train.optim == Optim(learning_rate=0.1)


@dataclass(frozen=True)
class Source:
    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class Mixture:
    sources: tuple[Source, ...] = ()


def test_override_steps_into_a_list(tmp_path):
    path = write(tmp_path, "x.yaml", "sources: [{name: a}, {name: b, weight: 2}]\n")
    cfg = load_config(Mixture, path, ["sources.1.weight=0.5"])
    assert cfg.sources == (Source("a"), Source("b", 0.5))
    assert load_config(Mixture, path, ["sources.b.weight=0.5", "sources.a.weight=3"]).sources == (
        Source("a", 3.0), Source("b", 0.5))  # an item by its name, as a recipe's stages.NAME...
    assert error(tmp_path, "sources: [{name: a}]\n", ["sources.1.weight=3"], schema=Mixture) == (
        "override 'sources.1.weight=3': sources is a list of 1; '1' is neither an index into it nor the name of an "
        "item (names: a)")
    assert error(tmp_path, "sources: [{name: dutch}, {name: english}]\n", ["sources.duthc.weight=3"],
                 schema=Mixture) == ("override 'sources.duthc.weight=3': sources is a list of 2; 'duthc' is neither an "
                                     "index into it nor the name of an item (did you mean 'dutch'?)")
    assert error(tmp_path, "sources: [{name: a}]\n", ["sources.0.wieght=3"], schema=Mixture).startswith(
        "sources[0].wieght: unknown key (did you mean sources[0].weight?) in override")


def test_override_errors(tmp_path):
    assert error(tmp_path, "train: {steps: 1}\n", ["train.optim.learnig_rate=1"]) == (
        "train.optim.learnig_rate: unknown key (did you mean train.optim.learning_rate?) in override")
    assert error(tmp_path, "train: {steps: 1}\n", ["train.steps=ten"]) == (
        "train.steps: expected int, got 'ten' (str) in override")
    assert error(tmp_path, "train: {steps: 1}\n", ["train.steps"]) == "override 'train.steps': expected key.path=value"
    assert error(tmp_path, "train: {steps: 1}\n", ["train..steps=1"]) == "override 'train..steps=1': expected key.path=value"
    assert "override 'train.tags=[a': invalid YAML value" in error(tmp_path, "train: {steps: 1}\n", ["train.tags=[a"])


# ------------------------------------------------------------------------------------------ validation messages
def test_unknown_key_suggests_the_closest(tmp_path):
    path = tmp_path / "x.yaml"
    assert error(tmp_path, "train: {steps: 1, optim: {learnig_rate: 0.1}}\n") == (
        f"train.optim.learnig_rate: unknown key (did you mean train.optim.learning_rate?) in {path}")
    assert error(tmp_path, "train: {steps: 1}\nzzz: 1\n") == (
        f"zzz: unknown key (valid keys: train, name, data, positive) in {path}")


def test_errors_name_the_file_that_set_the_key(tmp_path):
    write(tmp_path, "base.yaml", "train: {steps: 1, optim: {shedule: linear}}\n")
    top = write(tmp_path, "top.yaml", "base: base.yaml\ntrain: {steps: 2}\n")
    with pytest.raises(UserError) as e:
        load_config(Run, top)
    assert str(e.value) == (
        f"train.optim.shedule: unknown key (did you mean train.optim.schedule?) in {tmp_path}/base.yaml")


@dataclass(frozen=True)
class WithBase:
    base: str  # a setting called `base` (the tokenizer `tokenizer extend` starts from), not inheritance
    steps: int = 1


def test_a_mapping_is_read_as_a_file_is(tmp_path):
    """A config tree from inside another file (a recipe's stage, a sweep): the same checks, its keys named as coming
    from `source`, bases relative to `base_dir`, and the caller's mapping left as it was."""
    write(tmp_path, "conf/base.yaml", "train: {steps: 1, optim: {schedule: linear}}\nname: from-base\n")
    tree = {"base": "base.yaml", "train": {"steps": 2, "tags": ["a"]}}
    cfg = load_config(Run, tree, ["train.tags.0=b"], source="recipe.yaml (stages.cpt.config)",
                      base_dir=tmp_path / "conf")
    assert cfg.name == "from-base" and cfg.train.steps == 2 and cfg.train.tags == ("b",)
    assert cfg.train.optim.schedule == "linear"
    assert tree == {"base": "base.yaml", "train": {"steps": 2, "tags": ["a"]}}
    with pytest.raises(UserError) as e:
        load_config(Run, {"train": {"stepz": 2}}, source="recipe.yaml (stages.cpt.config)")
    assert str(e.value) == "train.stepz: unknown key (did you mean train.steps?) in recipe.yaml (stages.cpt.config)"
    with pytest.raises(UserError) as e:
        load_config(Run, {"base": "base.yaml", "train": {"steps": 1, "optim": {"shedule": "x"}}}, source="r.yaml",
                    base_dir=tmp_path)
    assert str(e.value) == f"base: {tmp_path}/base.yaml not found (named in r.yaml)"
    write(tmp_path, "typo.yaml", "train: {steps: 1, optim: {shedule: linear}}\n")
    with pytest.raises(UserError, match=f"train.optim.shedule: unknown key .* in {tmp_path}/typo.yaml$"):
        load_config(Run, {"base": "typo.yaml"}, source="r.yaml", base_dir=tmp_path)  # a base's key names its file
    assert load_config(WithBase, {"base": "tok/"}, source="r.yaml") == WithBase(base="tok/")
    with pytest.raises(UserError, match=r"^base: required key is missing \(str, no default\) in r.yaml$"):
        load_config(WithBase, {"steps": 3}, source="r.yaml")


@pytest.mark.parametrize("text, message", [
    ("train: {steps: ten}", "train.steps: expected int, got 'ten' (str)"),
    ("train: {steps: 1.5}", "train.steps: expected int, got 1.5 (float)"),
    ("train: {steps: true}", "train.steps: expected int, got True (bool)"),
    ("train: {steps: 1, resume: 1}", "train.resume: expected bool, got 1 (int)"),
    ("train: {steps: 1, resume: yes}", "train.resume: expected bool, got 'yes' (str)"),
    ("train: {steps: 1, optim: {learning_rate: fast}}", "train.optim.learning_rate: expected float, got 'fast' (str)"),
    ("train: {steps: 1, lang: 3}", "train.lang: expected str, got 3 (int); quote it to make it a string"),
    ("train: {steps: 1, optim: {schedule: cosin}}",
     "train.optim.schedule: 'cosin' is not one of 'cosine', 'linear', 'constant'"),
    ("train: {steps: 1, optim: {betas: [0.9]}}",
     "train.optim.betas: expected a list of 2 items (tuple[float, float]), got 1"),
    ("train: {steps: 1, layers: [1, x]}", "train.layers[1]: expected int, got 'x' (str)"),
    ("train: {steps: 1, layers: 3}", "train.layers: expected a list (list[int]), got 3 (int)"),
    ("train: {steps: 1, flags: {a: 1}}", "train.flags.a: expected bool, got 1 (int)"),
    ("train: {steps: 1, flags: [a]}", "train.flags: expected a mapping, got ['a'] (list)"),
    ("train: {steps: 1, warmup: [1]}", "train.warmup: expected int | str, got [1] (list)"),
    ("train: {steps: 1, seed: x}", "train.seed: expected int, got 'x' (str)"),
    ("train: 5", "train: expected a mapping (Train), got 5 (int)"),
    ("train: {}", "train.steps: required key is missing (int, no default)"),
    ("train: {steps: 1}\ndata: {weights: {en: 1}}", "data.path: required key is missing (str, no default)"),
    ("train: {steps: 1}\npositive: {value: -1}", "positive: value=-1 must be positive"),
])
def test_validation_messages(tmp_path, text, message):
    assert error(tmp_path, text + "\n") == f"{message} in {tmp_path}/x.yaml"


def test_unions_and_optionals(tmp_path):
    cfg = load_config(Run, write(tmp_path, "x.yaml", "train: {steps: 1, warmup: 10%, seed: 4}\ndata: null\n"))
    assert cfg.train.warmup == "10%" and cfg.train.seed == 4 and cfg.data is None
    assert load_config(Run, None, ["train.steps=1", "train.warmup=5"]).train.warmup == 5


def test_unsupported_annotation_is_a_schema_bug():
    @dataclass(frozen=True)
    class Bad:
        when: complex = 0j

    with pytest.raises(TypeError, match="does not support"):
        load_config(Bad, None, ["when=1"])


# ------------------------------------------------------------------------------------------ dump, hash, save
def full_config(tmp_path) -> Run:
    text = """
name: "3e-4"
train:
  steps: 100
  layers: [0, 5]
  tags: ["no", "010", "true", "null", "a: b", ""]
  optim: {learning_rate: 3.0e-4, schedule: linear, betas: [0.8, 1.0e-10]}
  seed: null
  warmup: "7"
  lang: "sw"
  flags: {x: true}
data: {path: "/data/sw", weights: {sw: 0.75}}
"""
    return load_config(Run, write(tmp_path, "full.yaml", text))


def test_dump_load_round_trip(tmp_path):
    cfg = full_config(tmp_path)
    text = dump_yaml(cfg)
    assert load_config(Run, write(tmp_path, "dumped.yaml", text)) == cfg
    assert text.startswith("train:\n  steps: 100\n")  # schema order, block style
    assert to_dict(cfg)["train"]["layers"] == [0, 5]


def test_hash_is_stable_and_sensitive(tmp_path):
    cfg = full_config(tmp_path)
    h = config_hash(cfg)
    assert len(h) == 12 and h == config_hash(load_config(Run, write(tmp_path, "d.yaml", dump_yaml(cfg))))
    # The same values reached by a different route (int vs float spelling, base + override) hash the same.
    a = load_config(Run, None, ["train.steps=1", "train.optim.learning_rate=1"])
    write(tmp_path, "b_base.yaml", "train: {steps: 1, optim: {learning_rate: 1.0}}\n")
    b = load_config(Run, write(tmp_path, "b.yaml", "base: b_base.yaml\n"))
    assert config_hash(a) == config_hash(b)
    # Pinned: the hash must not depend on the process (PYTHONHASHSEED) or dict order.
    assert config_hash(a) == "e073f9e7ddfd"
    assert config_hash(load_config(Run, None, ["train.steps=1", "train.optim.learning_rate=1.0001"])) != config_hash(a)
    assert config_hash(load_config(Run, None, ["train.steps=1", "train.tags=[a]"])) != config_hash(
        load_config(Run, None, ["train.steps=1", "train.tags=[b]"]))


def test_save_resolved_is_atomic(tmp_path, monkeypatch):
    cfg = full_config(tmp_path)
    run_dir = tmp_path / "runs" / "r1"
    path = save_resolved(cfg, run_dir)
    assert path == run_dir / "config.yaml" and load_config(Run, path) == cfg
    before = path.read_text()

    def broken(_):
        raise RuntimeError("disk full")

    monkeypatch.setattr(loader, "dump_yaml", broken)
    with pytest.raises(RuntimeError):
        save_resolved(cfg.__class__(train=Train(steps=1)), run_dir)
    assert path.read_text() == before  # the old file is untouched
    assert sorted(os.listdir(run_dir)) == ["config.yaml"]  # and no temporary file is left behind
