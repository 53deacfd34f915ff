"""The package reads bottom-up (README's Layout): a module imports only from its own area and the areas below it,
lazy imports inside functions included, and nothing but the entry point imports `jaxadapt.cli`. The command
functions each area keeps (`io/cli.py`, `eval/command.py`, ...) form one layer of their own, just below the recipes
that call them: a command may use any library module."""

import ast
from pathlib import Path

import jaxadapt

# README's Layout, bottom first: a top-level module or a subpackage of jaxadapt each
LAYERS = ["errors", "fs", "options", "config", "perf", "params", "sharding", "splash", "model", "io", "assets", "data",
          "vocab", "train", "modelref", "cpu_decode", "generate", "lep", "eval", "predict", "commands", "recipes",
          "quickstart", "cli"]
COMMANDS = {"jaxadapt.io.cli", "jaxadapt.data.cli", "jaxadapt.vocab.cli", "jaxadapt.train.cli", "jaxadapt.lep.cli",
            "jaxadapt.eval.command"}


def _area(module: str) -> str | None:
    if module in COMMANDS:
        return "commands"
    parts = module.split(".")
    return parts[1] if parts[0] == "jaxadapt" and len(parts) > 1 else None


def _imports(path: Path, package: str):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))
            elif node.module:
                yield node.module
                if node.module == "jaxadapt":  # `from jaxadapt import fs`
                    yield from (f"jaxadapt.{a.name}" for a in node.names)


def test_every_module_imports_only_downwards():
    root = Path(jaxadapt.__file__).parent
    upward, unknown = [], []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        module = ".".join(rel.parts)
        package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
        me = _area(module)
        if me in (None, "__init__"):
            continue
        if me not in LAYERS:
            unknown.append(module)
            continue
        for target in _imports(path, package):
            other = _area(target)
            if other is None or other == me or other == "__init__":
                continue
            if other not in LAYERS:
                unknown.append(target)
            elif LAYERS.index(other) > LAYERS.index(me):
                upward.append(f"{module} imports {target}")
    assert not unknown, f"modules outside README's Layout (add them to LAYERS and the README): {sorted(set(unknown))}"
    assert not upward, upward
