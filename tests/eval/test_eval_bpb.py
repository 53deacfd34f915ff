"""Bits per byte against an independent transformers (torch) computation with the same windows, and a
multiple-choice task that a real model cannot get wrong."""

from __future__ import annotations

import json
import math

import pytest
from evalhelpers import TEXTS

from jaxadapt.cli import main


def torch_bpb(model, tokenizer, texts, seq_len, stride):
    """HF's perplexity-guide loop: windows of seq_len inputs every `stride` tokens, labels already scored -> -100."""
    import torch
    import torch.nn.functional as F

    nll = tokens = nbytes = 0.0
    for text in texts:
        ids = torch.tensor([tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"])
        n_targets, scored_until = len(ids) - 1, 0
        for begin in range(0, n_targets, stride):
            end = min(begin + seq_len, n_targets)
            labels = ids[begin + 1:end + 1].clone()
            labels[:max(scored_until - begin, 0)] = -100
            with torch.no_grad():
                logits = model(ids[None, begin:end]).logits[0].double()
            nll += F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum").item()
            tokens += int((labels != -100).sum())
            scored_until = end
            if end == n_targets:
                break
        nbytes += len(text.encode())
    return nll / nbytes / math.log(2), math.exp(nll / tokens)


def write_corpus(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


@pytest.mark.parametrize("seq_len,stride,chunk", [(16, 16, 0), (16, 5, 4)])
def test_bpb_matches_transformers_tiny(tiny_dir, tmp_path, seq_len, stride, chunk):
    """chunk 4: the LM head and softmax run 4 positions at a time, and each layer's attention 4 queries at a time,
    on windows padded to 8 or 16."""
    from transformers import AutoTokenizer

    d, torch_model = tiny_dir
    corpus = write_corpus(tmp_path / "c.jsonl", TEXTS)
    out = tmp_path / "res.json"
    assert main(["eval", str(d), "--bpb", f"mixed={corpus}", "--seq-len", str(seq_len), "--stride", str(stride),
                 "--batch-size", "3", "--logits-chunk", str(chunk), "--attention-chunk", str(chunk),
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())["bpb"]["mixed"]
    bpb, ppl = torch_bpb(torch_model, AutoTokenizer.from_pretrained(d), TEXTS, seq_len, stride)
    assert res["bytes"] == sum(len(t.encode()) for t in TEXTS)
    assert abs(res["bpb"] / bpb - 1) <= 1e-3 and abs(res["ppl"] / ppl - 1) <= 1e-3


@pytest.fixture(scope="module")
def smollm2():
    from jaxadapt.eval.scorer import Scorer
    from jaxadapt.modelref import open_model

    opened = open_model("smollm2")
    return Scorer(opened.model, opened.mesh, batch_size=8), opened.tokenizer


def test_bpb_matches_transformers_smollm2(smollm2):
    """Real SmolLM2 on real Dutch text: two documents, cut to 400 characters, overlapping windows of 96."""
    from transformers import AutoModelForCausalLM

    from jaxadapt.assets import smollm2_dir
    from jaxadapt.data.debian import corpus
    from jaxadapt.data.split import read_texts
    from jaxadapt.eval.bpb import corpus_bpb

    texts = [t[:400] for t in read_texts("nl", str(corpus("nl")), max_docs=2)]
    scorer, tokenizer = smollm2
    res = corpus_bpb(scorer, tokenizer, texts, seq_len=96, stride=48)
    bpb, ppl = torch_bpb(AutoModelForCausalLM.from_pretrained(smollm2_dir()).eval(), tokenizer, texts, 96, 48)
    assert abs(res["bpb"] / bpb - 1) <= 1e-3 and abs(res["ppl"] / ppl - 1) <= 1e-3
    assert 0.3 < res["bpb"] < 3  # a real model on real text, not noise


def test_multiple_choice_forced_smollm2(smollm2, tmp_path):
    from jaxadapt.eval.mc import read_task, score_task

    items = [("The capital of France is", ["Paris", "xq zvb"], 0),
             ("One, two, three, four,", ["qwfp jlu", "five"], 1),
             ("Monday, Tuesday, Wednesday,", ["Thursday", "zzkx pqj"], 0),
             ("The opposite of hot is", ["vbnq", "cold"], 1)]
    task = tmp_path / "forced.jsonl"
    task.write_text("".join(json.dumps({"context": c, "choices": ch, "label": y}) + "\n" for c, ch, y in items))
    scorer, tokenizer = smollm2
    res = score_task(scorer, tokenizer, read_task(task), seq_len=64)
    assert res == {"items": 4, "acc": 1.0, "acc_norm": 1.0, "acc_bytes": 1.0, "fewshot": 0}
