"""Self-calibration after propagation (METHODS.md §4): the original instruct model (teacher) answers a prompt
set greedily, and the propagated model (student) is LoRA-tuned on those answers, so it recovers what the new
embeddings lost without any instruction data in the target language. With `data=` the same command is
continued instruction tuning on a user's chat dataset (no teacher needed).

Defaults are the paper's calibration setup: LoRA r=8, alpha=1 on the first and last layers, embeddings and LM
head trainable, lr 2.5e-5, weight decay 0.1. Any of them can be overridden with dotted `key=value` overrides,
exactly as for `jaxadapt train`.
"""

from __future__ import annotations

import json
from pathlib import Path

from jaxadapt import fs
from jaxadapt.config.loader import load_config
from jaxadapt.errors import UserError
from jaxadapt.fs import atomic_file
from jaxadapt.train.config import RunConfig

DEFAULTS = {
    "train": {"trainable": "lora+embeddings", "objective": "sft", "steps": 100, "batch_size": 8, "seq_len": 1024},
    "data": {"task": "sft", "validation_fraction": 0},
    "lora": {"rank": 8, "alpha": 1, "layers": [0, -1], "dropout": 0.0},
    "optim": {"learning_rate": 2.5e-5, "weight_decay": 0.1, "schedule": "cosine"},
}


def read_prompts(path) -> list[str]:
    """A JSONL file with a `prompt` field per line, or a text file with one prompt per line (local or a URL)."""
    p = str(path)
    if not fs.isfile(p):
        raise UserError(f"{p}: no such prompts file")
    prompts = []
    for n, line in enumerate(fs.read_text(p).splitlines(), 1):
        if not line.strip():
            continue
        if p.endswith(".jsonl"):
            try:
                prompts.append(str(json.loads(line)["prompt"]))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise UserError(f"{p}:{n}: expected a JSON object with a 'prompt' field ({e})") from None
        else:
            prompts.append(line.strip())
    if not prompts:
        raise UserError(f"{p}: no prompts")
    return prompts


def teacher_answers(teacher: str, prompts: list[str], out: Path, max_new_tokens: int = 256,
                    batch_size: int = 8) -> tuple[int, int]:
    """Greedy chat answers of the teacher as an SFT JSONL (`messages`); empty answers are dropped.
    Returns (kept, dropped)."""
    from jaxadapt.generate import generate, load_for_generation

    model, tokenizer, eos = load_for_generation(teacher)
    answers = generate(model, tokenizer, prompts, chat=True, max_new_tokens=max_new_tokens, batch_size=batch_size,
                       eos_ids=eos)
    kept = [(p, a.strip()) for p, a in zip(prompts, answers) if a.strip()]
    if not kept:
        raise UserError(f"the teacher {teacher} gave no non-empty answer to the {len(prompts)} prompts")
    with atomic_file(out, encoding="utf-8") as fh:
        for p, a in kept:
            fh.write(json.dumps({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}]},
                                ensure_ascii=False) + "\n")
    return len(kept), len(prompts) - len(kept)


def calibrate(student: str, *, teacher: str | None = None, prompts=None, data=None, runs_root: str = "runs",
              name: str = "calibrate", overrides=(), max_new_tokens: int = 256) -> Path:
    """Tune `student` on the teacher's answers to `prompts` (or on `data`); returns the run dir."""
    from jaxadapt.train.loop import train

    if (data is None) == (prompts is None):
        raise UserError("give --prompts (self-calibration with a --teacher) or --data (instruction tuning), not both")
    run_dir = fs.path(runs_root) / name
    if data is None:
        if teacher is None:
            raise UserError("--prompts needs --teacher: the model whose answers the student learns")
        data = run_dir / "teacher_answers.jsonl"
        if not data.exists():  # a re-run (e.g. after preemption) reuses the answers and resumes training
            kept, dropped = teacher_answers(teacher, read_prompts(prompts), data, max_new_tokens)
            print(f"teacher answered {kept} prompts ({dropped} empty answers dropped) -> {data}")
    elif not fs.exists(str(data)):
        raise UserError(f"--data {data}: no such file")
    run = {**DEFAULTS, "model": {"path": str(student)}, "runs_root": str(runs_root), "name": name,
           "data": {**DEFAULTS["data"], "sources": [{"name": "sft", "paths": [str(data)]}]}}
    cfg = load_config(RunConfig, run, overrides, source="calibrate's defaults")
    return train(cfg)
