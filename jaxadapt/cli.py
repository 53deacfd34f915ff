"""The `jaxadapt` command line. Each capability mounts its own sub-app; bad input exits 2 with one line."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from jaxadapt.errors import CheckFailed, UserError
from jaxadapt.eval.retention import DEFAULT_THRESHOLD
from jaxadapt.io.atomic import check_file_output, check_output
from jaxadapt.options import MESH, MODEL_DTYPE, OVERWRITE

# typer >= 0.29 vendors its own click; its usage errors derive from this class, not from click's.
_ClickException = typer.core._click.exceptions.ClickException

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Teach existing LLMs a new language: vocabulary adaptation, continued pretraining, LEP.")


@app.command()
def convert(
    src: str = typer.Argument(..., help="An HF model dir, a hub id (org/name), a .gguf file, or 'smollm2' (the real "
                                        "SmolLM2-135M-Instruct GGUF, fetched from its PyPI wheel)."),
    out_dir: str = typer.Argument(..., help="The HF directory to write (a path or a gs:// URL)."),
    dtype: Optional[str] = typer.Option(None, help="Dtype of the written tensors: float32, bfloat16 or float16 "
                                                   "(default: an HF source's own, float32 for a .gguf)."),
    overwrite: bool = OVERWRITE,
):
    """Convert a checkpoint into an HF directory that transformers and jaxadapt load (tensor by tensor: any size
    converts in about one tensor's memory)."""
    from jaxadapt.io.convert import convert_any

    check_output(out_dir, [src], overwrite)
    if src == "smollm2":
        from jaxadapt.assets import smollm2_gguf

        src = str(smollm2_gguf())
    out = convert_any(src, out_dir, dtype=dtype)
    typer.echo(f"wrote {out}")


@app.command()
def predict(
    model: str = typer.Argument("smollm2", help="An HF dir, a hub id, a .gguf file, or 'smollm2' (the real "
                                                  "SmolLM2-135M-Instruct, fetched from its PyPI wheel)."),
    text: str = typer.Option("The capital of the Netherlands is", help="The sentence to continue."),
    top_k: int = typer.Option(5, help="How many next-token candidates to print."),
):
    """Print the model's top next-token predictions for a sentence."""
    from jaxadapt.predict import top_next_tokens

    for token, prob in top_next_tokens(model, text, top_k):
        typer.echo(f"{prob:8.4f}  {token!r}")


@app.command()
def generate(
    model: str = typer.Argument(..., help="An HF dir, a hub id, a .gguf file, 'smollm2', or a `jaxadapt train` run "
                                          "dir (its latest checkpoint, LoRA applied)."),
    prompt: list[str] = typer.Option(..., help="A prompt to continue; repeat for a batch."),
    chat: bool = typer.Option(False, "--chat", help="Wrap each prompt as a user turn with the chat template."),
    max_new_tokens: int = typer.Option(64, help="At most this many new tokens per prompt."),
    temperature: float = typer.Option(0.0, help="0 = greedy; else the sampling temperature."),
    top_p: float = typer.Option(1.0, help="Sample from the smallest set of tokens with this much probability."),
    top_k: int = typer.Option(0, help="Sample from the k most likely tokens (0 = all)."),
    seed: int = typer.Option(0, help="Sampling seed."),
    mesh: Optional[str] = MESH,
    dtype: Optional[str] = MODEL_DTYPE,
):
    """Generate continuations (or chat replies) with a KV cache; prints one block per prompt."""
    from jaxadapt.generate import generate as run_generate, load_for_generation

    if max_new_tokens < 1:  # checked before loading a model
        raise UserError(f"--max-new-tokens={max_new_tokens}; expected at least 1")
    net, tokenizer, eos_ids = load_for_generation(model, mesh=mesh, dtype=dtype)
    texts = run_generate(net, tokenizer, prompt, chat=chat, max_new_tokens=max_new_tokens, temperature=temperature,
                         top_p=top_p, top_k=top_k, seed=seed, eos_ids=eos_ids)
    for p, text in zip(prompt, texts):
        typer.echo(f"### {p}\n{text}\n")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    config: str = typer.Argument(..., help="The run's YAML config (a path or a gs:// URL); then dotted overrides "
                                           "key=value."),
    allow_config_change: bool = typer.Option(False, "--allow-config-change",
                                             help="Resume with other values of keys that keep the model and data "
                                                  "(steps, optim, logging, checkpoint, ...); recorded in "
                                                  "config_history.jsonl."),
):
    """Continued pretraining / SFT / DPO. Re-running the same command resumes from the latest checkpoint.

    SIGTERM (preemption) saves a checkpoint and exits 75, SIGINT 130: not finished, run it again to resume."""
    from jaxadapt.config.loader import load_config
    from jaxadapt.train.config import RunConfig
    from jaxadapt.train.loop import train as run_training

    cfg = load_config(RunConfig, config, ctx.args)
    typer.echo(f"run dir: {run_training(cfg, allow_changes=allow_config_change)}")


