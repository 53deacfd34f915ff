"""Print the EXPERIMENTS.md tables from the results the configs/experiments/ recipes wrote.

    .venv/bin/python scripts/experiments/tables.py [RUNS_ROOT]      # default: runs

An experiment that has not run (or not finished) is reported as missing; numbers are never filled in by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

INITS = ("mean", "wmean", "merge", "mean-all", "random")


def _load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def tokenizers(stages: Path) -> list[str]:
    lines = []
    for lang, name in (("nl", "Dutch"), ("ru", "Russian")):
        rows = _load(stages / f"stats_{lang}" / "stats.json")
        if rows is None:
            lines.append(f"(a) {name}: missing")
            continue
        lines += [f"(a) {name}", "", f"| tokenizer | {name} chars/token | {name} tokens/word | English chars/token |",
                  "|---|---|---|---|"]
        by = {}
        for r in rows:
            stage = Path(r["tokenizer"]).parent.name
            which = "target" if Path(r["corpus"]).parent.parent.name == lang else "en"
            by.setdefault(stage, {})[which] = r
        for stage, r in by.items():
            label = "SmolLM2 (49,152)" if stage == "model" else stage.split("_", 1)[1]
            lines.append(f"| {label} | {r['target']['chars_per_token']:.2f} | {r['target']['tokens_per_word']:.2f} "
                         f"| {r['en']['chars_per_token']:.2f} |")
        lines.append("")
    return lines


RETENTION = ("nl", "nl-ood", "en", "en-ood", "ru-ood", "de-ood")


def _header(title: str, cols: tuple[str, ...]) -> list[str]:
    return [title, "", "| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]


def _row(stages: Path, label: str, stage: str, cols: tuple[str, ...], extra: tuple[str, ...] = ()) -> str:
    """Bits per byte per corpus, with the change against the base where the eval compared with one; `extra` are
    further keys of a corpus's result (e.g. nl.tokens)."""
    r = _load(stages / stage / "results.json")
    if r is None:
        return f"| {label} | " + " | ".join("missing" for _ in (*cols, *extra)) + " |"
    change = {row["corpus"]: row["change_pct"] for row in (r.get("retention") or {}).get("rows", [])}
    cells = [f"{r['bpb'][c]['bpb']:.3f}" + (f" ({change[c]:+.1f}%)" if c in change else "") for c in cols]
    cells += [str(r["bpb"][key.split(".")[0]][key.split(".")[1]]) for key in extra]
    return f"| {label} | " + " | ".join(cells) + " |"


def initialisation(stages: Path) -> list[str]:
    cols = ("nl", "nl-ood", "en-ood", "ru-ood", "de-ood")
    lines = _header("(b)", cols) + [_row(stages, "original SmolLM2, old tokenizer", "eval_original", cols)]
    lines += [_row(stages, f"{i}, step 0", f"step0_{i}", cols) for i in INITS]
    lines += [_row(stages, f"{i}, after training", f"trained_{i}", cols) for i in INITS]
    return lines + [""]


def trainable(stages: Path) -> list[str]:
    lines = _header("(c) and (d)", RETENTION)
    for label, stage in (("original SmolLM2", "eval_original"), ("+5K mean init, step 0", "step0"),
                         ("embeddings only", "after_embeddings"), ("LoRA + embeddings", "after_lora_embeddings"),
                         ("full", "after_full"), ("LoRA + embeddings, 10% English replay",
                                                  "after_lora_embeddings_replay")):
        lines.append(_row(stages, label, stage, RETENTION))
    return lines + [""]


def lep(stages: Path) -> list[str]:
    lines = _header("(e)", (*RETENTION, "Dutch tokens"))
    for label, stage in (("B (SmolLM2)", "base"), ("I (B + English fine-tuning)", "instruct"),
                         ("D (B + Dutch vocab, embeddings trained)", "donor"), ("I' swap", "swap"),
                         ("I' overlap", "overlap"), ("I' conversion", "conversion")):
        lines.append(_row(stages, label, f"eval_{stage}", RETENTION, extra=("nl.tokens",)))
    return lines + [""]


def retention(stages: Path, staged: Path) -> list[str]:
    """(f): f-retention.yaml's runs, then f-staged.yaml's (`staged`: its stages dir)."""
    lines = _header("(f)", RETENTION)
    for label, where, stage in (("original SmolLM2", stages, "base"), ("+2K mean init, step 0", stages, "step0"),
                                ("+2K protected (German), step 0", stages, "step0_protected"),
                                ("all rows, lr 1e-3, 10% replay (old quickstart)", stages, "after_all"),
                                ("seen, LoRA and old rows x0.1, 25% replay (quickstart)", stages, "after_chosen"),
                                ("the same, German-protected tokens", stages, "after_protected"),
                                ("the same, original vocabulary", stages, "after_original"),
                                ("staged: the new rows alone, 100 steps", staged, "after_warm"),
                                ("staged: then 100 steps as the quickstart", staged, "after_staged")):
        lines.append(_row(where, label, stage, RETENTION))
    return lines + [""]


REPLACEMENT_INITS = ("mean", "random", "focus", "knn", "omp", "focus-wmean", "mapping", "mapping-wmean")


def replacement(stages: Path) -> list[str]:
    """(g): per language, step 0 and after training for each init, and how much of mean's step-0 gap to the original
    model the best init closes on the held-out text."""
    lines = []
    for lang, cols in (("nl", ("nl", "nl-ood", "en-ood", "ru-ood", "de-ood")),
                       ("ru", ("ru", "ru-ood", "en-ood", "nl-ood", "de-ood"))):
        inits = REPLACEMENT_INITS
        lines += _header(f"(g) {lang}", (*cols, f"{lang} tokens"))
        lines.append(_row(stages, "original SmolLM2, its own tokenizer", f"eval_{lang}_original", cols,
                          extra=(f"{lang}.tokens",)))
        lines += [_row(stages, f"{i}, step 0", f"step0_{lang}_{i}", cols, extra=(f"{lang}.tokens",)) for i in inits]
        lines += [_row(stages, f"{i}, after training", f"trained_{lang}_{i}", cols, extra=(f"{lang}.tokens",))
                  for i in inits]
        base = _load(stages / f"eval_{lang}_original" / "results.json")
        step0 = {i: _load(stages / f"step0_{lang}_{i}" / "results.json") for i in inits}
        step0 = {i: r["bpb"][lang]["bpb"] for i, r in step0.items() if r is not None}
        if base is not None and "mean" in step0 and len(step0) > 1:
            orig, gap = base["bpb"][lang]["bpb"], step0["mean"] - base["bpb"][lang]["bpb"]
            best = min((i for i in step0 if i != "mean"), key=step0.get)
            lines += ["", f"{lang}, step 0: mean's gap to the original model {gap:.3f} bits per byte; the best other "
                          f"init, {best} ({step0[best]:.3f}), closes {(step0['mean'] - step0[best]) / gap:.0%} of it "
                          f"(goal: 50%, i.e. <= {orig + gap / 2:.3f})"]
        lines.append("")
    return lines


def main(root: str = "runs") -> None:
    runs = Path(root)
    for name, table in (("exp-a", tokenizers), ("exp-b", initialisation), ("exp-cd", trainable), ("exp-e", lep)):
        print("\n".join(table(runs / name / "stages")))
    print("\n".join(retention(runs / "exp-f" / "stages", runs / "exp-f-staged" / "stages")))
    print("\n".join(replacement(runs / "exp-g" / "stages")))


if __name__ == "__main__":
    main(*sys.argv[1:])
