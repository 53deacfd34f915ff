"""Configuration: the model architecture (`ModelConfig`), model presets and the YAML run-config system."""

from jaxadapt.config.loader import config_hash, dump_yaml, load_config, save_resolved, to_dict
from jaxadapt.config.model import ConfigError, ModelConfig
from jaxadapt.config.presets import list_presets, model_preset

__all__ = [
    "ConfigError", "ModelConfig", "config_hash", "dump_yaml", "list_presets", "load_config", "model_preset",
    "save_resolved", "to_dict",
]