@app.command()
def export(
    run_dir: str = typer.Argument(..., help="A run dir written by `jaxadapt train` (a path or a gs:// URL)."),
    out_dir: str = typer.Argument(..., help="The HF (or PEFT adapter) directory to write (a path or a gs:// URL)."),
    step: Optional[int] = typer.Option(None, help="Checkpoint step (default: the latest)."),
    merge_lora: bool = typer.Option(False, "--merge-lora", help="Fold LoRA into the weights (the default)."),
    peft_adapter: bool = typer.Option(False, "--peft-adapter", help="Write a PEFT adapter instead."),
    dtype: Optional[str] = typer.Option(None, help="Dtype of the merged model's tensors: float32, bfloat16 or "
                                                   "float16 (default: the run's parameter dtype)."),
    overwrite: bool = OVERWRITE,
):
    """Write a run's checkpoint as an HF directory that transformers / peft / lm-eval load. Only the parameters are
    restored (sharded as in training, on whatever devices there are) and written one tensor at a time."""
    from jaxadapt.config.model import check_dtype
    from jaxadapt.train.export import export as run_export

    if merge_lora and peft_adapter:
        raise UserError("--merge-lora and --peft-adapter exclude each other")
    if dtype is not None and peft_adapter:
        raise UserError(f"--dtype {dtype}: applies to a merged export, not to --peft-adapter (adapters keep the "
                        "run's dtype)")
    if dtype is not None:
        check_dtype(dtype)
    check_output(out_dir, [run_dir], overwrite)
    typer.echo(f"wrote {run_export(run_dir, out_dir, step, 'peft' if peft_adapter else 'merge', dtype=dtype)}")


@app.command()
def plan(
    model: str = typer.Argument(..., help="A preset name, an HF model dir, or a YAML/JSON file of HF config fields."),
    mesh: str = typer.Option("data=1", help="The mesh to plan for, e.g. data=2,fsdp=4,tensor=1 (missing axes: 1)."),
    trainable: str = typer.Option("full", help="full | lora | embeddings (or a '+'-union such as lora+embeddings)."),
    batch: int = typer.Option(8, help="Global sequences per step."),
    seq: int = typer.Option(1024, help="Sequence length."),
    dtype: str = typer.Option("float32", help="Parameter and compute dtype: float32 or bfloat16."),
    remat: str = typer.Option("none", help="Rematerialisation: none, full, dots or dots_no_batch."),
    device: str = typer.Option("tpu-v5e", help="The accelerator whose memory the plan is checked against."),
    device_memory_gb: Optional[float] = typer.Option(None, help="Memory per device in GiB (default: --device's)."),
    logits_chunk: str = typer.Option("auto", help="LM head + cross-entropy this many positions at a time "
                                                  "(train.logits_chunk); 0: all at once; auto (as train does): "
                                                  "chunks only where a device's float32 logits pass 1 GiB."),
    attention_chunk: str = typer.Option("auto", help="Training attention this many queries at a time "
                                                     "(model.attention_chunk); 0: all at once; auto (as train "
                                                     "does): chunks only where a device's float32 attention scores "
                                                     "pass 1 GiB."),
):
    """Compile the train step ahead of time for a simulated mesh: per-device memory and FLOPs, no weights needed."""
    from jaxadapt.train.plan import plan_command

    typer.echo(plan_command(model, mesh, trainable, batch, seq, dtype, remat, device, device_memory_gb, logits_chunk,
                            attention_chunk))


