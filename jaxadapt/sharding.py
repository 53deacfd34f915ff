"""The one sharding-rules table: parameter path -> logical axes -> mesh axes.

Every array leaf of the model (and of anything shaped like it: LoRA factors, optimizer moments) is matched by
its path against PARAM_RULES; a leaf without a rule is an error, never silently replicated. Logical axes map to
the mesh axes `data`, `fsdp`, `tensor` through LOGICAL_TO_MESH. A dimension that its mesh axes do not divide is
left unsharded on that axis (and the choice is visible in `describe`).
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxadapt.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axis (or tuple of mesh axes, or None = replicated).
LOGICAL_TO_MESH: dict[str, Any] = {
    "batch": ("data", "fsdp"),
    "seq": None,
    "vocab": "tensor",
    "embed": "fsdp",
    "heads": "tensor",  # q_proj output / o_proj input: num_heads * head_dim
    "kv_heads": "tensor",  # k_proj / v_proj output: num_kv_heads * head_dim
    "mlp": "tensor",
    "layers": None,
    "norm": None,
    "rank": None,  # LoRA rank
}

# (path regex matched at the end of the '/'-joined path, logical axes of the leaf). First match wins.
PARAM_RULES: list[tuple[str, tuple[str | None, ...]]] = [
    (r"embed_tokens/embedding$", ("vocab", "embed")),
    (r"lm_head/kernel$", ("embed", "vocab")),
    (r"layers/self_attn/q_proj/kernel$", ("layers", "embed", "heads")),
    (r"layers/self_attn/[kv]_proj/kernel$", ("layers", "embed", "kv_heads")),
    (r"layers/self_attn/o_proj/kernel$", ("layers", "heads", "embed")),
    (r"layers/self_attn/q_proj/bias$", ("layers", "heads")),
    (r"layers/self_attn/[kv]_proj/bias$", ("layers", "kv_heads")),
    (r"layers/self_attn/o_proj/bias$", ("layers", "embed")),
    (r"layers/mlp/(gate|up)_proj/kernel$", ("layers", "embed", "mlp")),
    (r"layers/mlp/down_proj/kernel$", ("layers", "mlp", "embed")),
    (r"layers/mlp/(gate|up)_proj/bias$", ("layers", "mlp")),
    (r"layers/mlp/down_proj/bias$", ("layers", "embed")),
    (r"layers/(input|post_attention)_layernorm/weight$", ("layers", "norm")),
    (r"model/norm/weight$", ("norm",)),
    # LoRA factors follow the sharding of the kernel they adapt; the rank axis is never split.
    (r"layers/self_attn/q_proj/lora_a$", ("layers", "embed", "rank")),
    (r"layers/self_attn/q_proj/lora_b$", ("layers", "rank", "heads")),
    (r"layers/self_attn/[kv]_proj/lora_a$", ("layers", "embed", "rank")),
    (r"layers/self_attn/[kv]_proj/lora_b$", ("layers", "rank", "kv_heads")),
    (r"layers/self_attn/o_proj/lora_a$", ("layers", "heads", "rank")),
    (r"layers/self_attn/o_proj/lora_b$", ("layers", "rank", "embed")),
    (r"layers/mlp/(gate|up)_proj/lora_a$", ("layers", "embed", "rank")),
    (r"layers/mlp/(gate|up)_proj/lora_b$", ("layers", "rank", "mlp")),
    (r"layers/mlp/down_proj/lora_a$", ("layers", "mlp", "rank")),
    (r"layers/mlp/down_proj/lora_b$", ("layers", "rank", "embed")),
    (r"layers/\w+/\w+_proj/lora_scale$", ("layers",)),
]


class ShardingError(UserError):
    """A mesh or a parameter that the sharding rules cannot place."""


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Iterable | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over all devices (of all processes); -1 takes the remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    free = [k for k, v in sizes.items() if v == -1]
    if len(free) > 1:
        raise ShardingError(f"mesh: at most one axis may be -1, got {sizes}")
    for k, v in sizes.items():
        if v != -1 and v < 1:
            raise ShardingError(f"mesh.{k}={v}: expected a positive size or -1")
    known = math.prod(v for v in sizes.values() if v != -1)
    if free:
        if len(devices) % known:
            raise ShardingError(f"mesh {sizes}: {len(devices)} devices are not divisible by {known}")
        sizes[free[0]] = len(devices) // known
    if math.prod(sizes.values()) != len(devices):
        raise ShardingError(f"mesh {sizes} needs {math.prod(sizes.values())} devices, but there are {len(devices)}")
    arr = np.asarray(devices).reshape(tuple(sizes[a] for a in MESH_AXES))
    return Mesh(arr, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def path_str(path) -> str:
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    if parts and parts[-1] == "value":  # nnx.Variable wraps its array in `.value`
        parts.pop()
    return "/".join(parts)


def logical_axes(path: str) -> tuple[str | None, ...]:
    for pattern, axes in PARAM_RULES:
        if re.search(pattern, path):
            return axes
    raise ShardingError(f"no sharding rule for parameter {path!r}; add one to jaxadapt/sharding.py PARAM_RULES")


def spec_for(path: str, shape: tuple[int, ...], mesh: Mesh) -> P:
    axes = logical_axes(path)
    if len(axes) != len(shape):
        raise ShardingError(f"rule for {path!r} has {len(axes)} axes {axes}, but the leaf has shape {shape}")
    out = []
    for dim, name in zip(shape, axes):
        mesh_axes = LOGICAL_TO_MESH.get(name) if name else None
        if mesh_axes is not None:
            names = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
            size = math.prod(mesh.shape[a] for a in names)
            if size == 1 or dim % size:
                mesh_axes = None
        out.append(mesh_axes)
    return P(*out)


def tree_shardings(tree, mesh: Mesh):
    """NamedSharding for every array leaf of a pytree (nnx.State, nested dicts, optimizer states), by path.
    Scalars (step counters) have no axis to shard and are replicated without needing a rule."""

    def one(path, leaf):
        if leaf.ndim == 0:
            return NamedSharding(mesh, P())
        return NamedSharding(mesh, spec_for(path_str(path), tuple(leaf.shape), mesh))

    return jax.tree_util.tree_map_with_path(one, tree)


def describe(tree, mesh: Mesh) -> dict[str, str]:
    """path -> PartitionSpec, for logs and tests."""
    flat = jax.tree_util.tree_flatten_with_path(tree_shardings(tree, mesh))[0]
    return {path_str(p): str(s.spec) for p, s in flat}
