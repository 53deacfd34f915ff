"""Bad input to `jaxadapt eval` / `report`: one clear line naming the file, line or value, exit 2."""

from __future__ import annotations

import json

import pytest

from jaxadapt.cli import main


@pytest.fixture
def task(tmp_path):
    def write(*lines):
        path = tmp_path / "task.jsonl"
        path.write_text("".join(line + "\n" for line in lines))
        return path

    return write


GOOD = json.dumps({"context": "The sky is", "choices": ["blue", "green"], "label": 0})


def run(capsys, *args):
    code = main(list(map(str, args)))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("lines,message", [
    ((GOOD, "{not json"), ":2: invalid JSON"),
    ((GOOD, json.dumps({"context": "x", "choices": ["a", "b"], "label": 2})), ":2: 'label' must be an integer in [0, 1]"),
    ((json.dumps({"context": "x", "choices": ["a"], "label": 0}),), ":1: 'choices' must be a list of at least 2"),
    ((json.dumps({"choices": ["a", "b"], "label": 0}),), ":1: 'context' must be a string"),
    (("",), "no items"),
])
def test_bad_task(tiny_dir, task, capsys, lines, message):
    path = task(*lines)
    code, err = run(capsys, "eval", tiny_dir[0], "--mc", path)
    assert code == 2 and str(path) in err and message in err and len(err.strip().splitlines()) == 1


def test_bad_bpb(tiny_dir, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"text": "   "}) + "\n")
    cases = [(["--bpb", "nl:corpus.txt"], "expected NAME=PATH"),
             (["--bpb", f"nl={empty}"], "--bpb nl: no non-empty text"),
             (["--bpb", f"nl={tmp_path / 'missing.txt'}"], "no such file"),
             (["--bpb", f"nl={empty}", "--stride", "2000"], "--stride 2000"),
             (["--bpb", f"nl={empty}", "--logits-chunk", "48"], "--logits-chunk 48: expected 0"),
             (["--bpb", f"nl={empty}", "--attention-chunk", "-4"], "--attention-chunk -4: expected 0"),
             ([], "nothing to evaluate")]
    for args, message in cases:
        code, err = run(capsys, "eval", tiny_dir[0], *args)
        assert code == 2 and message in err, (args, err)


def test_bad_report(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    code, err = run(capsys, "report", tmp_path / "run", "--out", tmp_path / "r")
    assert code == 2 and "no metrics.jsonl" in err
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"loss": 1.0}\n')
    code, err = run(capsys, "report", tmp_path / "run", "--out", tmp_path / "r")
    assert code == 2 and "metrics.jsonl:2: expected a JSON object with a 'step'" in err
    assert not (tmp_path / "r").exists()
