"""A demanding user's ~70 bad inputs, one row each, through the real command line.

Every command family gets the mistakes people make: a missing or empty file, a typo in a key, a zero where a count
goes, an output that cannot be written. For each, `jaxadapt` must exit 2 (a user error, not a crash), print exactly
one line `error: ...` that names the offending file / key / value and what was expected, and leave the disk as it
found it: no half-written output, no temporary dir, no empty run dir that the next run would trip over.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from tinymodels import build_tiny_lm

from jaxadapt.cli import main
from jaxadapt.io.hf import TOKENIZER_FILES


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Built once: a tiny Llama with a real BPE tokenizer (chat template), word-salad corpora, an extended tokenizer."""
    root = tmp_path_factory.mktemp("assets")
    model = build_tiny_lm(root, docs_per_lang=40)
    assert main(["tokenizer", "extend", "--base", str(model), "--corpus", str(root / "nl.jsonl"), "--add", "20",
                 "--out", str(root / "ext")]) == 0
    return root


class Inputs:
    """A row's inputs, each built on first use in the cwd (the test's tmp_path); methods return relative paths."""

    def __init__(self, assets: Path):
        self.assets = assets

    def copy(self, name: str, dest: str | None = None) -> str:
        dest = dest or name
        src = self.assets / name
        if not Path(dest).exists():
            shutil.copytree(src, dest) if src.is_dir() else shutil.copy(src, dest)
        return dest

    def model(self) -> str:
        return self.copy("model")

    def corpus(self) -> str:
        return self.copy("nl.jsonl")

    def ext(self) -> str:
        """A tokenizer extended from the model's by 20 Dutch tokens."""
        return self.copy("ext")

    def new_token(self) -> str:
        """A token the extended tokenizer added."""
        old, new = (json.loads((self.assets / d / "tokenizer.json").read_text())["model"]["vocab"]
                    for d in ("model", "ext"))
        return next(t for t in new if t not in old)

    def bare_model(self) -> str:
        """The model dir without its tokenizer files (copied without them: a common mistake)."""
        d = self.copy("model", "bare_model")
        for f in TOKENIZER_FILES:
            Path(d, f).unlink(missing_ok=True)
        return d

    def weightless_model(self) -> str:
        """The model dir with its config and tokenizer but without its weights (a download cut short)."""
        d = self.copy("model", "weightless")
        for f in Path(d).glob("*.safetensors*"):
            f.unlink()
        return d

    def write(self, name: str, text: str) -> str:
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_text(text, encoding="utf-8")
        return name

    def json(self, name: str, obj) -> str:
        return self.write(name, json.dumps(obj))

    def jsonl(self, name: str, records: list) -> str:
        return self.write(name, "".join(json.dumps(r) + "\n" for r in records))

    def blocker(self) -> str:
        """A plain file where an output's parent dir would go."""
        return self.write("blocker", "mine")

    def full(self) -> str:
        """A non-empty dir, as a user's earlier output."""
        self.write("full/keep.txt", "mine")
        return "full"

    def run_config(self, **sections) -> str:
        """A small valid LoRA run on the tiny model and the Dutch corpus, with `sections` merged in; run.yaml."""
        cfg = {"name": "bad",
               "model": {"path": self.model()},
               "train": {"trainable": "lora", "steps": 2, "batch_size": 8, "seq_len": 32},
               "checkpoint": {"every": 1},
               "logging": {"tensorboard": False, "cpu_peak_flops": 1e11},
               "data": {"sources": [{"name": "nl", "paths": [self.corpus()]}], "validation_fraction": 0.2,
                        "prefetch": 0}}
        for section, values in sections.items():
            cfg[section] = {**cfg.get(section, {}), **values}
        return self.write("run.yaml", yaml.safe_dump(cfg))

    def source(self, path: str, **extra) -> str:
        """run.yaml whose one data source reads `path`."""
        return self.run_config(data={"sources": [{"name": "nl", "paths": [path], **extra}]})

    def recipe(self, stages: list, vars: dict | None = None) -> str:
        return self.write("recipe.yaml", yaml.safe_dump({"name": "rec", "vars": vars or {}, "stages": stages}))

    def run_dir(self, metrics: str = '{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.5}\n') -> str:
        """What `report` reads of a finished run: runs/old/metrics.jsonl (a run dir, so no retention block)."""
        self.write("runs/old/metrics.jsonl", metrics)
        return "runs/old"

    def untrained_run(self) -> str:
        """A run dir whose config.yaml was written but no checkpoint (a run that failed before its first save)."""
        self.write("runs/x/config.yaml", Path(self.run_config()).read_text())
        return "runs/x"

    def base_json(self, seq_len: int) -> str:
        """An earlier `eval --json` of the base on another text called nl, with windows of `seq_len`."""
        inputs = {"seq_len": seq_len, "stride": None, "fewshot": 0, "corpora": {"nl": "fingerprint-of-other-text"},
                  "tasks": {}, "prompts": None}
        return self.json("base.json", {"model": "base", "inputs": inputs, "bpb": {"nl": {"bpb": 2.0}}, "mc": {}})


