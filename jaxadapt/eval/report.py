"""`jaxadapt report`: one Markdown page comparing runs, with PNG plots, from their metrics.jsonl.

Plots: training loss per run; eval bpb per source over steps; bpb per source before/after (the first and the
last eval entry of each run); tokenizer efficiency if a run dir holds `tokenizer_stats.json` of the form
{tokenizer: {corpus: {"tokens_per_word": x, "bytes_per_token": y, ...}}} (the fields of `jaxadapt tokenizer
stats`). Table: final loss, final bpb per source, tokens seen, mean tokens/s (the first logged step, which
includes compilation, left out).

Inputs may also be JSON files written by `jaxadapt eval --json`: each one with a "retention" block (an eval with
--base) gets a table of base vs adapted bpb per corpus in the "Retention (base vs adapted)" section.

Inputs and the report dir may be local paths or URLs (gs://...); everything is read through jaxadapt.fs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from jaxadapt import fs
from jaxadapt.errors import UserError
from jaxadapt.io.atomic import atomic_dir

EFFICIENCY = ("tokens_per_word", "bytes_per_token")


@dataclass
class Run:
    name: str
    rows: list[dict]
    tokenizer_stats: dict | None

    def series(self, key: str) -> tuple[list[int], list[float]]:
        pts = [(r["step"], r[key]) for r in self.rows if key in r]
        return [p[0] for p in pts], [p[1] for p in pts]

    def sources(self) -> list[str]:
        return sorted({k.split("/")[1] for r in self.rows for k in r if k.startswith("eval/") and k.endswith("/bpb")})

    def last(self, key: str):
        vals = self.series(key)[1]
        return vals[-1] if vals else None


def load_run(run_dir: str | Path) -> Run:
    f = fs.path(run_dir) / "metrics.jsonl"
    try:
        text = fs.read_text(f)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise UserError(f"{run_dir}: not a run dir (no metrics.jsonl)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{f}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{f}:{n}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict) or "step" not in row:
                raise UserError(f"{f}:{n}: expected a JSON object with a 'step'")
            rows.append(row)
    try:
        stats = json.loads(fs.read_text(fs.path(run_dir) / "tokenizer_stats.json"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        stats = None  # optional decoration: a missing or broken file only loses its plot
    return Run(fs.name(run_dir), rows, stats if isinstance(stats, dict) else None)


@dataclass(frozen=True)
class Evaluation:
    """The results of one `jaxadapt eval --json` file."""

    name: str
    res: dict

    @property
    def retention(self) -> dict | None:
        return self.res.get("retention")


def load_eval(path: str | Path) -> Evaluation:
    try:
        res = json.loads(fs.read_text(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a readable JSON file ({e})") from None
    if not (isinstance(res, dict) and "model" in res and isinstance(res.get("bpb"), dict)):
        raise UserError(f"{path}: not the JSON of `jaxadapt eval --json` (no 'model' and 'bpb')")
    ret = res.get("retention")
    if ret is not None and not (isinstance(ret, dict) and isinstance(ret.get("rows"), list)
                                and isinstance(ret.get("flagged"), list)):
        raise UserError(f"{path}: 'retention' is not a block of `jaxadapt eval --base` (rows, flagged)")
    return Evaluation(fs.name(path), res)


def _is_eval(path: str | Path) -> bool:
    return str(path).rstrip("/").endswith(".json") and not fs.isdir(str(path))


def load_inputs(inputs: list[str | Path]) -> tuple[list[Run], list[Evaluation]]:
    """Run dirs and eval JSON files (told apart by the .json suffix), all read before anything is written."""
    if not inputs:
        raise UserError("report: give at least one run dir or eval JSON")
    return [load_run(p) for p in inputs if not _is_eval(p)], [load_eval(p) for p in inputs if _is_eval(p)]


def write_report(runs: list[Run], evals: list[Evaluation], out: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    with atomic_dir(out) as tmp:
        sections = ["# Runs: " + ", ".join([*(r.name for r in runs), *(e.name for e in evals)]), ""]
        if runs:
            sections += [table(runs), ""]
        for title, png, draw in (("Training loss", "loss.png", _loss), ("Eval bits per byte", "bpb.png", _bpb),
                                 ("Bits per byte before / after", "bpb_before_after.png", _before_after),
                                 ("Tokenizer efficiency", "tokenizer.png", _tokenizer)):
            if runs and _plot(draw, runs, tmp / png):
                sections += [f"## {title}", "", f"![{title}]({png})", ""]
        sections += retention_section(evals)
        (tmp / "README.md").write_text("\n".join(sections))


def retention_section(evals: list[Evaluation]) -> list[str]:
    """The "Retention (base vs adapted)" section's lines: one table per eval with a retention block."""
    from jaxadapt.eval.retention import markdown_retention

    done = [e for e in evals if e.retention]
    if not done:
        return []
    lines = ["## Retention (base vs adapted)", ""]
    for e in done:
        lines += [f"### {e.name}: {e.res['model']} vs base {e.res.get('base', {}).get('model', '?')}", "",
                  markdown_retention(e.retention), ""]
    return lines


