"""Peak host memory of the commands that rewrite a whole checkpoint, against the checkpoint's size, next to the
transformers way of doing the same thing.

    .venv/bin/python scripts/bench/memory.py [--layers 16] [--dir /tmp/jaxadapt-memory] [--keep]

The model is random bfloat16 with Llama-3.2-1B's widths (hidden 2048, MLP 8192, 32 heads, 8 KV heads, tied head)
and --layers layers, with SmolLM2's 49,152-token vocabulary, because that is the real tokenizer at hand offline
(`vocab adapt` needs one that matches the model): 16 layers make 1.08B parameters, a 2.2 GB checkpoint. Each
command runs as its own process; its peak RSS is the kernel's (ru_maxrss from wait4), so every page it ever
touched counts, including the interpreter and JAX. Goals (issue #22): `vocab adapt` and `convert` at most 1.3x the
checkpoint + 1 GB, `propagate` (three models in) at most 1.5x one checkpoint + 1.5 GB.

The transformers lines do the same with its usual calls in bfloat16: from_pretrained + save_pretrained (convert),
+ resize_token_embeddings with mean rows (adapt), and the three from_pretrained a straightforward LEP script makes
(propagate). Writes about 6 checkpoints' worth of files under --dir (removed unless --keep).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

GIB = 1024 ** 3
GOALS = {"convert": (1.3, 1.0), "vocab adapt": (1.3, 1.0), "propagate": (1.5, 1.5)}  # (x size, + GB)
HIDDEN, MLP, HEADS, KV_HEADS = 2048, 8192, 32, 8


def make_checkpoint(out: Path, tokenizer_dir: Path, layers: int, seed: int) -> None:
    """A random bfloat16 HF dir with these widths and SmolLM2's tokenizer, written tensor by tensor."""
    import ml_dtypes
    import numpy as np

    from jaxadapt.config import ModelConfig
    from jaxadapt.io.hf import hf_specs, read_hf_config, write_hf_dir

    tok_cfg = read_hf_config(tokenizer_dir)
    cfg = ModelConfig.from_hf({
        "model_type": "llama", "vocab_size": tok_cfg["vocab_size"], "hidden_size": HIDDEN, "intermediate_size": MLP,
        "num_hidden_layers": layers, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "head_dim": HIDDEN // HEADS, "rms_norm_eps": 1e-5, "max_position_embeddings": 8192, "rope_theta": 500000.0,
        "tie_word_embeddings": True, "bos_token_id": tok_cfg.get("bos_token_id"),
        "eos_token_id": tok_cfg.get("eos_token_id"), "pad_token_id": tok_cfg.get("pad_token_id")}, source="bench")
    rng = np.random.default_rng(seed)
    specs = hf_specs(cfg, ml_dtypes.bfloat16)
    shapes = {name: shape for name, shape, _ in specs}

    def produce(name):
        shape = shapes[name]
        if name.endswith("norm.weight"):
            return np.ones(shape, ml_dtypes.bfloat16)
        return (rng.standard_normal(shape, np.float32) * 0.02).astype(ml_dtypes.bfloat16)

    write_hf_dir(out, cfg, specs, produce, dtype="bfloat16", tokenizer=tokenizer_dir)


def extended_tokenizer(out: Path, base_dir: Path) -> None:
    """SmolLM2's tokenizer plus 1,000 tokens learned on Dutch (the real Debian text)."""
    from jaxadapt.data.debian import corpus
    from jaxadapt.data.split import read_texts
    from jaxadapt.vocab import extend, read_tokenizer, write_tokenizer_dir

    base = read_tokenizer(base_dir)
    texts = read_texts("nl", str(corpus("nl")), max_docs=400)
    origin = {"mode": "extend", "base": str(base_dir), "base_fingerprint": base.fingerprint()}
    write_tokenizer_dir(out, extend(base, texts, 1000), origin)


