"""`jaxadapt propagate` and `jaxadapt calibrate` as typed functions: the CLI mounts them, recipe stages call them."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from jaxadapt.io.atomic import check_output
from jaxadapt.options import Overwrite


def propagate(
    *,
    base: Annotated[str, typer.Option("--base", help="The pretrained model B (old vocabulary).")],
    donor: Annotated[str, typer.Option("--donor", help="B with the new vocabulary: an HF dir or a jaxadapt run "
                                                       "dir.")],
    target: Annotated[str, typer.Option("--target", help="The instruct model I tuned from B.")],
    method: Annotated[str, typer.Option(help="swap | overlap | conversion")] = "conversion",
    out: Annotated[str, typer.Option("--out", help="The HF directory to write (I with the new vocabulary; a path or "
                                                   "a gs:// URL).")],
    vocab: Annotated[str, typer.Option(help="extended (the donor keeps B's ids) | replaced")] = "extended",
    lora_scale: Annotated[float, typer.Option(help="Scale of a LoRA donor's adapters merged onto the "
                                                   "target.")] = 1.0,
    dtype: Annotated[Optional[str], typer.Option(help="Dtype of the written tensors: float32, bfloat16 or float16 "
                                                      "(default: the target's own).")] = None,
    overwrite: Overwrite = False,
):
    """Learned Embedding Propagation: move a donor's vocabulary and embeddings into an instruct model."""
    from jaxadapt.lep.propagate import propagate as run_propagate

    check_output(out, [base, donor, target], overwrite)
    written = run_propagate(base, donor, target, method, out, vocab=vocab, lora_scale=lora_scale, dtype=dtype)
    typer.echo(f"wrote {written}")


def calibrate(
    *,
    student: Annotated[str, typer.Option("--student", help="The propagated model I' to tune.")],
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="The original instruct model I "
                                                                     "(self-calibration).")] = None,
    prompts: Annotated[Optional[str], typer.Option("--prompts", help="Prompts (JSONL with 'prompt', or one per "
                                                                     "line).")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="A chat dataset instead (continued instruction "
                                                               "tuning).")] = None,
    out: Annotated[str, typer.Option("--out", help="Where the run dir goes (a path or a gs:// URL).")] = "runs",
    name: Annotated[str, typer.Option(help="The run's name (its dir under --out).")] = "calibrate",
    max_new_tokens: Annotated[int, typer.Option(help="Longest teacher answer.")] = 256,
    overrides: Annotated[Optional[list[str]], typer.Argument(help="Dotted overrides of the training config "
                                                                  "(train.steps=200 ...), as for `jaxadapt "
                                                                  "train`.")] = None,
):
    """Self-calibration: LoRA-tune the student on the teacher's greedy answers (or on --data). Overrides follow."""
    from jaxadapt.lep.calibrate import calibrate as run_calibrate

    run = run_calibrate(student, teacher=teacher, prompts=prompts, data=data, runs_root=str(out), name=name,
                        overrides=overrides or (), max_new_tokens=max_new_tokens)
    typer.echo(f"run dir: {run}")
