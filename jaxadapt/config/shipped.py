"""The configs that come with jaxadapt (model presets, the study recipes, the EXPERIMENTS.md recipes), found as
package data so that every install has them: `pip install -e .`, a wheel, `pip install git+...`.

In the repository they live in `configs/` and the package holds a link to it (`jaxadapt/configs -> ../configs`): an
editable install reads the checkout's own files, and a wheel copies them into the package (pyproject.toml's
package-data), so there is one copy to edit and nothing to keep in step.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from jaxadapt.errors import UserError

CONFIGS_DIR = Path(str(resources.files("jaxadapt") / "configs"))
PRESETS_DIR = CONFIGS_DIR / "models"
RECIPE_DIRS = (CONFIGS_DIR / "recipes", CONFIGS_DIR / "experiments")


def shipped_names(*dirs: Path) -> list[str]:
    """The names (file stems) of the YAML files in `dirs`, sorted."""
    return sorted(p.stem for d in dirs for p in d.glob("*.yaml"))


def shipped_recipe(name: str) -> Path:
    """The shipped recipe called `name` (`chocollama-lora`, `b-initialisation`, ...)."""
    for d in RECIPE_DIRS:
        if (d / f"{name}.yaml").is_file():
            return d / f"{name}.yaml"
    if not CONFIGS_DIR.is_dir():
        raise UserError(f"recipe {name!r}: jaxadapt's configs directory {CONFIGS_DIR} is missing (a broken install: "
                        "reinstall jaxadapt)")
    raise UserError(f"recipe {name!r}: no such file, and no recipe of that name ships with jaxadapt (shipped: "
                    f"{', '.join(shipped_names(*RECIPE_DIRS))})")
