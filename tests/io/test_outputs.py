"""Output paths through the real commands: a user's files are never deleted, inputs never overwritten."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from jaxadapt.cli import main
from jaxadapt.errors import UserError
from jaxadapt.io.atomic import check_file_output, check_output


def _fails(capsys, argv, *phrases):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    for p in phrases:
        assert p in err, err


def _model(hf_dir, capsys):
    src, _ = hf_dir("llama_mqa")
    capsys.readouterr()  # transformers' save progress bar
    return src


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_convert_refuses_a_non_empty_dir_and_overwrite_keeps_other_files(hf_dir, tmp_path, capsys):
    src = _model(hf_dir, capsys)
    out = tmp_path / "out"
    (out / "src").mkdir(parents=True)
    (out / "src" / "train.py").write_text("my code")
    (out / "config.json").write_text("{}")
    before = _tree(tmp_path)
    _fails(capsys, ["convert", str(src), str(out)], str(out), "not empty", "config.json, src", "--overwrite")
    assert _tree(tmp_path) == before and (out / "config.json").read_text() == "{}"
    assert main(["convert", str(src), str(out), "--overwrite"]) == 0
    assert (out / "src" / "train.py").read_text() == "my code", "files the command does not write are kept"
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary dir left behind"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["convert", str(src), str(empty)]) == 0, "an empty dir is not refused"


@pytest.mark.parametrize("where", ["same", "parent"])
def test_an_output_that_is_or_contains_an_input_is_refused_even_with_overwrite(hf_dir, tmp_path, capsys, where):
    src = _model(hf_dir, capsys)
    out = src if where == "same" else src.parent
    before = _tree(src)
    _fails(capsys, ["convert", str(src), str(out), "--overwrite"], str(src), "is" if where == "same" else "contains")
    assert _tree(src) == before


def test_outputs_that_cannot_be_directories(hf_dir, tmp_path, capsys):
    src = _model(hf_dir, capsys)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _fails(capsys, ["convert", str(src), str(blocker)], str(blocker), "is a file")
    _fails(capsys, ["convert", str(src), str(blocker / "out")], str(blocker), "is a file")
    assert blocker.read_text() == "x"


def test_eval_json_is_checked_before_scoring(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _fails(capsys, ["eval", str(tmp_path / "no-model"), "--json", str(blocker / "r.json")], "--json", "is a file")
    _fails(capsys, ["eval", str(tmp_path / "no-model"), "--json", str(tmp_path)], "--json", "is a directory")


def test_every_writing_command_refuses_a_non_empty_output(tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(40)))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for argv in (["data", "split", str(corpus), "--out", str(out)],
                 ["tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "300", "--out", str(out)],
                 ["tokenizer", "extend", "--base", str(tmp_path), "--corpus", str(corpus), "--add", "5",
                  "--out", str(out)],
                 ["vocab", "adapt", "--model", str(tmp_path / "m"), "--tokenizer", str(tmp_path / "t"),
                  "--out", str(out)],
                 ["export", str(tmp_path / "run"), str(out)],
                 ["report", str(tmp_path / "run"), "--out", str(out)],
                 ["propagate", "--base", "b", "--donor", "d", "--target", "t", "--out", str(out)]):
        _fails(capsys, argv, str(out), "not empty")
    assert _tree(out) == ["keep.txt"]
    assert main(["data", "split", str(corpus), "--out", str(out), "--overwrite"]) == 0
    assert _tree(out) == ["heldout.jsonl", "keep.txt", "split.json", "train.jsonl"]


def _as_nobody(checks) -> list[str]:
    """Each check's UserError message (or 'accepted') from a forked child that runs as `nobody` when we are root:
    root may write anywhere, so only an unprivileged user sees a read-only dir as such."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no jax, no threads of its own; only the path checks, then out
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            lines = []
            for check in checks:
                try:
                    check()
                    lines.append("accepted")
                except UserError as e:
                    lines.append(str(e))
            os.write(write, "\n".join(lines).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        out = fh.read()
    os.waitpid(pid, 0)
    return out.splitlines()


# The child runs only path checks of modules already imported and exits with os._exit: no lock JAX's threads may
# hold is ever taken, so the fork warning does not apply.
@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called")
def test_a_read_only_parent_is_refused_before_any_work():
    root = Path(tempfile.mkdtemp(dir="/tmp"))  # a dir `nobody` can reach (pytest's tmp_path is root's alone)
    try:
        root.chmod(0o755)
        ro = root / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        got = _as_nobody([lambda: check_output(ro / "out" / "model"), lambda: check_file_output(ro / "r.json")])
        assert got == [f"output {ro / 'out' / 'model'}: {ro} is not writable",
                       f"output {ro / 'r.json'}: {ro} is not writable"]
        assert list(ro.iterdir()) == []
    finally:
        shutil.rmtree(root)
