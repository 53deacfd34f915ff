"""`jaxadapt eval`: score every corpus and --mc task with a model (and, with --base, with its base model too), compare
the two per role-tagged corpus (eval/retention.py), optionally generate, print tables, optionally save JSON.

`eval_cmd` is the command as a typed function: the CLI mounts it, a recipe's `eval` stage calls it."""

from __future__ import annotations

import gc
import hashlib
import json
import re
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from jaxadapt import fs
from jaxadapt.errors import UserError
from jaxadapt.eval.retention import DEFAULT_THRESHOLD, ROLES
from jaxadapt.io.atomic import check_file_output
from jaxadapt.options import MeshSpec, ModelDtype

_NAME = r"[\w.-]+"
_SPEC = re.compile(rf"({_NAME})=(.+)")
SAMPLES = 3  # generated texts kept in the results


@dataclass(frozen=True)
class GenerationEval:
    """Greedy replies to a prompt file, judged by the language metrics of eval/language.py."""

    prompts: str  # JSONL with a "prompt" field per line, or one prompt per line (lep.calibrate.read_prompts)
    lang: str  # the language the replies should be in (ISO 639-1), for the code-switching rate
    max_new_tokens: int = 64

    def __post_init__(self):
        from jaxadapt.eval.language import LANGS

        if self.lang not in LANGS:
            raise UserError(f"--lang {self.lang!r}: expected one of {', '.join(sorted(LANGS))}")
        if self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens {self.max_new_tokens}: expected at least 1")

    def read_prompts(self) -> list[str]:
        from jaxadapt.lep.calibrate import read_prompts

        try:
            return read_prompts(self.prompts)
        except UserError as e:
            raise UserError(f"--generate {e}") from None


def parse_specs(option: str, specs: Iterable[str], taken: Container[str] = ()) -> dict[str, str]:
    """NAME=PATH pairs of one option -> {name: path}; a name given twice, or already in `taken`, is an error."""
    out: dict[str, str] = {}
    for spec in specs:
        m = _SPEC.fullmatch(spec)
        if not m:
            raise UserError(f"{option} {spec!r}: expected NAME=PATH (NAME of letters, digits, '.', '_', '-')")
        if m[1] in out or m[1] in taken:
            raise UserError(f"{option} {spec!r}: the name {m[1]!r} is given twice")
        out[m[1]] = m[2]
    return out


def parse_roles(target: Iterable[str] = (), source: Iterable[str] = (),
                other: Iterable[str] = ()) -> dict[str, tuple[str, str]]:
    """--target / --source / --other NAME=PATH -> {name: (role, path)}, names unique across the three."""
    roles: dict[str, tuple[str, str]] = {}
    for role, specs in zip(ROLES, (target, source, other)):
        roles.update((n, (role, p)) for n, p in parse_specs(f"--{role}", specs, roles).items())
    return roles


