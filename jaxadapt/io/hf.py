"""HF checkpoint directories <-> jaxadapt models.

Loading builds every parameter with `jax.make_array_from_callback`: each device shard reads only its own
slice of the memory-mapped safetensors (layer by layer for the stacked `layers` axis), so a checkpoint is never
held twice in host memory and a mesh larger than one host works. Saving streams tensor by tensor into a
temporary directory that is renamed into place at the end: an interrupted save leaves no half-written model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, SingleDeviceSharding

from jaxadapt.config import ModelConfig
from jaxadapt.errors import UserError, first_line
from jaxadapt.io.atomic import atomic_dir
from jaxadapt import fs
from jaxadapt.fs import is_hub_id, is_url, local_copy
from jaxadapt.io.safetensors import (
    CheckpointError,
    SafetensorsFile,
    open_checkpoint,
    plan_shards,
    write_safetensors,
)
from jaxadapt.model import LlamaForCausalLM, Runtime, abstract_model
from jaxadapt.params import check_paths, specs_for
from jaxadapt.sharding import path_str, tree_shardings

MAX_SHARD_BYTES = 5 * 1024**3
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "chat_template.jinja", "added_tokens.json", "vocab.json", "merges.txt",
)
# Tensors some HF checkpoints carry that are derived, not learned.
IGNORED_TENSORS = re.compile(r"rotary_emb\.inv_freq$")
# A multimodal Gemma-3 (Gemma3ForConditionalGeneration) holds its text tower under one of these prefixes (older and
# newer transformers), beside the vision tower and projector that jaxadapt leaves out.
TEXT_TOWER = re.compile(r"^(language_model\.model\.|model\.language_model\.|language_model\.(?=lm_head\.))")
VISION_TENSORS = re.compile(r"^(model\.)?(vision_tower|multi_modal_projector)\.")


# ---------------------------------------------------------------------------------------------- names
def hf_layout(cfg: ModelConfig) -> dict[str, tuple[str, int | None, bool]]:
    """HF tensor name -> (jaxadapt param path, layer index or None, transposed?), from the parameter-spec table:
    top-level tensors first, then layer by layer."""
    specs = specs_for(cfg)
    out = {s.hf_name(): (s.path, None, s.transpose) for s in specs if not s.stacked}
    for i in range(cfg.num_hidden_layers):
        out.update((s.hf_name(i), (s.path, i, s.transpose)) for s in specs if s.stacked)
    return out


def hf_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> the shape HF stores it in, for the model `cfg` describes."""
    _, abstract = nnx.split(abstract_model(cfg))
    ours = {path_str(p): leaf.shape for p, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]}
    check_paths(cfg, ours)
    out = {}
    for hf_name, (path, layer, t) in hf_layout(cfg).items():
        shape = ours[path][1:] if layer is not None else ours[path]
        out[hf_name] = tuple(shape[::-1] if t else shape)
    return out


def by_param(cfg: ModelConfig) -> dict[str, list[tuple[str, int | None, bool]]]:
    """jaxadapt param path -> [(HF name, layer, transposed)], layers in order."""
    out: dict[str, list] = {}
    for hf_name, (path, layer, t) in hf_layout(cfg).items():
        out.setdefault(path, []).append((hf_name, layer, t))
    return out


# ---------------------------------------------------------------------------------------------- load
def resolve_local(spec: str | os.PathLike, tokenizer_files: tuple[str, ...] = TOKENIZER_FILES) -> Path:
    """An existing file or dir as is; else a hub id's snapshot (resolve); else the path, for the caller to report
    missing. For tokenizer arguments, which may also be a file (a tokenizer.json) that `resolve` refuses. A URL
    (gs://...) is fetched as a tokenizer: `_fetch_tokenizer`."""
    if is_url(str(spec)):
        return _fetch_tokenizer(str(spec).rstrip("/"), tokenizer_files)
    p = Path(spec)
    return resolve(spec) if not p.exists() and is_hub_id(spec) else p