@app.command("eval")
def eval_cmd(
    model: str = typer.Argument(..., help="An HF dir, a hub id, 'smollm2', a .gguf, or a run dir / checkpoint dir."),
    bpb: Optional[list[str]] = typer.Option(None, "--bpb", help="NAME=PATH: a corpus (file or dir, as data sources "
                                                                   "read them, or debian:LANG such as debian:nl-eval) "
                                                                   "to score in bits per byte; repeatable."),
    target: Optional[list[str]] = typer.Option(None, "--target", help="NAME=PATH: a corpus of the language the "
                                                                         "model was adapted to; repeatable."),
    source: Optional[list[str]] = typer.Option(None, "--source", help="NAME=PATH: a corpus of the language the "
                                                                         "model knew before; repeatable."),
    other: Optional[list[str]] = typer.Option(None, "--other", help="NAME=PATH: a corpus of a language neither "
                                                                       "training touched; repeatable."),
    base: Optional[str] = typer.Option(None, "--base", help="Score the same corpora with this base model too (its "
                                                            "own tokenizer) and compare per --target/--source/"
                                                            "--other corpus; or the --json of an earlier eval of "
                                                            "the base on the same corpora (scored once, reused)."),
    threshold: float = typer.Option(DEFAULT_THRESHOLD, help="With --base: a corpus whose bpb is worse than the "
                                                            "base's by more than this many percent is flagged "
                                                            "REGRESSED."),
    max_bytes: int = typer.Option(0, help="Score at most this many UTF-8 bytes per corpus, documents in file order, "
                                          "the last one cut (0: all)."),
    mc: Optional[list[str]] = typer.Option(None, "--mc", help="A multiple-choice task JSONL (context, choices, "
                                                                 "label); repeatable."),
    generate: Optional[str] = typer.Option(None, "--generate", help="PROMPTS.jsonl ('prompt' field) or one prompt a "
                                                                    "line: greedy replies, their code-switching "
                                                                    "rate and %Gen; needs --lang."),
    lang: Optional[str] = typer.Option(None, help="The language the --generate replies should be in (nl, ru, ...)."),
    max_new_tokens: int = typer.Option(64, help="At most this many new tokens per --generate reply."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Also write the results to this JSON file (a path "
                                                                "or a gs:// URL)."),
    seq_len: int = typer.Option(1024, help="Window length in tokens (the context of bpb, the truncation of MC)."),
    stride: Optional[int] = typer.Option(None, help="Window stride for bpb (default: --seq-len, disjoint windows)."),
    batch_size: int = typer.Option(8, help="Rows per forward pass (rounded up to a multiple of the data shards)."),
    fewshot: int = typer.Option(0, help="Examples (other items of the task) in front of each MC context."),
    max_docs: int = typer.Option(0, help="Score at most this many documents per corpus (0: all)."),
    logits_chunk: Optional[int] = typer.Option(None, help="Positions per LM-head pass: 0 = all at once, else a "
                                                            "power of two (default: what keeps a device's float32 "
                                                            "logits under 1 GiB)."),
    attention_chunk: Optional[int] = typer.Option(None, help="Queries per attention pass: 0 = all at once, else a "
                                                               "power of two (default: what keeps a device's float32 "
                                                               "scores of one layer under 1 GiB)."),
    mesh: Optional[str] = MESH,
    dtype: Optional[str] = MODEL_DTYPE,
):
    """Bits per byte and perplexity per corpus (sliding windows), accuracy on multiple-choice tasks; with --base,
    the same against the base model and a retention table."""
    from jaxadapt.eval.command import GenerationEval, format_results, parse_roles, run_eval, write_json

    if generate is not None and lang is None:
        raise UserError(f"--generate {generate}: needs --lang LANG, the language the replies should be in")
    if lang is not None and generate is None:
        raise UserError(f"--lang {lang}: only used with --generate PROMPTS")
    if json_out is not None:
        check_file_output(json_out, "--json")
    res = run_eval(model, bpb or [], mc or [], seq_len, stride, batch_size, fewshot, max_docs, logits_chunk,
                   attention_chunk, roles=parse_roles(target or [], source or [], other or []), base=base,
                   max_bytes=max_bytes, threshold=threshold,
                   generation=GenerationEval(generate, lang, max_new_tokens) if generate else None, mesh=mesh,
                   dtype=dtype)
    typer.echo(format_results(res))
    if json_out is not None:
        write_json(res, json_out)


@app.command()
def report(
    inputs: list[str] = typer.Argument(..., help="Run dirs written by `jaxadapt train` and/or JSON files written "
                                                 "by `jaxadapt eval --json` (paths or gs:// URLs)."),
    out: str = typer.Option(..., "--out", help="The report directory to write (README.md + PNG plots; a path or a "
                                               "gs:// URL)."),
    check: bool = typer.Option(False, "--check", help="Exit 1 if an eval JSON flags a corpus as regressed."),
    overwrite: bool = OVERWRITE,
):
    """A Markdown report with loss / bpb plots and a comparison table of the runs, and the retention of evals."""
    from jaxadapt.eval.report import load_inputs, write_report
    from jaxadapt.eval.retention import summary

    check_output(out, inputs, overwrite)
    runs, evals = load_inputs(inputs)
    retained = [e for e in evals if e.retention]
    if check and not retained:
        raise UserError("--check: no input is an eval JSON with a retention block (jaxadapt eval --base ... --json)")
    write_report(runs, evals, out)
    typer.echo(f"wrote {out}")
    for e in retained:
        typer.echo(f"retention {e.name}: {summary(e.retention)}")
    if check:
        flagged = [f"{e.name}: {', '.join(e.retention['flagged'])}" for e in retained if e.retention["flagged"]]
        if flagged:
            raise CheckFailed(f"report --check: regressed corpora in {'; '.join(flagged)}")


@app.command()
def propagate(
    base: str = typer.Option(..., "--base", help="The pretrained model B (old vocabulary)."),
    donor: str = typer.Option(..., "--donor", help="B with the new vocabulary: an HF dir or a jaxadapt run dir."),
    target: str = typer.Option(..., "--target", help="The instruct model I tuned from B."),
    method: str = typer.Option("conversion", help="swap | overlap | conversion"),
    out: str = typer.Option(..., "--out", help="The HF directory to write (I with the new vocabulary; a path or a "
                                               "gs:// URL)."),
    vocab: str = typer.Option("extended", help="extended (the donor keeps B's ids) | replaced"),
    lora_scale: float = typer.Option(1.0, help="Scale of a LoRA donor's adapters merged onto the target."),
    dtype: Optional[str] = typer.Option(None, help="Dtype of the written tensors: float32, bfloat16 or float16 "
                                                   "(default: the target's own)."),
    overwrite: bool = OVERWRITE,
):
    """Learned Embedding Propagation: move a donor's vocabulary and embeddings into an instruct model."""
    from jaxadapt.lep.propagate import propagate as run_propagate

    check_output(out, [base, donor, target], overwrite)
    written = run_propagate(base, donor, target, method, out, vocab=vocab, lora_scale=lora_scale, dtype=dtype)
    typer.echo(f"wrote {written}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    recipe: str = typer.Argument(..., help="The recipe YAML (a path or a gs:// URL); then dotted overrides "
                                            "key=value (stages.NAME.config.key=value for a stage)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check everything, list what would run; run nothing."),
):
    """Run a recipe's stages in order in one run dir; re-running skips stages already done with the same config."""
    from jaxadapt.recipes.runner import run_recipe
    from jaxadapt.recipes.schema import load_recipe

    typer.echo(f"run dir: {run_recipe(load_recipe(recipe, ctx.args), recipe, dry_run)}")


@app.command()
def sweep(
    spec: str = typer.Argument(..., help="The sweep YAML: base (a recipe or train config), grid and/or zip."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the points and their commands; run nothing."),
    emit: Optional[str] = typer.Option(None, "--emit", help="Write one resolved config per run and launch.txt "
                                                            "(one command a line) to this dir instead of running "
                                                            "(a path or a gs:// URL)."),
):
    """One run per grid/zip point of a recipe or train config, one after another (or --emit them for a cluster)."""
    import shlex

    from jaxadapt.recipes.sweep import commands, load_sweep, run_all, write_emit

    base, is_recipe, points = load_sweep(spec)
    cmds = commands(base, is_recipe, points, emit)
    if dry_run:
        for p, cmd in zip(points, cmds):
            typer.echo(f"{p.name}\n  {shlex.join(cmd)}")
    elif emit is not None:
        write_emit(emit, points, cmds)
        typer.echo(f"wrote {len(points)} configs and {emit.rstrip('/')}/launch.txt")
    else:
        run_all(points, cmds)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def calibrate(
    ctx: typer.Context,
    student: str = typer.Option(..., "--student", help="The propagated model I' to tune."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="The original instruct model I (self-calibration)."),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="Prompts (JSONL with 'prompt', or one per line)."),
    data: Optional[str] = typer.Option(None, "--data", help="A chat dataset instead (continued instruction tuning)."),
    out: str = typer.Option("runs", "--out", help="Where the run dir goes (a path or a gs:// URL)."),
    name: str = typer.Option("calibrate", help="The run's name (its dir under --out)."),
    max_new_tokens: int = typer.Option(256, help="Longest teacher answer."),
):
    """Self-calibration: LoRA-tune the student on the teacher's greedy answers (or on --data). Overrides follow."""
    from jaxadapt.lep.calibrate import calibrate as run_calibrate

    run = run_calibrate(student, teacher=teacher, prompts=prompts, data=data, runs_root=str(out), name=name,
                        overrides=ctx.args, max_new_tokens=max_new_tokens)
    typer.echo(f"run dir: {run}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def quickstart(ctx: typer.Context):
    """SmolLM2 learns Dutch on this machine: extend the tokenizer, init, train, evaluate, generate, export.

    Settings are dotted overrides, e.g. `jaxadapt quickstart steps=50 out=runs/qs` (see jaxadapt/quickstart.py).
    """
    from jaxadapt.config.loader import load_config
    from jaxadapt.quickstart import QuickstartConfig, format_summary, run

    typer.echo(format_summary(run(load_config(QuickstartConfig, None, ctx.args))))


# Sub-apps of the other capabilities are mounted here, one line each: app.add_typer(sub, name="...").
from jaxadapt.data.cli import data_app  # noqa: E402
app.add_typer(data_app, name="data")
from jaxadapt.vocab.cli import tokenizer_app, vocab_app  # noqa: E402
app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(vocab_app, name="vocab")


def main(argv: Optional[list[str]] = None) -> int:
    try:
        app(args=argv, standalone_mode=False)
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        return 2
    except CheckFailed as e:
        typer.echo(f"check failed: {e}", err=True)
        return 1
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        return 130
    except SystemExit as e:  # typer's own exits (--help)
        return e.code if isinstance(e.code, int) else 1
    except _ClickException as e:  # usage errors: a missing argument, an unknown option
        e.show()
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
