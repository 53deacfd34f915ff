"""Export a run dir (or one of its checkpoints) as an HF directory, with LoRA merged or as a PEFT adapter."""

from __future__ import annotations

import dataclasses

from flax import nnx

from jaxadapt.config.loader import load_config
from jaxadapt.errors import UserError
from jaxadapt import fs
from jaxadapt.io.hf import save_pretrained
from jaxadapt.model import Runtime
from jaxadapt.sharding import reading_mesh, tree_shardings
from jaxadapt.train.checkpoint import Checkpointer
from jaxadapt.train.config import MeshConfig, RunConfig
from jaxadapt.train.lora import add_lora, merge_lora, save_peft_adapter
from jaxadapt.train.modelload import architecture, load_model, load_training_tokenizer
from jaxadapt.train.partition import split_trainable
from jaxadapt.train.step import resolve_attention_impl


def restore_model(run_dir, step: int | None = None, mesh=None, dtype: str | None = None):
    """(model with the checkpoint's trained params, RunConfig, tokenizer, step), on any number of devices: onto
    `mesh` if given, else the run's own where these devices allow it; the returned config's mesh is the one used.
    Only the parameters are read (no optimizer state), in `dtype` if given (parameters and compute)."""
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
    mesh = mesh or reading_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    cfg = dataclasses.replace(cfg, mesh=MeshConfig(**dict(zip(mesh.axis_names, mesh.devices.shape))))
    # the run's attention kernel (eval and generate compute with it); remat and chunking only matter for gradients
    rt = Runtime(param_dtype=dtype or cfg.model.param_dtype, compute_dtype=dtype or cfg.model.compute_dtype,
                 attention_impl=resolve_attention_impl(cfg, dtype, model_cfg=architecture(cfg.model), training=False))
    tokenizer = load_training_tokenizer(cfg.model)
    model = load_model(cfg.model, rt, mesh, seed=cfg.train.seed)
    if cfg.train.trainable.lora:
        add_lora(model, cfg.lora, seed=cfg.train.seed)
    graphdef, trainable, frozen = split_trainable(model, cfg.train.trainable)
    try:
        params = nnx.to_pure_dict(trainable)
        params = ckpt.restore_params(step, params, tree_shardings(params, mesh))
    finally:
        ckpt.close()
    nnx.replace_by_pure_dict(trainable, params)
    return nnx.merge(graphdef, trainable, frozen), cfg, tokenizer, step


def export(run_dir, out_dir, step: int | None = None, mode: str = "merge", dtype: str | None = None):
    """mode: 'merge' (LoRA folded into the weights, one HF dir, in `dtype`, default the run's parameter dtype) or
    'peft' (a PEFT adapter dir)."""
    model, cfg, tokenizer, _ = restore_model(run_dir, step)
    trainable = cfg.train.trainable
    if mode == "peft":
        if not trainable.lora:
            raise UserError(f"{run_dir}: --peft-adapter needs a LoRA run (train.trainable={str(trainable)!r})")
        return save_peft_adapter(model, cfg.lora, out_dir, embeddings=trainable.rows != "none",
                                 base_model=cfg.model.path)
    if trainable.lora:
        merge_lora(model)
    return save_pretrained(model, out_dir, tokenizer=tokenizer, dtype=dtype)
