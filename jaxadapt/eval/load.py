"""MODEL arguments of `jaxadapt eval`: an HF dir, a hub id, 'smollm2', a .gguf, a run dir or one of its checkpoints."""

from __future__ import annotations

from pathlib import Path

from jaxadapt.errors import UserError
from jaxadapt import fs


def load_for_eval(spec: str):
    """(model, tokenizer, mesh). A run dir restores its latest checkpoint (LoRA applied) on the run's own mesh, so
    the parameters stay where training put them; everything else loads replicated over a data mesh of all devices."""
    run = _run(spec)
    return _restored(*run) if run else _pretrained(spec)


def model_home(spec: str) -> Path | None:
    """The HF dir a model stands on, where its generation_config.json and adaptation.json live: the model's own dir,
    or for a run dir (or one of its checkpoints) the run's model.path (a hub id's snapshot); None for a preset."""
    import yaml

    from jaxadapt.predict import model_dir
    from jaxadapt.train.modelload import checkpoint_dir

    run = _run(spec)
    if run is None:
        return model_dir(spec)
    return checkpoint_dir(str(yaml.safe_load((run[0] / "config.yaml").read_text())["model"]["path"]))


def _run(spec: str):
    """(run dir, step or None for the latest) when `spec` is a run dir or one of its checkpoints (local or a URL)."""
    path = fs.path(spec)
    if (path / "config.yaml").exists():
        return path, None
    if path.parent.name == "checkpoints" and path.name.isdigit() and (path.parent.parent / "config.yaml").exists():
        return path.parent.parent, int(path.name)
    return None


def _restored(run_dir, step: int | None):
    from jaxadapt.sharding import make_mesh
    from jaxadapt.train.export import restore_model

    model, cfg, tokenizer, _ = restore_model(run_dir, step)
    if tokenizer is None:
        raise UserError(f"{run_dir}: the run has no tokenizer (set model.tokenizer in its config.yaml)")
    return model, tokenizer, make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)


def _pretrained(spec: str):
    from jaxadapt.io.hf import load_pretrained, load_tokenizer
    from jaxadapt.predict import model_dir
    from jaxadapt.sharding import make_mesh

    d = model_dir(spec)
    tokenizer = load_tokenizer(d)
    mesh = make_mesh()
    return load_pretrained(d, mesh=mesh), tokenizer, mesh