def run_eval(model: str, bpb: list[str], mc: list[str], seq_len: int = 1024, stride: int | None = None,
             batch_size: int = 8, fewshot: int = 0, max_docs: int = 0, logits_chunk: int | None = None,
             attention_chunk: int | None = None, *, roles: Mapping[str, tuple[str, str]] | None = None,
             base: str | None = None, max_bytes: int = 0, threshold: float = DEFAULT_THRESHOLD,
             generation: GenerationEval | None = None, mesh: str | None = None, dtype: str | None = None) -> dict:
    """Score `model` and return {"model", "bpb": {name: metrics}, "mc": {task: metrics}, "roles": {name: role}}.

    bpb: role-less NAME=PATH corpora; mc: task JSONL files; roles: {name: (role, path)}, role one of target /
    source / other (parse_roles builds it from the CLI options), names unique across bpb and roles; "roles" lists
    only these, and only they are compared (role-less corpora are scored by both models, not judged). Each corpus is
    its first max_docs documents, then its first max_bytes UTF-8 bytes (0: all). With `base`, the base model scores
    the same corpora and tasks with its own tokenizer, after `model` is freed, under "base": {"model", "bpb", "mc"},
    and "retention" holds retention.compare of the role-tagged corpora at `threshold` percent. `base` may also be
    the JSON of an earlier run_eval of the base (its "inputs" must match: same texts, seq_len and stride), so one
    scoring of the base serves many adapted models. With `generation`,
    each model greedily answers the prompts: "generation" (and "base"."generation"): {"lang", "prompts", "chat",
    "code_switching", "gen_share", "samples"}. Both models load sharded over `mesh` in `dtype` (modelref.open_model).
    Every input is checked before a model loads."""
    from jaxadapt.eval.corpus import read_corpus
    from jaxadapt.eval.mc import read_task
    from jaxadapt.eval.retention import check_threshold, compare
    from jaxadapt.eval.scorer import check_chunk
    from jaxadapt.modelref import check_model_options

    if seq_len < 1 or batch_size < 1:
        raise UserError(f"--seq-len {seq_len} / --batch-size {batch_size}: both must be >= 1")
    check_chunk(logits_chunk, "--logits-chunk")
    check_chunk(attention_chunk, "--attention-chunk")
    check_model_options(mesh, dtype)
    if stride is not None and not 1 <= stride <= seq_len:
        raise UserError(f"--stride {stride}: expected 1 <= stride <= --seq-len ({seq_len})")
    threshold = check_threshold(threshold)
    roles = dict(roles or {})
    for name, (role, _) in roles.items():
        if role not in ROLES or not re.fullmatch(_NAME, name):
            raise UserError(f"corpus {name!r} of role {role!r}: expected a NAME of letters, digits, '.', '_', '-' "
                            f"and a role among {', '.join(ROLES)}")
    specs = {name: ("--bpb", path) for name, path in parse_specs("--bpb", bpb, roles).items()}
    specs |= {name: (f"--{role}", path) for name, (role, path) in roles.items()}
    corpora = {name: read_corpus(option, name, path, max_docs, max_bytes) for name, (option, path) in specs.items()}
    tasks = {Path(p).stem: read_task(p) for p in mc}
    if len(tasks) < len(mc):
        raise UserError(f"--mc {' '.join(mc)}: task names (file stems) must be unique")
    prompts = generation.read_prompts() if generation else None
    if not corpora and not tasks and not prompts:
        raise UserError("nothing to evaluate: give at least one --bpb/--target/--source/--other NAME=PATH, "
                        "--mc TASK.jsonl or --generate PROMPTS")
    inputs = {"seq_len": seq_len, "stride": stride, "fewshot": fewshot,
              "corpora": {n: _fingerprint(t) for n, t in corpora.items()},
              "tasks": {n: _fingerprint(items) for n, items in tasks.items()},
              "prompts": _fingerprint([prompts, generation.lang, generation.max_new_tokens]) if prompts else None}
    scored_base = _scored_base(base, inputs, generation) if base is not None else None
    from jaxadapt.train.distributed import maybe_initialize

    maybe_initialize()  # a TPU pod / SLURM job / JAXADAPT_COORDINATOR: every process scores, all agree

    def evaluate(spec: str) -> dict:
        """One model's results; the model is freed when this returns."""
        from jaxadapt.eval.bpb import corpus_bpb
        from jaxadapt.modelref import open_model
        from jaxadapt.eval.mc import score_task
        from jaxadapt.eval.scorer import Scorer

        opened = open_model(spec, mesh, dtype)
        net, tokenizer = opened.model, opened.tokenizer
        scorer = Scorer(net, opened.mesh, batch_size, logits_chunk, attention_chunk)
        out = {"bpb": {n: corpus_bpb(scorer, tokenizer, t, seq_len, stride, name=n) for n, t in corpora.items()},
               "mc": {n: score_task(scorer, tokenizer, items, seq_len, fewshot, name=n) for n, items in tasks.items()}}
        if generation:
            out["generation"] = generate_metrics(net, tokenizer, spec, prompts, generation, batch_size)
        return out

    res = {"model": str(model), **evaluate(model), "roles": {name: role for name, (role, _) in roles.items()},
           "inputs": inputs}
    if scored_base is not None:
        res["base"] = scored_base
    elif base is not None:
        gc.collect()  # the first model's arrays go before the second model loads
        res["base"] = {"model": str(base), **evaluate(base)}
    if base is not None:
        res["retention"] = compare(res["roles"], {n: r["bpb"] for n, r in res["base"]["bpb"].items()},
                                   {n: r["bpb"] for n, r in res["bpb"].items()}, threshold)
    return res