def table(runs: list[Run]) -> str:
    sources = sorted({s for r in runs for s in r.sources()})
    head = ["run", "step", "final loss", *[f"bpb {s}" for s in sources], "tokens seen", "tokens/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        tps = r.series("tokens_per_sec")[1][1:]
        cells = [r.name, r.rows[-1]["step"] if r.rows else None, r.last("loss"),
                 *[r.last(f"eval/{s}/bpb") for s in sources], r.last("tokens_seen"),
                 sum(tps) / len(tps) if tps else None]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _plot(draw, runs: list[Run], path: Path) -> bool:
    """Run one drawing function on a fresh figure; False (and no file) if it had nothing to draw."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(8, 4.5))
    try:
        if not draw(fig, runs):
            return False
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        return True
    finally:
        plt.close(fig)


def _loss(fig, runs) -> bool:
    ax = fig.add_subplot()
    drawn = False
    for r in runs:
        steps, vals = r.series("loss")
        if steps:
            ax.plot(steps, vals, label=r.name)
            drawn = True
    ax.set(xlabel="step", ylabel="training loss (nats/token)")
    ax.legend()
    return drawn


def _bpb(fig, runs) -> bool:
    sources = sorted({s for r in runs for s in r.sources()})
    for i, s in enumerate(sources):
        ax = fig.add_subplot(1, len(sources), i + 1)
        for r in runs:
            steps, vals = r.series(f"eval/{s}/bpb")
            if steps:
                ax.plot(steps, vals, marker=".", label=r.name)
        ax.set(title=s, xlabel="step", ylabel="bits per byte")
        ax.legend()
    return bool(sources)


def _before_after(fig, runs) -> bool:
    import numpy as np

    sources = sorted({s for r in runs for s in r.sources()})
    ax = fig.add_subplot()
    bars = [(f"{r.name} {when}", [_pick(r, s, when) for s in sources]) for r in runs for when in ("first", "last")]
    width = 0.8 / max(len(bars), 1)
    x = np.arange(len(sources))
    for i, (label, vals) in enumerate(bars):
        ax.bar(x + i * width, [np.nan if v is None else v for v in vals], width, label=label)
    ax.set_xticks(x + width * (len(bars) - 1) / 2, sources)
    ax.set(ylabel="bits per byte")
    ax.legend(fontsize="small")
    return bool(sources)


def _pick(run: Run, source: str, when: str):
    vals = run.series(f"eval/{source}/bpb")[1]
    return (vals[0] if when == "first" else vals[-1]) if vals else None


def _tokenizer(fig, runs) -> bool:
    import numpy as np

    bars = [(f"{r.name} {tok}", corpora) for r in runs if r.tokenizer_stats
            for tok, corpora in r.tokenizer_stats.items() if isinstance(corpora, dict)]
    corpora = sorted({c for _, cs in bars for c in cs})
    if not corpora:
        return False
    x, width = np.arange(len(corpora)), 0.8 / len(bars)
    for j, metric in enumerate(EFFICIENCY):
        ax = fig.add_subplot(1, len(EFFICIENCY), j + 1)
        for i, (label, cs) in enumerate(bars):
            ax.bar(x + i * width, [cs.get(c, {}).get(metric, np.nan) for c in corpora], width, label=label)
        ax.set_xticks(x + width * (len(bars) - 1) / 2, corpora)
        ax.set(title=metric)
        ax.legend(fontsize="small")
    return True
