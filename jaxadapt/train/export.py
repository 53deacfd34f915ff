"""Export a run dir (or one of its checkpoints) as an HF directory, with LoRA merged or as a PEFT adapter."""

from __future__ import annotations

import dataclasses

from jaxadapt.config.loader import load_config
from jaxadapt.errors import UserError
from jaxadapt import fs
from jaxadapt.io.hf import save_pretrained
from jaxadapt.model import Runtime
from jaxadapt.sharding import reading_mesh
from jaxadapt.train.checkpoint import Checkpointer
from jaxadapt.train.config import MeshConfig, RunConfig, trainable_parts
from jaxadapt.train.lora import add_lora, merge_lora, save_peft_adapter
from jaxadapt.train.modelload import load_model, load_training_tokenizer
from jaxadapt.train.partition import resolve_old_vocab
from jaxadapt.train.step import build_engine


def restore_model(run_dir, step: int | None = None):
    """(model with the checkpoint's trained params, RunConfig, tokenizer, step), on any number of devices: the
    returned config's mesh is the one the model was restored onto (the run's own, if these devices allow it)."""
    run_dir = fs.path(run_dir)
    cfg_file = run_dir / "config.yaml"
    if not cfg_file.exists():
        raise UserError(f"{run_dir}: not a run dir (no config.yaml)")
    cfg = load_config(RunConfig, cfg_file)
    if not (run_dir / "checkpoints").is_dir():
        raise UserError(f"{run_dir / 'checkpoints'}: no complete checkpoint")
    ckpt = Checkpointer(run_dir / "checkpoints", async_save=False, writer=False)
    steps = ckpt.all_steps()
    if not steps or (step is not None and step not in steps):
        ckpt.close()
        raise UserError(f"{run_dir / 'checkpoints'}: " + (f"no checkpoint for step {step} (have {steps})" if steps
                                                           else "no complete checkpoint"))
    step = steps[-1] if step is None else step
    mesh = reading_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    cfg = dataclasses.replace(cfg, mesh=MeshConfig(**dict(zip(mesh.axis_names, mesh.devices.shape))))
    rt = Runtime(param_dtype=cfg.model.param_dtype, compute_dtype=cfg.model.compute_dtype)
    tokenizer = load_training_tokenizer(cfg.model)
    model = load_model(cfg.model, rt, mesh, seed=cfg.train.seed)
    parts = trainable_parts(cfg.train.trainable)
    if "lora" in parts:
        add_lora(model, cfg.lora, seed=cfg.train.seed)
    old_vocab = resolve_old_vocab(cfg)
    engine, state = build_engine(model, cfg, mesh, old_vocab)
    state, _, _ = ckpt.restore(step, state, engine.state_shardings)
    ckpt.close()
    return engine.model(state["params"]), cfg, tokenizer, step


def export(run_dir, out_dir, step: int | None = None, mode: str = "merge"):
    """mode: 'merge' (LoRA folded into the weights, one HF dir) or 'peft' (a PEFT adapter dir)."""
    model, cfg, tokenizer, _ = restore_model(run_dir, step)
    parts = trainable_parts(cfg.train.trainable)
    if mode == "peft":
        if "lora" not in parts:
            raise UserError(f"{run_dir}: --peft-adapter needs a LoRA run (train.trainable={cfg.train.trainable!r})")
        return save_peft_adapter(model, cfg.lora, out_dir, embeddings=bool(parts & {"embeddings", "new_rows"}),
                                 base_model=cfg.model.path)
    if "lora" in parts:
        merge_lora(model)
    return save_pretrained(model, out_dir, tokenizer=tokenizer)