def _fetch_tokenizer(url: str, side_files: tuple[str, ...]) -> Path:
    """A local copy (in the cache) of the tokenizer files at a URL: a .json file, or tokenizer.json of a dir, with
    `side_files` beside it, never a model's weights. Copied afresh each time (they are small); what the URL no longer
    has is removed. A URL with nothing there gives a path that does not exist, for the caller to report."""
    import hashlib
    import shutil

    from jaxadapt.fs import cache_dir

    if not fs.exists(url):
        return Path(url)
    root, first = url.rsplit("/", 1) if fs.isfile(url) else (url, "tokenizer.json")
    dest = cache_dir("remote", "tokenizer-" + hashlib.sha256(root.encode()).hexdigest()[:16])
    for name in dict.fromkeys((first, *side_files)):
        if fs.isfile(f"{root}/{name}"):
            with fs.open_read(f"{root}/{name}") as src, fs.atomic_file(dest / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            (dest / name).unlink(missing_ok=True)
    return dest / first if first != "tokenizer.json" else dest


def resolve(path_or_hub_id: str | os.PathLike) -> Path:
    """A local dir as is; a URL (`gs://...`) mirrored into the cache; an `org/name` hub id through huggingface_hub."""
    if is_url(str(path_or_hub_id)):
        from jaxadapt.fs import cache_dir

        return Path(local_copy(str(path_or_hub_id), str(cache_dir("remote"))))
    p = Path(path_or_hub_id)
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"{p}: expected a model directory (config.json + *.safetensors)")
        return p
    if is_hub_id(path_or_hub_id):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(str(path_or_hub_id), allow_patterns=["*.json", "*.safetensors",
                                                                                "tokenizer*", "*.jinja"]))
        except Exception as e:  # the network boundary: offline, not found, gated, connection errors alike
            raise CheckpointError(f"{p}: no such directory, and the hub id {str(path_or_hub_id)!r} cannot be had "
                                  f"({first_line(e)})") from None
    raise CheckpointError(f"{p}: no such directory (and not a hub id of the form org/name)")


def has_tokenizer(model_dir: Path) -> bool:
    return any((Path(model_dir) / f).exists() for f in TOKENIZER_FILES)


def load_tokenizer(model_dir: str | os.PathLike):
    """transformers' tokenizer of an HF dir; a UserError naming the dir when it has none or it does not load
    (a model dir copied without its tokenizer files is a common mistake)."""
    from transformers import AutoTokenizer

    d = Path(model_dir)
    if not has_tokenizer(d):
        raise UserError(f"{d}: no tokenizer files (expected tokenizer.json or one of {', '.join(TOKENIZER_FILES[1:])})"
                        "; copy them from the model's source, or point at a tokenizer dir (model.tokenizer)")
    try:
        return AutoTokenizer.from_pretrained(str(d))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise UserError(f"{d}: its tokenizer does not load ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def read_hf_config(model_dir: Path) -> dict:
    """The raw config.json of an HF model dir (keys jaxadapt does not model, such as the dtype, included)."""
    f = Path(model_dir) / "config.json"
    if not f.is_file():
        raise CheckpointError(f"{f}: missing (an HF model directory needs config.json)")
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f}: invalid JSON ({e})") from None


def read_config(model_dir: Path) -> ModelConfig:
    return ModelConfig.from_hf(read_hf_config(model_dir), source=str(Path(model_dir) / "config.json"))