def tokenizer_train(corpus: str, size: str = "400", out: str = "tok") -> list[str]:
    return ["tokenizer", "train", "--corpus", corpus, "--vocab-size", size, "--out", out]


def extend(i: Inputs, *extra: str, out: str = "tok") -> list[str]:
    return ["tokenizer", "extend", "--base", i.model(), "--corpus", i.corpus(), *extra, "--out", out]


def adapt(i: Inputs, init: str) -> list[str]:
    return ["vocab", "adapt", "--model", i.model(), "--tokenizer", i.ext(), "--init", init, "--out", "adapted"]


def mapping(weights: dict):
    """Rows of `vocab adapt --init mapping:map.json` that map one new token to old tokens with these weights."""
    return lambda i: adapt(i, "mapping:" + i.json("map.json", {i.new_token(): weights}))


def evaluate(i: Inputs, *extra: str) -> list[str]:
    return ["eval", i.model(), "--target", f"nl={i.corpus()}", *extra]


def propagate(i: Inputs, *extra: str, donor: str | None = None) -> list[str]:
    m = i.model()
    return ["propagate", "--base", m, "--donor", donor or m, "--target", m, *extra, "--out", "prop"]


def split(src: str, *extra: str) -> list[str]:
    return ["data", "split", src, "--out", "split", *extra]


def stage(name: str, kind: str, **config) -> dict:
    return {"name": name, "kind": kind, "config": config}


def tok_stage(i: Inputs, **config) -> dict:
    """A recipe stage `tok` that trains a tokenizer on the Dutch corpus."""
    return stage("tok", "tokenizer_train", **{"corpus": [i.corpus()], "vocab_size": 400, **config})


