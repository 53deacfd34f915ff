"""Named model architectures (`llama3-8b`, `smollm2-135m`, ...) so a run can be planned without a checkpoint.

Each preset is a copy of the published HF config.json fields in `configs/models/<name>.yaml` (package data: see
config/shipped.py), read through `ModelConfig.from_hf`, so a preset and the real checkpoint's config.json describe
the same model. Shapes, memory and sharding plans can then be worked out (`abstract_model`) before downloading tens
of gigabytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from jaxadapt.config.loader import read_yaml
from jaxadapt.config.model import ModelConfig
from jaxadapt.config.shipped import PRESETS_DIR, shipped_names
from jaxadapt.errors import UserError, first_line
from jaxadapt import fs

_SUFFIXES = (".yaml", ".yml", ".json")


def list_presets() -> list[str]:
    """The preset names, sorted."""
    return shipped_names(PRESETS_DIR)


def model_preset(name_or_path: str | os.PathLike) -> ModelConfig:
    """A preset name, a YAML/JSON file of HF config fields, an HF model directory (its config.json), or a hub id
    (only its config.json is fetched: a plan needs no weights)."""
    path = Path(name_or_path)
    if not path.exists() and fs.is_hub_id(name_or_path) and path.suffix not in _SUFFIXES:
        path = _hub_config(str(name_or_path))
    if path.is_dir():
        path = path / "config.json"
    elif path.suffix not in _SUFFIXES and not path.is_file():  # a name; note `llama3.1-8b` has suffix `.1-8b`
        if not PRESETS_DIR.is_dir():
            raise UserError(f"model preset {str(name_or_path)!r}: the presets directory {PRESETS_DIR} is missing "
                            "(presets ship inside the package: a broken install; reinstall jaxadapt)")
        path = PRESETS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise UserError(f"unknown model preset {str(name_or_path)!r}; valid presets: {', '.join(list_presets())} "
                            "(or give a path to a config.json / .yaml file)")
    if path.suffix == ".json":
        try:
            hf = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"{path}: file not found") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: invalid JSON: {e}") from None
        if not isinstance(hf, dict):
            raise UserError(f"{path}: expected a JSON object of HF config fields")
    else:
        hf = read_yaml(path)
    return ModelConfig.from_hf(hf, source=str(path))


def _hub_config(repo: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, "config.json"))
    except Exception as e:  # the network boundary: offline, not found, gated, connection errors alike
        raise UserError(f"model {repo!r}: not a preset or a local path, and its config.json cannot be had from the "
                        f"hub ({first_line(e)})") from None