def _fingerprint(items) -> str:
    text = json.dumps(items, ensure_ascii=False, default=repr)  # MC items are dataclasses: their repr is their value
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _scored_base(base: str, inputs: dict, generation: GenerationEval | None) -> dict | None:
    """The base's results from an earlier `jaxadapt eval --json` of it (None: `base` is a model to score).

    Every corpus, task and prompt file scored now must have been scored there from the same text, with the same
    window and few-shot settings; anything else would compare different things."""
    path = str(base)
    if not path.endswith(".json") or not fs.isfile(path):
        return None
    try:
        old = json.loads(fs.read_text(path))
        had, bpb, mc = old["inputs"], old["bpb"], old["mc"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"--base {base}: not the JSON of a `jaxadapt eval --json` run ({e})") from None
    for key in ("seq_len", "stride", "fewshot"):
        if had.get(key) != inputs[key]:
            raise UserError(f"--base {base}: scored with {key}={had.get(key)}, this eval uses {inputs[key]}")
    for kind in ("corpora", "tasks"):
        for name, fp in inputs[kind].items():
            if name not in had.get(kind, {}):
                raise UserError(f"--base {base}: has no results for {name!r}; score the base on it too")
            if had[kind][name] != fp:
                raise UserError(f"--base {base}: {name!r} was scored on other text (another file, --max-bytes or "
                                "--max-docs)")
    out = {"model": old.get("model", str(base)), "from": path,
           "bpb": {n: bpb[n] for n in inputs["corpora"]}, "mc": {n: mc[n] for n in inputs["tasks"]}}
    if generation is not None:
        if had.get("prompts") != inputs["prompts"] or "generation" not in old:
            raise UserError(f"--base {base}: has no generation results for these prompts")
        out["generation"] = old["generation"]
    return out


def generate_metrics(net, tokenizer, spec: str, prompts: list[str], gen: GenerationEval, batch_size: int) -> dict:
    """Greedy replies (chat replies where the tokenizer has a chat template, else continuations) and what
    eval/language.py measures on them: the code-switching rate for gen.lang and, when the model's dir has an
    adaptation.json, %Gen (None also when nothing was generated)."""
    from jaxadapt.eval.language import code_switching_rate, gen_share, old_vocab_size
    from jaxadapt.modelref import model_home
    from jaxadapt.generate import default_eos_ids, generate_tokens

    home = model_home(spec)
    chat = bool(getattr(tokenizer, "chat_template", None))
    ids = generate_tokens(net, tokenizer, prompts, chat=chat, max_new_tokens=gen.max_new_tokens,
                          batch_size=batch_size, eos_ids=default_eos_ids(net, tokenizer, home))
    texts = [tokenizer.decode(i, skip_special_tokens=True) for i in ids]
    adapted = home is not None and (home / "adaptation.json").is_file()
    return {"lang": gen.lang, "prompts": len(prompts), "chat": chat,
            "code_switching": code_switching_rate(texts, gen.lang),
            "gen_share": gen_share(ids, old_vocab_size(home)) if adapted and any(ids) else None,
            "samples": texts[:SAMPLES]}


def format_results(res: dict) -> str:
    """The results as terminal tables: the model's, the base's, the retention comparison, the generation metrics."""
    from jaxadapt.eval.retention import format_retention

    lines = _tables(res)
    if "base" in res:
        lines += ["", f"base {res['base']['model']}:", *_tables(res["base"])]
    if "retention" in res:
        lines += ["", "retention (base vs adapted):", format_retention(res["retention"])]
    for who, r in (("", res), ("base ", res.get("base", {}))):
        if "generation" in r:
            g = r["generation"]
            share = "–" if g["gen_share"] is None else f"{g['gen_share']:.3f}"
            head = (f"{who}generation ({g['prompts']} prompts): code-switching ({g['lang']}) "
                    f"{g['code_switching']:.3f}, %Gen {share}")
            lines += ["", head, *(f"  > {t!r}" for t in g["samples"])]
    return "\n".join(lines)


def _tables(res: dict) -> list[str]:
    lines = []
    if res["bpb"]:
        lines.append(f"{'corpus':<20} {'docs':>6} {'tokens':>10} {'bytes':>11} {'bpb':>8} {'ppl':>10}")
        lines += [f"{n:<20} {r['docs']:>6} {r['tokens']:>10} {r['bytes']:>11} {r['bpb']:>8.4f} {r['ppl']:>10.3f}"
                  for n, r in res["bpb"].items()]
    if res["mc"]:
        lines.append(f"{'task':<20} {'items':>6} {'acc':>8} {'acc_norm':>9} {'acc_bytes':>10}")
        lines += [f"{n:<20} {r['items']:>6} {r['acc']:>8.4f} {r['acc_norm']:>9.4f} {r['acc_bytes']:>10.4f}"
                  for n, r in res["mc"].items()]
    return lines


