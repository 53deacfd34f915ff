"""Retention evaluation: role-tagged corpora scored with an adapted model and its base, the comparison, the
report's --check, byte caps, generation metrics, and bad input caught before any model loads."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from tinymodels import build_tiny_lm

from jaxadapt.cli import main
from jaxadapt.eval.corpus import cap_bytes
from jaxadapt.eval.retention import compare


def test_compare_flags_only_getting_worse_beyond_threshold():
    base = {"src_bad": 1.0, "src_ok": 1.0, "nl_better": 2.0, "nl_worse": 2.0, "other_bad": 3.0}
    new = {"src_bad": 1.025, "src_ok": 1.019, "nl_better": 1.2, "nl_worse": 2.1, "other_bad": 3.3}
    roles = {"src_bad": "source", "src_ok": "source", "nl_better": "target", "nl_worse": "target",
             "other_bad": "other"}
    ret = compare(roles, base, new, threshold=2.0)
    assert ret["flagged"] == ["src_bad", "nl_worse", "other_bad"]  # +2.5%, +5%, +10%; +1.9% and -40% pass
    rows = {r["corpus"]: r for r in ret["rows"]}
    assert rows["src_ok"]["change_pct"] == pytest.approx(1.9) and not rows["src_ok"]["flagged"]
    assert rows["nl_better"]["change_pct"] == pytest.approx(-40) and rows["nl_better"]["role"] == "target"
    assert compare(roles, base, new, threshold=20.0)["flagged"] == []


def test_cap_bytes_cuts_at_a_character_boundary():
    assert cap_bytes(["ab", "  ", "cd", "ef"], 0) == ["ab", "cd", "ef"]  # 0: all (blank documents dropped)
    assert cap_bytes(["ab", "  ", "cdef", "gh"], 5) == ["ab", "cde"]  # the blank one uses no budget
    assert cap_bytes(["ab", "éé"], 3) == ["ab"]  # "é" is 2 bytes: half of one is dropped, not broken
    assert cap_bytes(["привет мир"], 7) == ["при"]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """(root with en/nl/ru.jsonl and prompts.jsonl, good model, its identical copy, a damaged copy). The damaged copy's
    LM head is scaled up 1000x: the tiny random model predicts about uniformly (its norm weights are random and small
    too, so its logits are tiny), and sharpening its random predictions makes every corpus sure to score worse. The
    damaged copy also claims 300 of its 330 ids as the old vocabulary (adaptation.json), for %Gen."""
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("retention")
    good = build_tiny_lm(root, docs_per_lang=20)
    same, damaged = root / "same", root / "damaged"
    shutil.copytree(good, same)
    shutil.copytree(good, damaged)
    weights = load_file(damaged / "model.safetensors")
    weights["lm_head.weight"] = weights["lm_head.weight"] * 1000
    save_file({k: v.contiguous() for k, v in weights.items()}, damaged / "model.safetensors", metadata={"format": "pt"})
    (damaged / "adaptation.json").write_text(json.dumps({"old_vocab_size": 300}))
    prompts = ["Hoe gaat het?", "Wat is een fiets?", "Vertel over de molen.", "Waar is de gracht?"]
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return root, good, same, damaged


def roles_args(root):
    return ["--target", f"nl={root / 'nl.jsonl'}", "--source", f"en={root / 'en.jsonl'}",
            "--other", f"ru={root / 'ru.jsonl'}", "--seq-len", "32", "--max-bytes", "800"]


def test_retention_end_to_end(lm, tmp_path, capsys):
    root, good, same, damaged = lm
    for model, name in ((damaged, "damaged"), (same, "same")):
        assert main(["eval", str(model), *roles_args(root), "--base", str(good), "--json",
                     str(tmp_path / f"{name}.json")]) == 0
    res = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in ("damaged", "same")}
    for r in res.values():
        assert r["roles"] == {"nl": "target", "en": "source", "ru": "other"}
        assert r["base"]["model"] == str(good) and set(r["base"]["bpb"]) == set(r["bpb"]) == {"nl", "en", "ru"}
        assert [row["corpus"] for row in r["retention"]["rows"]] == ["nl", "en", "ru"]
        assert r["retention"]["threshold_pct"] == 2.0
        # --max-bytes: the word-salad corpora are far larger than the cap; English is ASCII, so the cut is exact
        assert r["bpb"]["en"]["bytes"] == r["base"]["bpb"]["en"]["bytes"] == 800
        assert all(790 <= m["bytes"] <= 800 for m in r["bpb"].values())
    assert res["damaged"]["retention"]["flagged"] == ["nl", "en", "ru"]
    assert all(row["change_pct"] > 50 for row in res["damaged"]["retention"]["rows"])
    assert res["same"]["retention"]["flagged"] == []
    assert all(abs(row["change_pct"]) < 1e-6 for row in res["same"]["retention"]["rows"])
    assert "REGRESSED" in capsys.readouterr().out

    report = tmp_path / "report"
    assert main(["report", str(tmp_path / "damaged.json"), "--out", str(report), "--check"]) == 1
    out, err = capsys.readouterr()
    assert "damaged.json: REGRESSED: nl" in out and err.strip().startswith("check failed:")
    assert len(err.strip().splitlines()) == 1
    assert main(["report", str(tmp_path / "same.json"), "--out", str(report), "--check", "--overwrite"]) == 0
    assert main(["report", str(tmp_path / "damaged.json"), str(tmp_path / "same.json"), "--out", str(report),
                 "--overwrite"]) == 0
    md = (report / "README.md").read_text()
    assert "## Retention (base vs adapted)" in md and "| corpus | role | base bpb | adapted bpb | change % | flag |" in md
    assert "| en | source |" in md and "REGRESSED |" in md and "| +0.00 | ok |" in md


def test_base_scored_once_and_reused_from_its_json(lm, tmp_path, capsys):
    root, good, _, damaged = lm
    base_json, direct, reused = tmp_path / "base.json", tmp_path / "direct.json", tmp_path / "reused.json"
    assert main(["eval", str(good), *roles_args(root), "--json", str(base_json)]) == 0
    assert main(["eval", str(damaged), *roles_args(root), "--base", str(good), "--json", str(direct)]) == 0
    assert main(["eval", str(damaged), *roles_args(root), "--base", str(base_json), "--json", str(reused)]) == 0
    direct, reused = json.loads(direct.read_text()), json.loads(reused.read_text())
    assert reused["retention"] == direct["retention"] and reused["base"]["from"] == str(base_json)
    assert reused["base"]["bpb"] == direct["base"]["bpb"] and reused["base"]["model"] == str(good)
    capsys.readouterr()
    for args, message in ((["--max-bytes", "700"], "'nl' was scored on other text"),
                          (["--seq-len", "16"], "scored with seq_len=32, this eval uses 16"),
                          (["--bpb", f"de={root / 'nl.jsonl'}"], "has no results for 'de'")):
        assert main(["eval", str(damaged), *roles_args(root), *args, "--base", str(base_json)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_generation_metrics(lm, tmp_path):
    root, good, _, damaged = lm
    out = tmp_path / "gen.json"
    assert main(["eval", str(damaged), "--base", str(good), "--generate", str(root / "prompts.jsonl"), "--lang", "nl",
                 "--max-new-tokens", "6", "--json", str(out)]) == 0  # generation alone is something to evaluate
    res = json.loads(out.read_text())
    assert res["bpb"] == {} and res["retention"]["rows"] == []
    for gen, adapted in ((res["generation"], True), (res["base"]["generation"], False)):
        assert gen["prompts"] == 4 and gen["lang"] == "nl" and gen["chat"] is True
        assert 0.0 <= gen["code_switching"] <= 1.0
        assert len(gen["samples"]) == 3 and all(isinstance(t, str) for t in gen["samples"])
        if adapted:  # None only if every reply was empty
            assert gen["gen_share"] is None or 0.0 <= gen["gen_share"] <= 1.0
        else:  # the base has no adaptation.json
            assert gen["gen_share"] is None


@pytest.fixture
def no_model_loads(monkeypatch):
    def boom(spec, *args):
        raise AssertionError(f"a model ({spec}) was loaded before the inputs were checked")

    monkeypatch.setattr("jaxadapt.modelref.open_model", boom)


def test_bad_inputs_fail_before_loading(tmp_path, capsys, no_model_loads):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"text": "Ik fiets naar huis."}) + "\n")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "Hoi"}) + "\n")
    ok = f"nl={corpus}"
    cases = [(["--target", ok, "--source", ok], "--source 'nl=", "the name 'nl' is given twice"),
             (["--bpb", ok, "--other", ok], "--bpb 'nl=", "given twice"),
             (["--target", ok, "--other", f"ru={tmp_path / 'missing.jsonl'}"], "--other ru: ", "no such file"),
             (["--target", ok, "--base", "b", "--threshold", "-1"], "--threshold -1.0", "a percentage >= 0"),
             (["--target", ok, "--max-bytes", "-5"], "--max-bytes -5", ">= 0"),
             (["--target", ok, "--generate", str(prompts)], f"--generate {prompts}", "needs --lang"),
             (["--target", ok, "--generate", str(prompts), "--lang", "xx"], "--lang 'xx'", "expected one of"),
             (["--target", ok, "--generate", str(tmp_path / "none.jsonl"), "--lang", "nl"], "--generate ",
              "no such prompts file"),
             (["--target", ok, "--lang", "nl"], "--lang nl", "only used with --generate")]
    for args, *messages in cases:
        code = main(["eval", str(tmp_path / "no-model"), *args])
        err = capsys.readouterr().err
        assert code == 2 and all(m in err for m in messages) and len(err.strip().splitlines()) == 1, (args, err)


@pytest.mark.parametrize("lr, flagged", [(0.5, True), (1e-6, False)])
def test_report_check_flags_a_damaging_training_run_and_passes_a_gentle_one(lm, tmp_path, capsys, lr, flagged):
    """A real `jaxadapt train` run on the Dutch corpus: plain AdamW at lr 0.5 on every embedding row wrecks the
    English and Russian scores; at 1e-6 nothing moves measurably."""
    root, good, _, _ = lm
    cfg = {"name": "run", "runs_root": str(tmp_path), "model": {"path": str(good)},
           "train": {"trainable": "embeddings", "steps": 5, "batch_size": 8, "seq_len": 32, "log_every": 5},
           "optim": {"learning_rate": lr, "schedule": "constant"}, "checkpoint": {"every": 5},
           "logging": {"tensorboard": False},
           "data": {"sources": [{"name": "nl", "paths": [str(root / "nl.jsonl")]}], "prefetch": 0,
                    "validation_fraction": 0.0}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "run.yaml")]) == 0
    out = tmp_path / "eval.json"
    assert main(["eval", str(tmp_path / "run"), "--base", str(good), *roles_args(root), "--json", str(out)]) == 0
    rows = {r["corpus"]: r for r in json.loads(out.read_text())["retention"]["rows"]}
    assert (rows["en"]["flagged"] and rows["ru"]["flagged"]) == flagged
    assert all(abs(r["change_pct"]) < 0.5 for r in rows.values()) or flagged
    capsys.readouterr()
    assert main(["report", str(out), "--out", str(tmp_path / "report"), "--check"]) == (1 if flagged else 0)
