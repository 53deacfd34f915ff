"""`jaxadapt eval`: load a model once, score every --bpb corpus and --mc task, print a table, optionally save JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

from jaxadapt.errors import UserError

_SPEC = re.compile(r"([\w.-]+)=(.+)")


def parse_bpb(specs: list[str]) -> dict[str, str]:
    """NAME=PATH pairs (names unique) -> {name: path}."""
    out: dict[str, str] = {}
    for spec in specs:
        m = _SPEC.fullmatch(spec)
        if not m:
            raise UserError(f"--bpb {spec!r}: expected NAME=PATH (NAME of letters, digits, '.', '_', '-')")
        if m[1] in out:
            raise UserError(f"--bpb {spec!r}: the name {m[1]!r} is given twice")
        out[m[1]] = m[2]
    return out


def run_eval(model: str, bpb: list[str], mc: list[str], seq_len: int = 1024, stride: int | None = None,
             batch_size: int = 8, fewshot: int = 0, max_docs: int = 0, logits_chunk: int | None = None,
             attention_chunk: int | None = None) -> dict:
    """{"model", "bpb": {name: metrics}, "mc": {task: metrics}}; every input is checked before the model loads."""
    from jaxadapt.data.split import read_texts
    from jaxadapt.eval.bpb import corpus_bpb
    from jaxadapt.eval.load import load_for_eval
    from jaxadapt.eval.mc import read_task, score_task
    from jaxadapt.eval.scorer import Scorer, check_chunk

    if seq_len < 1 or batch_size < 1:
        raise UserError(f"--seq-len {seq_len} / --batch-size {batch_size}: both must be >= 1")
    check_chunk(logits_chunk, "--logits-chunk")
    check_chunk(attention_chunk, "--attention-chunk")
    if stride is not None and not 1 <= stride <= seq_len:
        raise UserError(f"--stride {stride}: expected 1 <= stride <= --seq-len ({seq_len})")
    corpora = {name: read_texts(name, path, max_docs) for name, path in parse_bpb(bpb).items()}
    tasks = {Path(p).stem: read_task(p) for p in mc}
    if len(tasks) < len(mc):
        raise UserError(f"--mc {' '.join(mc)}: task names (file stems) must be unique")
    if not corpora and not tasks:
        raise UserError("nothing to evaluate: give at least one --bpb NAME=PATH or --mc TASK.jsonl")
    from jaxadapt.train.distributed import maybe_initialize

    maybe_initialize()  # a TPU pod / SLURM job / JAXADAPT_COORDINATOR: every process scores, all agree
    net, tokenizer, mesh = load_for_eval(model)
    scorer = Scorer(net, mesh, batch_size, logits_chunk, attention_chunk)
    return {"model": str(model),
            "bpb": {n: corpus_bpb(scorer, tokenizer, t, seq_len, stride, name=n) for n, t in corpora.items()},
            "mc": {n: score_task(scorer, tokenizer, items, seq_len, fewshot, name=n) for n, items in tasks.items()}}


def format_results(res: dict) -> str:
    lines = []
    if res["bpb"]:
        lines.append(f"{'corpus':<20} {'docs':>6} {'tokens':>10} {'bytes':>11} {'bpb':>8} {'ppl':>10}")
        lines += [f"{n:<20} {r['docs']:>6} {r['tokens']:>10} {r['bytes']:>11} {r['bpb']:>8.4f} {r['ppl']:>10.3f}"
                  for n, r in res["bpb"].items()]
    if res["mc"]:
        lines.append(f"{'task':<20} {'items':>6} {'acc':>8} {'acc_norm':>9} {'acc_bytes':>10}")
        lines += [f"{n:<20} {r['items']:>6} {r['acc']:>8.4f} {r['acc_norm']:>9.4f} {r['acc_bytes']:>10.4f}"
                  for n, r in res["mc"].items()]
    return "\n".join(lines)


def write_json(res: dict, out: Path) -> None:
    """Written by process 0 only (every process holds the same results)."""
    import jax

    if jax.process_index() != 0:
        return
    from jaxadapt.io.atomic import atomic_file

    with atomic_file(out) as fh:
        json.dump(res, fh, indent=2)
        fh.write("\n")