def prepare(root: Path, layers: int) -> None:
    """The two random checkpoints (base and "instruct") and the extended tokenizer, under root."""
    from jaxadapt.assets import smollm2_dir

    tok = smollm2_dir()
    make_checkpoint(root / "base", tok, layers, seed=0)
    make_checkpoint(root / "instruct", tok, layers, seed=1)
    extended_tokenizer(root / "tok-nl", tok)


def measure(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in GiB, seconds) of one command in a fresh process. Linux carries a process's peak RSS across
    exec, so a forked child starts from its parent's: this parent imports nothing heavy and prepares the inputs
    in a child of its own."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=dict(os.environ, JAX_PLATFORMS="cpu"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return usage.ru_maxrss * 1024 / GIB, time.perf_counter() - start


HF_SCRIPT = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
what, out, *srcs = sys.argv[1:]
models = [AutoModelForCausalLM.from_pretrained(s, dtype=torch.bfloat16) for s in srcs]
if what == "adapt":
    models[0].resize_token_embeddings(len(AutoTokenizer.from_pretrained(out + ".tok")), mean_resizing=True)
models[-1].save_pretrained(out)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/jaxadapt-memory"))
    ap.add_argument("--keep", action="store_true", help="keep the files written under --dir")
    ap.add_argument("--no-hf", action="store_true", help="skip the transformers lines")
    ap.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)  # the child that writes the inputs
    args = ap.parse_args()
    root = args.dir
    if args.prepare:
        return prepare(root, args.layers)

    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    subprocess.run([sys.executable, __file__, "--prepare", "--dir", str(root), "--layers", str(args.layers)],
                   check=True)
    base, target, ext = root / "base", root / "instruct", root / "tok-nl"
    size = sum(f.stat().st_size for f in base.glob("*.safetensors")) / GIB
    cli = [sys.executable, "-m", "jaxadapt.cli"]
    ours = {
        "convert": cli + ["convert", str(base), str(root / "converted")],
        "vocab adapt": cli + ["vocab", "adapt", "--model", str(base), "--tokenizer", str(ext), "--init", "mean",
                              "--out", str(root / "adapted")],
        "propagate": cli + ["propagate", "--base", str(base), "--donor", str(root / "adapted"), "--target",
                            str(target), "--out", str(root / "propagated")],
    }
    shutil.copytree(ext, root / "hf-adapted.tok")
    theirs = {
        "convert": ["convert", str(root / "hf-converted"), str(base)],
        "vocab adapt": ["adapt", str(root / "hf-adapted"), str(base)],
        "propagate": ["propagate", str(root / "hf-propagated"), str(base), str(root / "adapted"), str(target)],
    }
    print(f"checkpoint: {size:.2f} GiB bfloat16 ({args.layers} layers)")
    print(f"{'command':>12}  {'peak GiB':>9}  {'x size':>7}  {'goal GiB':>9}  {'ok':>3}  {'s':>6}  "
          f"{'transformers GiB':>16}  {'ours/theirs':>11}")
    rows = {}
    for name, cmd in ours.items():
        peak, secs = measure(cmd)
        scale, extra = GOALS[name]
        goal = scale * size + extra
        hf = None if args.no_hf else measure([sys.executable, "-c", HF_SCRIPT, *theirs[name]])[0]
        rows[name] = {"peak_gib": peak, "x_size": peak / size, "goal_gib": goal, "seconds": secs, "hf_gib": hf}
        print(f"{name:>12}  {peak:9.2f}  {peak / size:7.2f}  {goal:9.2f}  {'yes' if peak <= goal else 'NO':>3}  "
              f"{secs:6.0f}  {'-' if hf is None else f'{hf:.2f}':>16}  "
              f"{'-' if hf is None else f'{peak / hf:.2f}':>11}")
    print("RESULT " + json.dumps({"checkpoint_gib": size, "layers": args.layers, "rows": rows}))
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
