"""jaxadapt: teach existing LLMs a new language, JAX-native.

The public names are imported lazily: grain worker processes and the CLI import sub-packages without paying
for jax, flax and transformers at `import jaxadapt`.
"""

import importlib

_EXPORTS = {
    "ModelConfig": "jaxadapt.config",
    "LlamaForCausalLM": "jaxadapt.model",
    "Runtime": "jaxadapt.model",
    "load_pretrained": "jaxadapt.io.hf",
    "save_pretrained": "jaxadapt.io.hf",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'jaxadapt' has no attribute {name!r}")
