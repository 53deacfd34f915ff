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


def _bpb(stages: Path, stage: str, corpus: str) -> str:
    r = _load(stages / stage / "results.json")
    return "missing" if r is None else f"{r['bpb'][corpus]['bpb']:.3f}"


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


def initialisation(stages: Path) -> list[str]:
    lines = ["(b)", "", "| init | Dutch bpb, step 0 | Dutch bpb, after training |", "|---|---|---|",
             f"| (original SmolLM2, old tokenizer) | {_bpb(stages, 'eval_original', 'nl')} | |"]
    lines += [f"| {i} | {_bpb(stages, f'step0_{i}', 'nl')} | {_bpb(stages, f'trained_{i}', 'nl')} |" for i in INITS]
    return lines + [""]


def trainable(stages: Path) -> list[str]:
    lines = ["(c) and (d)", "", "| model | Dutch bpb | English bpb |", "|---|---|---|"]
    for label, stage in (("original SmolLM2", "eval_original"), ("+5K mean init, step 0", "step0"),
                         ("embeddings only", "after_embeddings"), ("LoRA + embeddings", "after_lora_embeddings"),
                         ("full", "after_full"), ("LoRA + embeddings, 10% English replay",
                                                  "after_lora_embeddings_replay")):
        lines.append(f"| {label} | {_bpb(stages, stage, 'nl')} | {_bpb(stages, stage, 'en')} |")
    return lines + [""]


def lep(stages: Path) -> list[str]:
    lines = ["(e)", "", "| model | Dutch bpb | Dutch tokens | English bpb |", "|---|---|---|---|"]
    for label, stage in (("B (SmolLM2)", "base"), ("I (B + English fine-tuning)", "instruct"),
                         ("D (B + Dutch vocab, embeddings trained)", "donor"), ("I' swap", "swap"),
                         ("I' overlap", "overlap"), ("I' conversion", "conversion")):
        r = _load(stages / f"eval_{stage}" / "results.json")
        tokens = "missing" if r is None else r["bpb"]["nl"]["tokens"]
        lines.append(f"| {label} | {_bpb(stages, f'eval_{stage}', 'nl')} | {tokens} "
                     f"| {_bpb(stages, f'eval_{stage}', 'en')} |")
    return lines + [""]


RETENTION = ("nl", "nl-ood", "en", "en-ood", "ru-ood", "de-ood")


def retention(stages: Path) -> list[str]:
    lines = ["(f)", "", "| model | " + " | ".join(RETENTION) + " |", "|---|" + "---|" * len(RETENTION)]
    base = _load(stages / "base" / "results.json")
    lines.append("| original SmolLM2 | " + " | ".join(
        "missing" if base is None else f"{base['bpb'][c]['bpb']:.3f}" for c in RETENTION) + " |")
    for label, stage in (("+2K mean init, step 0", "step0"), ("+2K protected (German), step 0", "step0_protected"),
                         ("all rows, lr 1e-3, 10% replay (old quickstart)", "after_all"),
                         ("seen, LoRA and old rows x0.1, 25% replay (quickstart)", "after_chosen"),
                         ("the same, German-protected tokens", "after_protected"),
                         ("the same, original vocabulary", "after_original")):
        r = _load(stages / stage / "results.json")
        if r is None:
            lines.append(f"| {label} | " + " | ".join("missing" for _ in RETENTION) + " |")
            continue
        change = {row["corpus"]: row["change_pct"] for row in r["retention"]["rows"]}
        lines.append(f"| {label} | " + " | ".join(f"{r['bpb'][c]['bpb']:.3f} ({change[c]:+.1f}%)" for c in RETENTION)
                     + " |")
    return lines + [""]


def main(root: str = "runs") -> None:
    runs = Path(root)
    for name, table in (("exp-a", tokenizers), ("exp-b", initialisation), ("exp-cd", trainable), ("exp-e", lep),
                        ("exp-f", retention)):
        print("\n".join(table(runs / name / "stages")))


if __name__ == "__main__":
    main(*sys.argv[1:])
