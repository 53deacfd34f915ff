"""MODEL arguments of `jaxadapt eval`: an HF dir, a hub id, 'smollm2', a .gguf, a run dir or one of its checkpoints."""

from __future__ import annotations

from pathlib import Path

from jaxadapt.errors import UserError


def load_for_eval(spec: str):
    """(model, tokenizer, mesh). A run dir restores its latest checkpoint (LoRA applied) on the run's own mesh, so
    the parameters stay where training put them; everything else loads replicated over a data mesh of all devices."""
    path = Path(spec)
    if (path / "config.yaml").exists():
        return _restored(path, None)
    if path.parent.name == "checkpoints" and path.name.isdigit() and (path.parent.parent / "config.yaml").exists():
        return _restored(path.parent.parent, int(path.name))
    return _pretrained(spec)


def _restored(run_dir: Path, step: int | None):
    from jaxadapt.sharding import make_mesh
    from jaxadapt.train.export import restore_model

    model, cfg, tokenizer, _ = restore_model(run_dir, step)
    if tokenizer is None:
        raise UserError(f"{run_dir}: the run has no tokenizer (set model.tokenizer in its config.yaml)")
    return model, tokenizer, make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)


def _pretrained(spec: str):
    from transformers import AutoTokenizer

    from jaxadapt.io.hf import TOKENIZER_FILES, load_pretrained
    from jaxadapt.predict import model_dir
    from jaxadapt.sharding import make_mesh

    d = model_dir(spec)
    if not any((d / f).exists() for f in TOKENIZER_FILES):
        raise UserError(f"{d}: no tokenizer files (expected one of {TOKENIZER_FILES})")
    mesh = make_mesh()
    return load_pretrained(d, mesh=mesh), AutoTokenizer.from_pretrained(str(d)), mesh
