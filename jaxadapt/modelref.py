"""MODEL arguments, resolved in one place for eval, generate, propagate and the quickstart.

A model reference is an HF dir, a hub id, a .gguf file, 'smollm2' (the real SmolLM2-135M-Instruct), a `jaxadapt train`
run dir (its latest checkpoint) or one of its checkpoints (run/checkpoints/STEP), local or a URL. `open_model` loads
any of them onto a mesh in a dtype, so every command that takes a MODEL shards it the way training does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxadapt import fs
from jaxadapt.errors import UserError


@dataclass(frozen=True)
class Opened:
    model: Any  # LlamaForCausalLM
    tokenizer: Any
    mesh: Any  # jax.sharding.Mesh
    home: Path | None  # where generation_config.json and adaptation.json live (model_home)


def model_dir(spec: str) -> Path:
    """'smollm2' -> the real SmolLM2 (cached HF dir); a .gguf path -> its cached conversion; else an HF dir/hub id."""
    from jaxadapt import assets
    from jaxadapt.io.hf import resolve

    if spec == "smollm2":
        return assets.smollm2_dir()
    if str(spec).lower().endswith(".gguf"):
        return assets.converted_gguf(Path(spec))
    return resolve(spec)


def run_of(spec) -> tuple[Path, int | None] | None:
    """(run dir, step or None for the latest) when `spec` is a run dir or one of its checkpoints, else None."""
    path = fs.path(spec)
    if (path / "config.yaml").exists():
        return path, None
    if path.parent.name == "checkpoints" and path.name.isdigit() and (path.parent.parent / "config.yaml").exists():
        return path.parent.parent, int(path.name)
    return None


def model_home(spec: str) -> Path | None:
    """The HF dir a model stands on: the model's own dir, or for a run dir (or one of its checkpoints) the run's
    model.path (a hub id's snapshot); None for a preset."""
    import yaml

    from jaxadapt.train.modelload import checkpoint_dir

    run = run_of(spec)
    if run is None:
        return model_dir(spec)
    return checkpoint_dir(str(yaml.safe_load((run[0] / "config.yaml").read_text())["model"]["path"]))


def check_model_options(mesh: str | None, dtype: str | None) -> dict[str, int] | None:
    """--mesh and --dtype checked (a UserError naming the value), before anything is read; the mesh's sizes."""
    from jaxadapt.config.model import check_dtype
    from jaxadapt.sharding import parse_mesh

    if dtype is not None:
        check_dtype(dtype)
    return parse_mesh(mesh) if mesh is not None else None


def open_model(spec: str, mesh: str | None = None, dtype: str | None = None) -> Opened:
    """Load `spec` sharded over `mesh` ('data=2,fsdp=4'; default: a run's own mesh where these devices allow it,
    else every device on fsdp; an HF model replicated over a data mesh of all devices) with parameters and compute
    in `dtype` (default: a run's configured dtypes; float32 for an HF model). Bad options fail before any load."""
    from jaxadapt.sharding import ShardingError, make_mesh

    sizes = check_model_options(mesh, dtype)
    try:
        mesh_obj = make_mesh(**sizes) if sizes is not None else None
    except ShardingError as e:
        raise UserError(f"--mesh {mesh}: {e}") from None
    run = run_of(spec)
    if run is not None:
        from jaxadapt.train.export import restore_model

        model, cfg, tokenizer, _ = restore_model(run[0], run[1], mesh=mesh_obj, dtype=dtype)
        if tokenizer is None:
            raise UserError(f"{run[0]}: the run has no tokenizer (set model.tokenizer in its config.yaml)")
        from jaxadapt.train.modelload import checkpoint_dir

        return Opened(model, tokenizer, make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor),
                      checkpoint_dir(cfg.model.path))
    from jaxadapt.io.hf import load_pretrained, load_tokenizer

    d = model_dir(spec)
    tokenizer = load_tokenizer(d)
    mesh_obj = mesh_obj or make_mesh()
    return Opened(load_pretrained(d, dtype=dtype or "float32", mesh=mesh_obj), tokenizer, mesh_obj, d)
