"""`jaxadapt eval --mc` agrees with lm-eval (`--model hf`) on a task over a local JSONL file, offline."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from evalhelpers import TEXTS

from jaxadapt.cli import main

TASK_YAML = """task: jaxadapt_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
  - metric: acc_bytes
"""


def items():
    """Contexts cut from the tokenizer's own texts, so choices differ in how familiar they look to the model."""

    out = []
    for i, t in enumerate(TEXTS * 3):
        cut = 8 + 3 * i % 17
        choices = [t[cut:cut + 6].strip() or "x", "Кошка", "de mat", "zqv"][: 2 + i % 3]
        out.append({"context": t[:cut] + (" " if i % 4 == 0 else ""), "choices": choices, "label": i % len(choices)})
    return out


def test_mc_agrees_with_lm_eval(tiny_dir, tmp_path, monkeypatch):
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    d, _ = tiny_dir
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items()))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_mc.yaml").write_text(TASK_YAML.format(items=data))
    ref = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": str(d), "dtype": "float32"},
                                  tasks=["jaxadapt_tiny_mc"], device="cpu", batch_size=8,
                                  task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False))
    ref = ref["results"]["jaxadapt_tiny_mc"]

    out = tmp_path / "res.json"
    assert main(["eval", str(d), "--mc", str(data), "--seq-len", "256", "--json", str(out)]) == 0
    ours = json.loads(out.read_text())["mc"]["items"]
    assert 0 < ours["acc"] < 1  # a random model: the comparison is not decided by the task
    for key in ("acc", "acc_norm", "acc_bytes"):
        assert ours[key] == ref[f"{key},none"], key
