"""A run dir is never lost or mixed up: one trainer at a time, resume only with the recorded config, corrupt
checkpoints set aside (not deleted) with a fallback to the previous step, no duplicate metrics rows, and a finished
run left alone. The real CLI, on the tiny model of conftest.py."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from trainhelpers import logged_losses, train_command

from jaxadapt.cli import main
from jaxadapt.errors import UserError
from jaxadapt.train.rundir import RunLock, truncate_metrics


@pytest.fixture(scope="module")
def six_steps(setup):
    """A finished 6-step run with checkpoints at 3 and 6, kept pristine: tests work on copies."""
    done = subprocess.run(train_command(setup, "six", "train.steps=6"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return setup, setup / "runs" / "six"


def _copy(six_steps, name):
    root, run = six_steps
    shutil.copytree(run, root / "runs" / name)
    return root, root / "runs" / name


def _train(capsys, root, name, *args):
    code = main(["train", str(root / "run.yaml"), f"name={name}", *args])
    return code, capsys.readouterr().err


def test_a_second_trainer_is_refused_with_the_holder(setup, capsys):
    run = setup / "runs" / "locked"
    with RunLock(run):
        code, err = _train(capsys, setup, "locked")
    assert code == 2 and "is in use by pid" in err and "wait for it" in err and len(err.strip().splitlines()) == 1
    assert not (run / "config.yaml").exists(), "the refused trainer wrote nothing"
    with RunLock(run):  # released when the holder leaves
        pass


def test_a_failed_start_leaves_no_run_dir_and_the_data_is_checked_before_the_weights(setup, capsys, tmp_path):
    broken = tmp_path / "broken"  # a model whose weights do not load
    shutil.copytree(setup / "model", broken)
    for f in broken.glob("*.safetensors"):
        f.write_bytes(b"not a checkpoint")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": "no text field"}\n' * 40)
    code, err = _train(capsys, setup, "bad-data", f"model.path={broken}", f"data.sources=[{{name: nl, paths: [{bad}]}}]")
    assert code == 2 and "bad.jsonl:1: no field 'text'" in err and len(err.strip().splitlines()) == 1, err
    code, err = _train(capsys, setup, "bad-weights", f"model.path={broken}")
    assert code == 2 and "safetensors" in err.strip().splitlines()[-1], err
    untokenized = tmp_path / "untokenized"  # weights but no tokenizer files
    shutil.copytree(setup / "model", untokenized, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens*"))
    code, err = _train(capsys, setup, "no-tokenizer", f"model.path={untokenized}")
    assert code == 2 and "has no tokenizer files and model.tokenizer is not set" in err
    assert not [n for n in ("bad-data", "bad-weights", "no-tokenizer") if (setup / "runs" / n).exists()]


def test_resume_refuses_another_model_and_needs_a_flag_for_other_changes(six_steps, capsys):
    root, run = _copy(six_steps, "changed")
    recorded = (run / "config.yaml").read_text()
    code, err = _train(capsys, root, "changed", "train.steps=6", "lora.rank=8")
    assert code == 2 and "lora.rank (4 -> 8)" in err and "another model or data stream" in err
    code, err = _train(capsys, root, "changed", "train.steps=6", "optim.learning_rate=0.02")
    assert code == 2 and "optim.learning_rate (0.01 -> 0.02)" in err and "--allow-config-change" in err
    assert (run / "config.yaml").read_text() == recorded, "a refused resume leaves the recorded config alone"

    rows = (run / "metrics.jsonl").read_text()
    code, err = _train(capsys, root, "changed", "train.steps=6")
    assert code == 0 and "already finished (6 of train.steps=6 steps)" in err
    assert (run / "metrics.jsonl").read_text() == rows, "a finished run is not evaluated again"

    code, err = _train(capsys, root, "changed", "train.steps=9", "--allow-config-change")
    assert code == 0 and "resumed" in err
    assert sorted(logged_losses(run)) == list(range(1, 10))
    history = [json.loads(line) for line in (run / "config_history.jsonl").read_text().splitlines()]
    assert history[0]["step"] == 6 and history[0]["changed"] == {"train.steps": {"from": 6, "to": 9}}
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["steps"] == 9


def _truncate_array(step_dir: Path):
    biggest = max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 3])


def _drop_meta(step_dir: Path):
    shutil.rmtree(step_dir / "meta")


@pytest.mark.parametrize("corrupt", [_truncate_array, _drop_meta], ids=["truncated-array", "missing-meta"])
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_step(six_steps, capsys, corrupt):
    root, run = _copy(six_steps, f"corrupt-{corrupt.__name__}")
    reference = logged_losses(run)
    corrupt(run / "checkpoints" / "6")
    code, err = _train(capsys, root, run.name, "train.steps=6")
    assert code == 0, err[-3000:]
    assert "checkpoint step 6 does not restore" in err and "resumed" in err and "from step 3" in err
    aside = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("corrupt-6-")]
    assert len(aside) == 1, "the bad step is kept aside, not deleted"
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == [3, 6]
    again = logged_losses(run)
    assert again == reference, "steps 4-6 retrained from step 3 give the same losses"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == sorted(set(steps)), "no duplicate metrics rows"


def test_the_config_history_names_the_step_actually_resumed_from(six_steps, capsys):
    root, run = _copy(six_steps, "changed-after-fallback")
    _drop_meta(run / "checkpoints" / "6")
    code, err = _train(capsys, root, run.name, "train.steps=7", "--allow-config-change")
    assert code == 0 and "from step 3" in err, err[-3000:]
    history = [json.loads(line) for line in (run / "config_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [3], "step 6 did not restore: the change took effect from step 3"


def test_a_run_moves_between_meshes(six_steps, capsys, tmp_path):
    """Trained on 8 devices as data=8; resumed as data=2, fsdp=2, tensor=2 without a flag (the mesh says where, not
    what); exported from that layout on 1 device and on 8, with the same weights."""
    from safetensors.numpy import load_file

    root, run = _copy(six_steps, "moved")
    reference = logged_losses(run)
    shutil.rmtree(run / "checkpoints" / "6")
    code, err = _train(capsys, root, run.name, "train.steps=6", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2")
    assert code == 0 and "from step 3" in err, err[-3000:]
    moved = logged_losses(run)
    assert sorted(moved) == list(range(1, 7))
    for step in (4, 5, 6):
        assert moved[step] == pytest.approx(reference[step], rel=1e-4), step
    history = [json.loads(line) for line in (run / "config_history.jsonl").read_text().splitlines()]
    assert history[-1]["step"] == 3 and history[-1]["changed"]["mesh.tensor"] == {"from": 1, "to": 2}

    assert main(["export", str(run), str(tmp_path / "on8")]) == 0
    one = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    done = subprocess.run([sys.executable, "-m", "jaxadapt.cli", "export", str(run), str(tmp_path / "on1")], env=one,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    on8, on1 = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("on8", "on1"))
    assert on8.keys() == on1.keys()
    for name in on8:
        np.testing.assert_allclose(on1[name], on8[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_no_restorable_checkpoint_is_one_clear_error(six_steps, capsys):
    root, run = _copy(six_steps, "all-corrupt")
    for step in ("3", "6"):
        _drop_meta(run / "checkpoints" / step)
    code, err = _train(capsys, root, run.name, "train.steps=6")
    assert code == 2 and "no checkpoint restores" in err.strip().splitlines()[-1]


def test_export_of_a_run_without_checkpoints_is_one_clear_error(six_steps, capsys, tmp_path):
    root, run = _copy(six_steps, "no-checkpoints")
    shutil.rmtree(run / "checkpoints")
    assert main(["export", str(run), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("checkpoints: no complete checkpoint") and len(err.splitlines()) == 1
    assert not (run / "checkpoints").exists(), "reading a run creates nothing in it"
    (run / "checkpoints").mkdir()
    assert main(["export", str(run), str(tmp_path / "hf"), "--step", "5"]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err


def test_metrics_rows_after_the_restored_step_are_dropped(tmp_path):
    rows = [{"step": s, "loss": 1.0} for s in (1, 2, 3, 4, 5)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "lo')
    assert truncate_metrics(tmp_path, 3) == 3
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_how_the_model_computes_may_change_on_resume(tmp_path):
    """Attention kernel, remat and attention chunks say how, not what (a run recorded before attention_impl
    defaulted to "auto" says null): a resume takes them without a flag; the compute dtype stays fixed."""
    from jaxadapt.train.rundir import check_resume

    recorded = {"model": {"path": "m", "attention_impl": None, "remat": "none", "attention_chunk": "auto",
                          "compute_dtype": "float32"}, "train": {"steps": 6}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(recorded))
    now = {**recorded, "model": {**recorded["model"], "attention_impl": "auto", "remat": "full", "attention_chunk": 0}}
    assert check_resume(tmp_path, now, 6, allow_changes=False) == {
        "model.attention_impl": (None, "auto"), "model.remat": ("none", "full"), "model.attention_chunk": ("auto", 0)}
    with pytest.raises(UserError, match=r"model.compute_dtype \('float32' -> 'bfloat16'\)"):
        check_resume(tmp_path, {**recorded, "model": {**recorded["model"], "compute_dtype": "bfloat16"}}, 6, False)