def open_tensors(model_dir: Path, cfg: ModelConfig) -> dict[str, SafetensorsFile]:
    """The checkpoint's tensors (name -> file), checked against what `cfg` needs: no unexpected or missing tensor,
    every shape as config.json implies. Derived tensors (rotary inv_freq) and a tied model's stored head are
    tolerated and never read."""
    tensors = _text_tower(open_checkpoint(model_dir))
    layout = hf_layout(cfg)
    unexpected = sorted(n for n in tensors if n not in layout and not IGNORED_TENSORS.search(n)
                        and not (n == "lm_head.weight" and cfg.tie_word_embeddings))
    if unexpected:
        raise CheckpointError(f"{model_dir}: unexpected tensors for {cfg.model_type} {unexpected[:5]}"
                              + (f" (+{len(unexpected) - 5} more)" if len(unexpected) > 5 else ""))
    missing = sorted(n for n in layout if n not in tensors)
    if missing:
        raise CheckpointError(f"{model_dir}: missing tensors {missing[:5]}"
                              + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
    for hf_name, shape in hf_shapes(cfg).items():
        got = tensors[hf_name].shape(hf_name)
        if got != shape:
            raise CheckpointError(f"{tensors[hf_name].path}: tensor {hf_name!r} has shape {got}, "
                                  f"expected {shape} from config.json")
    return tensors


def _text_tower(tensors: dict[str, SafetensorsFile]) -> dict[str, SafetensorsFile]:
    """A multimodal checkpoint's text tower under the text model's own names (`model.layers...`), its vision tensors
    left out; any other checkpoint as it is. A renamed tensor is read from its file under its stored name."""
    if not any(TEXT_TOWER.match(n) for n in tensors):
        return tensors
    out = {}
    for name, f in tensors.items():
        if VISION_TENSORS.match(name):
            continue
        new = TEXT_TOWER.sub(lambda m: "" if m.group(1) == "language_model." else "model.", name)
        f.header.setdefault(new, f.header[name])  # an alias: the same bytes under the text model's name
        out[new] = f
    return out


def load_pretrained(path_or_hub_id, dtype: str = "float32", mesh: Mesh | None = None,
                    runtime: Runtime | None = None) -> LlamaForCausalLM:
    """Load an HF Llama-family checkpoint. `dtype` is the parameter (and default compute) dtype."""
    model_dir = resolve(path_or_hub_id)
    cfg = read_config(model_dir)
    rt = runtime or Runtime(param_dtype=dtype, compute_dtype=dtype)
    tensors = open_tensors(model_dir, cfg)

    graphdef, abstract = nnx.split(abstract_model(cfg, rt))
    shardings = (tree_shardings(abstract, mesh) if mesh is not None
                 else jax.tree.map(lambda _: SingleDeviceSharding(jax.devices()[0]), abstract))
    sources = by_param(cfg)

    def build(path, leaf, sharding):
        entries = sources[path_str(path)]
        expected = tuple(leaf.shape)

        def read(index):
            if entries[0][1] is None:
                hf_name, _, t = entries[0]
                arr = tensors[hf_name][hf_name]
                arr = arr.T if t else arr
                return np.asarray(arr[index], dtype=leaf.dtype)
            rows = []
            for hf_name, _, t in entries[index[0]]:
                arr = tensors[hf_name][hf_name]
                rows.append(np.asarray((arr.T if t else arr)[index[1:]], dtype=leaf.dtype))
            return np.stack(rows)

        return jax.make_array_from_callback(expected, sharding, read)

    state = jax.tree_util.tree_map_with_path(build, abstract, shardings)
    return nnx.merge(graphdef, state)


# ---------------------------------------------------------------------------------------------- save
def _host(x) -> np.ndarray:
    if not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(jax.device_get(x))


def save_pretrained(model: LlamaForCausalLM, out_dir, tokenizer: Any = None, dtype: str | None = None,
                    max_shard_bytes: int = MAX_SHARD_BYTES, generation_config: dict | None = None,
                    extra_files: dict[str, str] | None = None) -> Path:
    """Write an HF dir (config, generation config, safetensors shards, tokenizer); returns its path.

    `tokenizer` is a transformers tokenizer, a directory holding tokenizer files, or None. `extra_files`
    (name -> text) land in the same atomic write, e.g. adaptation.json. Every process must call this (gathering
    sharded parameters is collective); only process 0 writes.
    """
    cfg: ModelConfig = model.config
    out = fs.path(out_dir)
    params = {path_str(p): leaf for p, leaf in
              jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]}
    np_dtype = np.dtype(jnp.dtype(dtype or model.runtime.param_dtype))
    layout = hf_layout(cfg)
    specs = hf_specs(cfg, np_dtype)

    cache: dict[str, np.ndarray] = {}

    def produce(hf_name):
        path, layer, t = layout[hf_name]
        if path not in cache:
            cache.clear()  # one stacked parameter in host memory at a time (names are sorted by layer)
            cache[path] = _host(params[path])
        arr = cache[path] if layer is None else cache[path][layer]
        return (arr.T if t else arr).astype(np_dtype)

    if jax.process_index() != 0:
        for name, _, _ in specs:  # take part in the gathers, write nothing
            produce(name)
        return out
    return write_hf_dir(out, cfg, specs, produce, dtype=str(np_dtype), tokenizer=tokenizer,
                        max_shard_bytes=max_shard_bytes, generation_config=generation_config,
                        extra_files=extra_files)


