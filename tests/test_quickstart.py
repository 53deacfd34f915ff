"""The quickstart end to end on a tiny model and tiny corpora (the real one runs SmolLM2 on Debian text)."""

import json

from tinymodels import build_tiny_lm
from transformers import AutoModelForCausalLM, AutoTokenizer

from jaxadapt.cli import main


def test_quickstart_on_a_tiny_model(tmp_path, capsys):
    model_dir = build_tiny_lm(tmp_path)
    out = tmp_path / "qs"
    args = ["quickstart", f"out={out}", f"model={model_dir}", f"target={tmp_path / 'nl.jsonl'}",
            f"replay={tmp_path / 'en.jsonl'}", "add_tokens=40", "steps=6", "batch_size=8", "seq_len=32",
            "eval_docs=4", "eval_seq_len=64", "validation_fraction=0.1", "max_new_tokens=5", "learning_rate=0.01",
            "prompt=hallo", f"ood_target={tmp_path / 'nl.jsonl'}", f"ood_source={tmp_path / 'en.jsonl'}",
            f"ood_other=[{tmp_path / 'ru.jsonl'}]", "eval_bytes=600", f"protect=[{tmp_path / 'en.jsonl'}]"]
    assert main(args) == 0
    summary = json.loads((out / "quickstart.json").read_text())
    bpb = summary["bits_per_byte"]
    assert set(bpb) == {"original", "adapted, step 0", "trained, step 6"}
    assert bpb["trained, step 6"]["target"] < bpb["adapted, step 0"]["target"]
    cpt = summary["chars_per_token"]
    assert cpt["after"]["target"] > 1.2 * cpt["before"]["target"]  # Dutch gets cheaper
    assert abs(cpt["after"]["replay"] - cpt["before"]["replay"]) < 0.1 * cpt["before"]["replay"]
    exported = AutoModelForCausalLM.from_pretrained(summary["paths"]["export"])
    assert exported.config.vocab_size % 128 == 0
    # Exactly 40 new tokens (the tiny base tokenizer's size depends on the tokenizers release that trained it).
    base_size = len(AutoTokenizer.from_pretrained(model_dir))
    assert len(AutoTokenizer.from_pretrained(summary["paths"]["export"])) == base_size + 40
    origin = json.loads((out / "tokenizer" / "jaxadapt_tokenizer.json").read_text())
    assert origin["protect"] == [str(tmp_path / "en.jsonl")]
    retention = summary["retention"]
    assert [(r["corpus"], r["role"]) for r in retention["rows"]] == [
        ("target", "target"), ("replay", "source"), ("target-ood", "target"), ("source-ood", "source"), ("ru", "other")]
    assert all(r["base_bpb"] == bpb["original"][r["corpus"]] for r in retention["rows"])
    assert retention["flagged"] == [r["corpus"] for r in retention["rows"] if r["change_pct"] > 2.0]
    for corpus in ("ru", "target"):
        sampled = [json.loads(line)["text"] for line in (out / f"eval_{corpus}.jsonl").read_text("utf-8").splitlines()]
        assert 590 <= sum(len(t.encode()) for t in sampled) <= 600, f"{corpus}: every eval corpus is capped at eval_bytes"
    printed = capsys.readouterr().out
    assert "bits per byte" in printed and "retention: original vs trained" in printed
    # Held-out documents were never trained on (same hash as the trainer's validation split).
    from jaxadapt.data.documents import held_out

    held = [json.loads(line)["text"] for line in (out / "eval_target.jsonl").read_text().splitlines()]
    assert held and all(held_out(t, 0.1) for t in held)
    # A re-run reuses every finished step.
    assert main(args) == 0
