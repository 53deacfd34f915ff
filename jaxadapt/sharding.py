"""Sharding: parameter path -> logical axes -> mesh axes.

Every array leaf of the model (and of anything shaped like it: LoRA factors, optimizer moments) is matched by
its path against PARAM_RULES, which the parameter-spec table (jaxadapt.params) derives; a leaf without a rule is an
error, never silently replicated. Logical axes map to the mesh axes `data`, `fsdp`, `tensor` through
LOGICAL_TO_MESH. A dimension that its mesh axes do not divide is left unsharded on that axis (`spec_for` returns
the choice).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import re
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxadapt.errors import UserError
from jaxadapt.params import sharding_rules

MESH_AXES = ("data", "fsdp", "tensor")
DATA, FSDP, TENSOR = MESH_AXES  # the only spelling of the mesh axis names; code names them by these constants

# Logical axis -> mesh axis (or tuple of mesh axes, or None = replicated).
LOGICAL_TO_MESH: dict[str, Any] = {
    "batch": (DATA, FSDP),
    "seq": None,
    "vocab": TENSOR,
    "embed": FSDP,
    "heads": TENSOR,  # q_proj output / o_proj input: num_heads * head_dim
    "kv_heads": TENSOR,  # k_proj / v_proj output: num_kv_heads * head_dim
    "mlp": TENSOR,
    "layers": None,
    "norm": None,
    "rank": None,  # LoRA rank
}

# (path regex matched at the end of the '/'-joined path, logical axes of the leaf), derived from the parameter-spec
# table (jaxadapt.params): every parameter, and the LoRA factors, which follow the sharding of the kernel they adapt.
PARAM_RULES: list[tuple[str, tuple[str | None, ...]]] = sharding_rules()


class ShardingError(UserError):
    """A mesh or a parameter that the sharding rules cannot place."""


def parse_mesh(spec: str) -> dict[str, int]:
    """'data=2,fsdp=4' -> {'data': 2, 'fsdp': 4, 'tensor': 1}; every size explicit (the device count follows)."""
    sizes = dict.fromkeys(MESH_AXES, 1)
    seen = set()
    for item in spec.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or key not in sizes or key in seen or not value.strip().isdigit() or int(value) < 1:
            raise UserError(f"--mesh {spec!r}: expected comma-separated AXIS=SIZE with AXIS one of "
                            f"{', '.join(MESH_AXES)} (each at most once) and SIZE a positive integer, e.g. "
                            f"{DATA}=2,{FSDP}=4")
        seen.add(key)
        sizes[key] = int(value)
    return sizes


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Iterable | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over all devices (of all processes); -1 takes the remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = dict(zip(MESH_AXES, (data, fsdp, tensor)))
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


def reading_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1) -> Mesh:
    """The mesh a run trained on where these devices allow it, else every device on the fsdp axis (parameters
    sharded, not replicated). A run is exported or evaluated on other hardware than it trained on, and the mesh only
    says where the arrays live, not what they are."""
    try:
        return make_mesh(data, fsdp, tensor)
    except ShardingError:
        return make_mesh(1, -1, 1)


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
    raise ShardingError(f"no sharding rule for parameter {path!r}; add its ParamSpec to jaxadapt/params.py PARAMS")


def logical_size(mesh: Mesh, name: str) -> int:
    """How many ways `mesh` splits the logical axis `name` (1 where the rules table replicates it)."""
    mesh_axes = LOGICAL_TO_MESH.get(name)
    if mesh_axes is None:
        return 1
    return math.prod(mesh.shape[a] for a in ((mesh_axes,) if isinstance(mesh_axes, str) else mesh_axes))


def per_device(n: int, mesh: Mesh, name: str) -> int:
    """How many of `n` entries along the logical axis `name` one device holds (rounded up)."""
    return -(-n // logical_size(mesh, name))


def spec_for(path: str, shape: tuple[int, ...], mesh: Mesh) -> P:
    return _spec(path, logical_axes(path), shape, mesh)


def _spec(path: str, axes: tuple[str | None, ...], shape: tuple[int, ...], mesh: Mesh) -> P:
    if len(axes) != len(shape):
        raise ShardingError(f"rule for {path!r} has {len(axes)} axes {axes}, but the leaf has shape {shape}")
    out = []
    for dim, name in zip(shape, axes):
        mesh_axes = LOGICAL_TO_MESH.get(name) if name else None
        if mesh_axes is not None:
            size = logical_size(mesh, name)
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


# The mesh the params are laid out on while a train step is traced (see `param_mesh`); None outside.
_PARAM_MESH: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar("jaxadapt_param_mesh", default=None)


@contextlib.contextmanager
def param_mesh(mesh: Mesh):
    """While tracing under this context, the model keeps each scanned layer's params on their sharded layout
    (`constrain_layer`), so FSDP gathers one layer at a time inside the scan, not the whole stack before it."""
    token = _PARAM_MESH.set(mesh)
    try:
        yield mesh
    finally:
        _PARAM_MESH.reset(token)


def active_mesh() -> Mesh | None:
    """The mesh of the train step being traced (`param_mesh`), or None: for kernels that XLA cannot partition and
    that run per device under shard_map (jaxadapt.splash)."""
    return _PARAM_MESH.get()


def gathers_layers() -> bool:
    """Whether a `param_mesh` with an `fsdp` axis larger than 1 is active: the scanned layers are then gathered one
    at a time (`constrain_layer`)."""
    mesh = _PARAM_MESH.get()
    return mesh is not None and mesh.shape.get(FSDP, 1) > 1


def constrain_layer(layer_state, compute_dtype=None):
    """One layer's params, as sliced out of the stacked `layers` params by the scan: kept on their sharded layout
    (the rule minus the leading `layers` axis), cast to `compute_dtype` if that is narrower (the layer casts them
    anyway; gathering the narrow copy moves fewer bytes), then gathered over `fsdp` for the layer's matmuls. So
    FSDP holds one full layer at a time, and the backward reduce-scatters each layer's gradient into the sharded
    stack. Identity unless `gathers_layers()` (single device, data or tensor parallelism only, generation, eval)."""
    if not gathers_layers():
        return layer_state
    mesh = _PARAM_MESH.get()

    def one(path, leaf):
        if leaf.ndim == 0:
            return leaf
        name = "layers/" + path_str(path)
        axes = logical_axes(name)
        if not axes or axes[0] != "layers":
            raise ShardingError(f"rule for {name!r} has no leading 'layers' axis: {axes}")
        spec = _spec(name, axes[1:], tuple(leaf.shape), mesh)
        gathered = P(*(_without_fsdp(a) for a in spec))
        if gathered == spec:
            return leaf
        leaf = jax.lax.with_sharding_constraint(leaf, NamedSharding(mesh, spec))
        if (compute_dtype is not None and jnp.issubdtype(leaf.dtype, jnp.floating)
                and jnp.dtype(compute_dtype).itemsize < leaf.dtype.itemsize):
            leaf = leaf.astype(compute_dtype)
        return jax.lax.with_sharding_constraint(leaf, NamedSharding(mesh, gathered))

    return jax.tree_util.tree_map_with_path(one, layer_state)


def recompute_gathered(policy):
    """A `jax.checkpoint` policy for the scanned layer under FSDP: save what `policy` saves (None: everything),
    except the outputs of sharding constraints, i.e. the gathered weights. The backward gathers each layer again
    instead of the forward keeping every layer's full weights as residuals (which would undo FSDP's saving)."""

    def saveable(prim, *args, **params):
        if prim.name == "sharding_constraint":
            return False
        return True if policy is None else policy(prim, *args, **params)

    return saveable


def constrain_batch(x):
    """Activations [batch, ...] split over the data-parallel axes (LOGICAL_TO_MESH['batch']) and replicated
    otherwise: without this, the partitioner may follow the embedding's `fsdp`-split hidden axis instead and run
    every layer on the whole batch. Identity unless `gathers_layers()`."""
    if not gathers_layers():
        return x
    mesh = _PARAM_MESH.get()
    spec = _spec("activations", ("batch",) + (None,) * (x.ndim - 1), tuple(x.shape), mesh)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def vocab_parallel(h, head):
    """(h, head) laid out for a vocabulary-parallel LM head: the head [hidden, vocab] split over `fsdp` (and
    `tensor`) along the vocabulary, h [batch, seq, hidden] whole except over `data`. Each device then computes the
    logits of its vocabulary slice for every token, and the head's gradient stays a slice: the head is never
    gathered whole, which for a 128K vocabulary would be most of a device's FSDP memory. Identity unless
    `gathers_layers()`; `split_vocab` lays out the logits to match."""
    return _vocab_constraint(h, vocab_last=False), _vocab_constraint(head, vocab_last=True)


def split_vocab(logits):
    """Logits [batch, seq, vocab] split along the vocabulary like `vocab_parallel`'s head. Identity unless
    `gathers_layers()`."""
    return _vocab_constraint(logits, vocab_last=True)


def _vocab_constraint(x, vocab_last: bool):
    """x with `data` on a leading batch axis (3-D arrays) and, if vocab_last, (`fsdp`, `tensor`) on the last axis;
    identity unless `gathers_layers()`."""
    if not gathers_layers():
        return x
    mesh = _PARAM_MESH.get()
    lead = [None] * (x.ndim - 1)
    if x.ndim == 3 and x.shape[0] % mesh.shape[DATA] == 0 and mesh.shape[DATA] > 1:
        lead[0] = DATA
    split = tuple(a for a in (FSDP, TENSOR) if mesh.shape[a] > 1)
    last = split if vocab_last and split and x.shape[-1] % math.prod(mesh.shape[a] for a in split) == 0 else None
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(*lead, last)))


def _without_fsdp(axis):
    if axis is None or axis == FSDP:
        return None
    if isinstance(axis, str):
        return axis
    rest = tuple(a for a in axis if a != FSDP)
    return None if not rest else rest[0] if len(rest) == 1 else rest