def write_json(res: dict, out: str | Path) -> None:
    """Written by process 0 only (every process holds the same results), complete or not at all (a local path or
    a URL such as gs://...)."""
    import jax

    if jax.process_index() != 0:
        return
    with fs.atomic_file(out) as fh:
        json.dump(res, fh, indent=2)
        fh.write("\n")


def eval_cmd(
    model: Annotated[str, typer.Argument(help="An HF dir, a hub id, 'smollm2', a .gguf, or a run dir / checkpoint "
                                              "dir.")],
    bpb: Annotated[Optional[list[str]], typer.Option(
        "--bpb", help="NAME=PATH: a corpus (file or dir, as data sources read them, or debian:LANG such as "
                      "debian:nl-eval) to score in bits per byte; repeatable.")] = None,
    target: Annotated[Optional[list[str]], typer.Option(
        "--target", help="NAME=PATH: a corpus of the language the model was adapted to; repeatable.")] = None,
    source: Annotated[Optional[list[str]], typer.Option(
        "--source", help="NAME=PATH: a corpus of the language the model knew before; repeatable.")] = None,
    other: Annotated[Optional[list[str]], typer.Option(
        "--other", help="NAME=PATH: a corpus of a language neither training touched; repeatable.")] = None,
    base: Annotated[Optional[str], typer.Option(
        "--base", help="Score the same corpora with this base model too (its own tokenizer) and compare per "
                       "--target/--source/--other corpus; or the --json of an earlier eval of the base on the same "
                       "corpora (scored once, reused).")] = None,
    threshold: Annotated[float, typer.Option(
        help="With --base: a corpus whose bpb is worse than the base's by more than this many percent is flagged "
             "REGRESSED.")] = DEFAULT_THRESHOLD,
    max_bytes: Annotated[int, typer.Option(
        help="Score at most this many UTF-8 bytes per corpus, documents in file order, the last one cut (0: "
             "all).")] = 0,
    mc: Annotated[Optional[list[str]], typer.Option(
        "--mc", help="A multiple-choice task JSONL (context, choices, label); repeatable.")] = None,
    generate: Annotated[Optional[str], typer.Option(
        "--generate", help="PROMPTS.jsonl ('prompt' field) or one prompt a line: greedy replies, their "
                           "code-switching rate and %Gen; needs --lang.")] = None,
    lang: Annotated[Optional[str], typer.Option(
        help="The language the --generate replies should be in (nl, ru, ...).")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="At most this many new tokens per --generate reply.")] = 64,
    json_out: Annotated[Optional[str], typer.Option(
        "--json", help="Also write the results to this JSON file (a path or a gs:// URL).")] = None,
    seq_len: Annotated[int, typer.Option(
        help="Window length in tokens (the context of bpb, the truncation of MC).")] = 1024,
    stride: Annotated[Optional[int], typer.Option(
        help="Window stride for bpb (default: --seq-len, disjoint windows).")] = None,
    batch_size: Annotated[int, typer.Option(
        help="Rows per forward pass (rounded up to a multiple of the data shards).")] = 8,
    fewshot: Annotated[int, typer.Option(help="Examples (other items of the task) in front of each MC context.")] = 0,
    max_docs: Annotated[int, typer.Option(help="Score at most this many documents per corpus (0: all).")] = 0,
    logits_chunk: Annotated[Optional[int], typer.Option(
        help="Positions per LM-head pass: 0 = all at once, else a power of two (default: what keeps a device's "
             "float32 logits under 1 GiB).")] = None,
    attention_chunk: Annotated[Optional[int], typer.Option(
        help="Queries per attention pass: 0 = all at once, else a power of two (default: what keeps a device's "
             "float32 scores of one layer under 1 GiB).")] = None,
    mesh: MeshSpec = None,
    dtype: ModelDtype = None,
):
    """Bits per byte and perplexity per corpus (sliding windows), accuracy on multiple-choice tasks; with --base,
    the same against the base model and a retention table."""
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