def hf_specs(cfg: ModelConfig, dtype) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    """(HF name, shape, dtype) of every tensor `cfg`'s checkpoint holds, in the order jaxadapt writes them: grouped
    by parameter (a stacked layer parameter is gathered from the devices once), layers in order."""
    layout = hf_layout(cfg)

    def order(name):
        m = re.match(r"model\.layers\.(\d+)\.", name)
        return layout[name][0], (int(m.group(1)) if m else -1, name)

    return sorted(((name, shape, np.dtype(dtype)) for name, shape in hf_shapes(cfg).items()),
                  key=lambda s: order(s[0]))


WEIGHT_FILES = ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin*")  # stale if left


def write_hf_dir(out_dir, cfg: ModelConfig, specs: list[tuple[str, tuple[int, ...], np.dtype]], produce, *,
                 dtype: str, tokenizer: Any = None, max_shard_bytes: int = MAX_SHARD_BYTES,
                 generation_config: dict | None = None, extra_files: dict[str, str] | None = None) -> Path:
    """Write an HF dir from tensor specs (HF name, shape, dtype) and `produce(name) -> array`, called in specs order.

    Shared by `save_pretrained` and checkpoint importers (GGUF): everything lands in a temporary directory beside
    out_dir that replaces it only once complete, so a failure at any tensor leaves no output behind.
    """
    groups = list(plan_shards(specs, max_shard_bytes))
    with atomic_dir(out_dir, replaces=WEIGHT_FILES) as tmp:
        if len(groups) == 1:
            write_safetensors(tmp / "model.safetensors", groups[0], produce)
        else:
            weight_map, total = {}, 0
            for i, g in enumerate(groups):
                fname = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
                write_safetensors(tmp / fname, g, produce)
                for name, shape, dt in g:
                    weight_map[name] = fname
                    total += int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
            index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        (tmp / "config.json").write_text(json.dumps(cfg.to_hf(dtype=dtype), indent=2))
        gen = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}
        if cfg.pad_token_id is not None:
            gen["pad_token_id"] = cfg.pad_token_id
        gen.update(generation_config or {})
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2))
        _write_tokenizer(tokenizer, tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return fs.path(out_dir)


def _write_tokenizer(tokenizer, dest: Path) -> None:
    if tokenizer is None:
        return
    if isinstance(tokenizer, (str, os.PathLike)):
        src = Path(tokenizer)
        found = [src / f for f in TOKENIZER_FILES if (src / f).exists()]
        if not found:
            raise CheckpointError(f"{src}: no tokenizer files (expected one of {TOKENIZER_FILES})")
        for f in found:
            shutil.copy2(f, dest / f.name)
    else:
        tokenizer.save_pretrained(str(dest))
