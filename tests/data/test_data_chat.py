"""SFT masks cover exactly the assistant replies (decoded back and compared); DPO rows pair up the right replies."""

from __future__ import annotations

import numpy as np
import pytest
from datahelpers import make_docs, write_jsonl

from jaxadapt.data import DataConfig, SourceConfig, build_eval_batches, build_train_iterator
from jaxadapt.data.chat import EncodeChats, EncodePreferences
from jaxadapt.errors import UserError

END = "<|im_end|>"


def spans(mask: np.ndarray) -> list[slice]:
    """Maximal runs of 1 in a 0/1 vector."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return [slice(a, b) for a, b in zip(edges[::2], edges[1::2])]


def replies_of(tokenizer, targets, mask) -> list[str]:
    return [tokenizer.decode(targets[s].tolist()) for s in spans(mask)]


RECORDS = [
    {"messages": [{"role": "system", "content": "Je bent behulpzaam."},
                  {"role": "user", "content": "Wat is een gracht?"},
                  {"role": "assistant", "content": "Een kanaal in de stad."},
                  {"role": "user", "content": "En een molen?"},
                  {"role": "assistant", "content": " Die maalt graan.\n"}]},
    {"instruction": "Vertaal naar het Engels", "input": "kaas", "output": "cheese"},
    {"instruction": "Noem een dier", "output": "een kat"},
    {"prompt": "Hoe gaat het?", "response": "Goed, dank je! café naïef"},
]
REPLIES = [["Een kanaal in de stad." + END, " Die maalt graan.\n" + END], ["cheese" + END], ["een kat" + END],
           ["Goed, dank je! café naïef" + END]]


def test_sft_mask_is_exactly_the_assistant_replies(tokenizer):
    enc = EncodeChats(tokenizer, seq_len=512, batch=8, with_bytes=True)
    examples = enc.flat_map([{"doc": r, "where": f"x:{i}"} for i, r in enumerate(RECORDS)])
    for ex, want in zip(examples, REPLIES):
        assert replies_of(tokenizer, ex["targets"], ex["loss_mask"]) == want
        assert ex["num_bytes"].sum() == sum(len(w.encode()) for w in want)
        full = tokenizer.decode(np.concatenate([ex["input_ids"][:1], ex["targets"]]).tolist())
        assert full.startswith("<|im_start|>")  # the template, not our own formatting


def test_sft_mask_with_the_real_smollm2_template():
    """SmolLM2's own template (it adds a default system turn) masks exactly the replies too."""
    from transformers import AutoTokenizer

    from jaxadapt.assets import smollm2_dir

    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    examples = EncodeChats(tok, seq_len=512, batch=8, with_bytes=False).flat_map(
        [{"doc": r, "where": f"x:{i}"} for i, r in enumerate(RECORDS)])
    for ex, want in zip(examples, REPLIES):
        assert replies_of(tok, ex["targets"], ex["loss_mask"]) == want
    assert "You are a helpful AI assistant named SmolLM" in tok.decode(examples[1]["input_ids"].tolist())


def test_sft_rows_through_the_pipeline(tmp_path, tokenizer):
    qs, rs = make_docs(60, seed=11, max_words=15), make_docs(60, seed=12, max_words=25)
    write_jsonl(tmp_path / "c.jsonl", [{"prompt": q, "response": r} for q, r in zip(qs, rs)])
    cfg = DataConfig(sources=(SourceConfig("c", (str(tmp_path / "c.jsonl"),)),), task="sft", seq_len=96,
                     batch_size=4, packing_bins=4, validation_fraction=0.5)
    got = []
    for b in build_eval_batches(cfg, tokenizer)["c"]:
        for r in range(len(b["targets"])):
            seg = b["segment_ids"][r]
            for s in set(seg.tolist()) - {0}:
                m = seg == s
                assert (b["positions"][r][m] == np.arange(m.sum())).all()
                got += replies_of(tokenizer, b["targets"][r][m], b["loss_mask"][r][m])
    from jaxadapt.data.documents import held_out

    want = [r + END for q, r in zip(qs, rs) if held_out({"prompt": q, "response": r}, 0.5)]
    assert sorted(got) == sorted(want) and len(want) > 10
    it = build_train_iterator(cfg, tokenizer)
    b = next(it)
    it.close()
    assert b["loss_mask"].shape == (4, 96) and 0 < b["loss_mask"].mean() < 1


def test_dpo_pairs_are_aligned(tmp_path, tokenizer):
    rows = [{"prompt": f"vraag {i}: " + q, "chosen": f"goed {i} " + c, "rejected": f"slecht {i} " + r}
            for i, (q, c, r) in enumerate(zip(*(make_docs(30, seed=s, max_words=10) for s in (1, 2, 3))))]
    rows[0] = {"prompt": [{"role": "user", "content": rows[0]["prompt"]}],
               "chosen": [{"role": "user", "content": rows[0]["prompt"]}, {"role": "assistant", "content": "ja"}],
               "rejected": "nee"}
    by_chosen = {(r["chosen"] if isinstance(r["chosen"], str) else "ja"): r for r in rows}
    write_jsonl(tmp_path / "p.jsonl", rows)
    cfg = DataConfig(sources=(SourceConfig("p", (str(tmp_path / "p.jsonl"),)),), task="dpo", seq_len=64,
                     batch_size=6, validation_fraction=0.0, shuffle_buffer=8)
    it = build_train_iterator(cfg, tokenizer)
    batch = next(it)
    it.close()
    assert batch["chosen_input_ids"].shape == batch["rejected_input_ids"].shape == (6, 64)
    for r in range(6):
        chosen, = replies_of(tokenizer, batch["chosen_targets"][r], batch["chosen_loss_mask"][r])
        rejected, = replies_of(tokenizer, batch["rejected_targets"][r], batch["rejected_loss_mask"][r])
        record = by_chosen[chosen.removesuffix(END)]
        want_rejected = record["rejected"]
        assert rejected == want_rejected + END
        start = int(np.argmax(batch["chosen_loss_mask"][r]))
        assert start == int(np.argmax(batch["rejected_loss_mask"][r]))
        assert (batch["chosen_input_ids"][r][:start + 1] == batch["rejected_input_ids"][r][:start + 1]).all()
        for side in ("chosen", "rejected"):
            n = int((batch[f"{side}_segment_ids"][r] > 0).sum())
            assert (batch[f"{side}_positions"][r][:n] == np.arange(n)).all()


@pytest.mark.parametrize("record,message", [
    ({"question": "x"}, (r"x:7: a chat record needs 'messages', 'instruction'\+'output' or 'prompt'\+'response' "
                         r"\(fields: question\)")),
    ({"messages": [{"role": "user", "content": "hoi"}]}, "x:7: the conversation has no assistant message"),
    ({"messages": [{"role": "user"}]}, "x:7: every message needs string 'role' and 'content'"),
])
def test_bad_chat_records_name_their_line(tokenizer, record, message):
    with pytest.raises(UserError, match=message):
        EncodeChats(tokenizer, seq_len=64, batch=1, with_bytes=False).flat_map([{"doc": record, "where": "x:7"}])


def test_dpo_record_needs_all_three_fields(tokenizer):
    with pytest.raises(UserError, match="x:3: a preference record needs .* \\(missing: rejected\\)"):
        EncodePreferences(tokenizer, seq_len=64, batch=1).flat_map([{"doc": {"prompt": "a", "chosen": "b"},
                                                                      "where": "x:3"}])