# (id, argv built from Inputs, phrases the one-line message must hold). Relative paths resolve in tmp_path (the cwd).
ROWS = [
    # convert
    ("convert-missing-src", lambda i: ["convert", "no_such_model", "out"], ["no_such_model", "no such directory"]),
    ("convert-bad-dtype", lambda i: ["convert", i.model(), "out", "--dtype", "float8"], ["float8", "float32"]),
    ("convert-garbage-gguf", lambda i: ["convert", i.write("m.gguf", "not a gguf"), "out"], ["m.gguf", "GGUF"]),
    # export
    ("export-missing-run", lambda i: ["export", "runs/nope", "out"], ["runs/nope", "not a run dir"]),
    ("export-no-checkpoint", lambda i: ["export", i.untrained_run(), "out"], ["runs/x/checkpoints", "no complete"]),
    ("export-lora-flags-clash", lambda i: ["export", i.untrained_run(), "out", "--merge-lora", "--peft-adapter"],
     ["--merge-lora", "--peft-adapter", "exclude"]),
    # train: the config file and overrides
    ("train-missing-config", lambda i: ["train", "nope.yaml"], ["nope.yaml", "not found"]),
    ("train-bad-yaml", lambda i: ["train", i.write("run.yaml", "model: {path: model\ntrain: [1,\n")],
     ["run.yaml", "invalid YAML", "line 2"]),
    ("train-unknown-key", lambda i: ["train", i.run_config(train={"stepz": 3})], ["train.stepz", "train.steps"]),
    ("train-unknown-override-key", lambda i: ["train", i.run_config(), "lora.rnak=4"], ["lora.rnak", "lora.rank"]),
    ("train-wrong-type", lambda i: ["train", i.run_config(train={"steps": "many"})], ["train.steps", "int", "many"]),
    # train: values
    ("train-lora-rank-0", lambda i: ["train", i.run_config(lora={"rank": 0})], ["lora.rank=0", "positive integer"]),
    ("train-checkpoint-every-0", lambda i: ["train", i.run_config(), "checkpoint.every=0"],
     ["checkpoint.every=0", "positive integer"]),
    ("train-log-every-0", lambda i: ["train", i.run_config(train={"log_every": 0})],
     ["train.log_every=0", "positive integer"]),
    ("train-negative-lr", lambda i: ["train", i.run_config(), "optim.learning_rate=-1"],
     ["optim.learning_rate=-1", "positive number"]),
    ("train-keep-0", lambda i: ["train", i.run_config(checkpoint={"keep": 0})], ["checkpoint.keep=0", "at least 1"]),
    ("train-trainable-typo", lambda i: ["train", i.run_config(train={"trainable": "lora+embedings"})],
     ["'lora+embedings'", "['embedings']", "expected full | lora"]),
    ("train-trainable-full-plus", lambda i: ["train", i.run_config(), "train.trainable=full+lora"],
     ["'full+lora'", "use it alone"]),
    ("train-batch-not-dividing-mesh", lambda i: ["train", i.run_config(), "train.batch_size=3"],
     ["train.batch_size=3", "not divisible", "data*fsdp=8"]),
    # train: the model and the data on disk
    ("train-missing-model-dir", lambda i: ["train", i.run_config(model={"path": "models/llama"})],
     ["models/llama", "no such directory"]),
    ("train-model-without-tokenizer", lambda i: ["train", i.run_config(model={"path": i.bare_model()})],
     ["bare_model", "no tokenizer files", "model.tokenizer"]),
    ("train-model-without-weights", lambda i: ["train", i.run_config(model={"path": i.weightless_model()})],
     ["weightless", "safetensors"]),
    ("train-missing-data-file", lambda i: ["train", i.source("data/nl.jsonl")],
     ["'nl'", "no such file or directory", "data/nl.jsonl"]),
    ("train-empty-corpus", lambda i: ["train", i.source(i.write("empty.jsonl", ""))],
     ["'nl'", "empty.jsonl", "no documents"]),
    ("train-glob-matches-nothing", lambda i: ["train", i.source("corpora/*.jsonl")],
     ["'nl'", "'corpora/*.jsonl'", "matched no files"]),
    ("train-jsonl-without-text-field", lambda i: ["train", i.source(i.jsonl("c.jsonl", [{"content": "x y z"}] * 50))],
     ["c.jsonl:1", "no field 'text'", "content", "text_field"]),
    ("train-sft-on-plain-text", lambda i: ["train", i.run_config(), "train.objective=sft", "data.task=sft"],
     ["nl.jsonl", "chat record", "messages"]),
    # eval
    ("eval-missing-corpus", lambda i: ["eval", i.model(), "--target", "nl=data/nl.jsonl"],
     ["--target nl", "data/nl.jsonl", "no such file"]),
    ("eval-negative-max-bytes", lambda i: evaluate(i, "--max-bytes", "-1"), ["--max-bytes -1", ">= 0"]),
    ("eval-lang-without-generate", lambda i: evaluate(i, "--lang", "nl"), ["--lang nl", "only used with --generate"]),
    ("eval-generate-without-lang", lambda i: evaluate(i, "--generate", i.write("p.txt", "Hallo\n")),
     ["--generate p.txt", "needs --lang"]),
    ("eval-spec-without-name", lambda i: ["eval", i.model(), "--bpb", i.corpus()], ["--bpb 'nl.jsonl'", "NAME=PATH"]),
    ("eval-base-json-other-seq-len", lambda i: evaluate(i, "--base", i.base_json(512), "--seq-len", "256"),
     ["--base base.json", "seq_len=512", "uses 256"]),
    ("eval-base-json-other-text", lambda i: evaluate(i, "--base", i.base_json(256), "--seq-len", "256"),
     ["--base base.json", "'nl'", "other text"]),
    ("eval-json-under-file", lambda i: evaluate(i, "--json", i.blocker() + "/r.json"),
     ["--json", "blocker", "is a file"]),
    # generate / predict
    ("generate-max-new-tokens-0", lambda i: ["generate", i.model(), "--prompt", "Hoi", "--max-new-tokens", "0"],
     ["--max-new-tokens=0", "at least 1"]),
    ("generate-missing-model", lambda i: ["generate", "models/none", "--prompt", "Hoi"],
     ["models/none", "no such directory"]),
    ("generate-model-without-tokenizer", lambda i: ["generate", i.bare_model(), "--prompt", "Hoi"],
     ["bare_model", "no tokenizer files"]),
    ("generate-top-p-0", lambda i: ["generate", i.model(), "--prompt", "Hoi", "--top-p", "0"], ["top_p=0", "(0, 1]"]),
    ("predict-top-k-0", lambda i: ["predict", i.model(), "--top-k", "0"], ["top_k=0", "at least 1"]),
    ("predict-empty-text", lambda i: ["predict", i.model(), "--text", ""], ["text=''", "no tokens"]),
    # tokenizer train / extend
    ("tokenizer-train-missing-corpus", lambda i: tokenizer_train("nope.txt"), ["nope.txt", "no such file"]),
    ("tokenizer-train-blank-corpus", lambda i: tokenizer_train(i.jsonl("e.jsonl", [{"text": "  "}])),
     ["e.jsonl", "holds no text"]),
    ("tokenizer-train-size-below-alphabet", lambda i: tokenizer_train(i.corpus(), "100"),
     ["--vocab-size 100", "below the alphabet", "257"]),
    ("tokenizer-train-out-non-empty", lambda i: tokenizer_train(i.corpus(), out=i.full()),
     ["output full", "not empty", "--overwrite"]),
    ("tokenizer-extend-add-0", lambda i: extend(i, "--add", "0"), ["--add 0", "positive number"]),
    ("tokenizer-extend-out-under-file", lambda i: extend(i, "--add", "5", out=i.blocker() + "/tok"),
     ["blocker", "is a file"]),
    ("tokenizer-extend-base-without-tokenizer",
     lambda i: ["tokenizer", "extend", "--base", i.bare_model(), "--corpus", i.corpus(), "--add", "5", "--out", "t"],
     ["bare_model", "no tokenizer.json"]),
    # vocab adapt
    ("vocab-adapt-unknown-init", lambda i: adapt(i, "average"), ["--init 'average'", "wmean", "mapping:FILE"]),
    ("vocab-adapt-missing-mapping", lambda i: adapt(i, "mapping:map.json"), ["map.json", "No such file"]),
    ("vocab-adapt-mapping-weight-0", mapping({"Ġthe": 0}), ["map.json", "sum to 0"]),
    ("vocab-adapt-mapping-negative-weight", mapping({"Ġthe": -1.0}), ["map.json", "'Ġthe'", "weight -1.0", ">= 0"]),
    ("vocab-adapt-mapping-unknown-old-token", mapping({"Ġzzzq": 1.0}),
     ["map.json", "'Ġzzzq'", "not a token of the old tokenizer"]),
    # propagate
    ("propagate-unknown-method", lambda i: propagate(i, "--method", "blend"), ["--method 'blend'", "conversion"]),
    ("propagate-missing-donor", lambda i: propagate(i, donor="runs/none"), ["runs/none", "no such directory"]),
    # data split / stats
    ("data-split-missing-src", lambda i: split("nope.jsonl"), ["'nope.jsonl'", "no such file"]),
    ("data-split-fraction-above-1", lambda i: split(i.corpus(), "--heldout-fraction", "1.5"),
     ["--heldout-fraction=1.5", "between 0 and 1"]),
    ("data-split-nothing-held-out", lambda i: split(i.corpus(), "--heldout-fraction", "0.000001"),
     ["held-out", "fraction=1e-06", "raise it"]),
    ("data-stats-missing-path", lambda i: ["data", "stats", "nope.jsonl"], ["nope.jsonl", "no such file"]),
    ("data-stats-no-text-field", lambda i: ["data", "stats", i.corpus(), "--text-field", "body"],
     ["nl.jsonl:1", "no field 'body'", "fields: text"]),
    # report
    ("report-missing-input", lambda i: ["report", "runs/none", "--out", "rep"], ["runs/none", "not a run dir"]),
    ("report-bad-eval-json", lambda i: ["report", i.write("e.json", "{oops"), "--out", "rep"],
     ["e.json", "not a readable JSON"]),
    ("report-bad-metrics-line", lambda i: ["report", i.run_dir('{"step": 1, "loss": 3.0}\n{bad\n'), "--out", "rep"],
     ["runs/old/metrics.jsonl:2", "invalid JSON"]),
    ("report-check-without-retention", lambda i: ["report", i.run_dir(), "--out", "rep", "--check"],
     ["--check", "no input", "retention"]),
    # run (recipes)
    ("run-unknown-stage-kind", lambda i: ["run", i.recipe([stage("tok", "tokenizer_trian")])],
     ["recipe.yaml", "'tokenizer_trian'", "'tokenizer_train'"]),
    ("run-unknown-stage-ref", lambda i: ["run", i.recipe([tok_stage(i), stage("adapt", "vocab_adapt", model=i.model(),
                                                                            tokenizer="${stages.tokk.out}")])],
     ["recipe.yaml", "stages.adapt.config.tokenizer", "no stage 'tokk'", "'tok'"]),
    ("run-unknown-var", lambda i: ["run", i.recipe([tok_stage(i, vocab_size="${vars.size}")], {"sise": 400})],
     ["recipe.yaml", "${vars.size}", "'sise'"]),
    ("run-ref-in-vars", lambda i: ["run", i.recipe([tok_stage(i)], {"a": "${vars.b}"})],
     ["vars", "not allowed", "recipe.yaml"]),
    ("run-unknown-stage-option", lambda i: ["run", i.recipe([tok_stage(i, vocab_sise=3)])],
     ["vocab_sise", "stages.tok.config", "jaxadapt tokenizer train", "vocab_size"]),
    ("run-bad-train-stage", lambda i: ["run", i.recipe([stage("cpt", "train", model={"path": i.model()},
                                                              lora={"rank": 0})])],
     ["stages.cpt", "lora.rank=0", "positive integer"]),
    # plan
    ("plan-unknown-preset", lambda i: ["plan", "llama-9b"], ["'llama-9b'", "smollm2-135m"]),
    ("plan-bad-mesh", lambda i: ["plan", "smollm2-135m", "--mesh", "data=two"], ["--mesh 'data=two'", "AXIS=SIZE"]),
    ("plan-trainable-new-rows", lambda i: ["plan", "smollm2-135m", "--trainable", "new_rows"],
     ["--trainable 'new_rows'", "plan supports full | lora | embeddings"]),
]


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root (hidden ones too) -> 'dir' or its content hash."""
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(d, name), root)] = "dir"
        for name in files:
            p = os.path.join(d, name)
            out[os.path.relpath(p, root)] = hashlib.blake2b(Path(p).read_bytes(), digest_size=8).hexdigest()
    return out


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """What a call added (+), removed (-) or rewrote (~)."""
    return ([f"+ {p}" for p in sorted(after.keys() - before.keys())]
            + [f"- {p}" for p in sorted(before.keys() - after.keys())]
            + [f"~ {p}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]])


@pytest.mark.parametrize("build, phrases", [pytest.param(b, p, id=i) for i, b, p in ROWS])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(build, phrases, assets, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # relative outputs (runs/, tok/, ...) land in tmp_path and are in the snapshot
    argv = build(Inputs(assets))
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main(argv)  # an exception here is a traceback in the real CLI: the row fails with it
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit {code}: {err[-2000:]}"
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err[-2000:]
    missing = [p for p in phrases if p not in err]
    assert not missing, f"{missing} not in: {err}"
    written = changes(before, snapshot(tmp_path))
    assert not written, f"a failed command changed the disk: {written}"
