"""The train step: split the model into trainable and frozen parts, jit one optimizer step with explicit
shardings and a donated state, accumulate gradients over micro-batches inside the step.

State (what a checkpoint holds): {"params": trainable params (pure dict), "opt_state", "step", "rng"}.
Frozen params are an argument, not a constant, so they stay sharded and are not baked into the executable.
Batches arrive as [grad_accum, micro_batch, seq] arrays sharded over (data, fsdp) on the micro-batch axis.

Mixed precision (model.param_dtype float32, model.compute_dtype bfloat16, what accelerators run): the float32
parameters are the master copy. Their gradients (autodiff of a cast returns the input's dtype), the sum of gradients
over micro-batches, clipping and AdamW's moments (optax keeps them in the parameters' dtype) are float32, and so are
the updates. Compute is bfloat16: each Linear casts its kernel at use (jaxadapt.model.Linear; under FSDP the layer is
cast before its all-gather, jaxadapt.sharding.constrain_layer) and the activations between layers are bfloat16;
RMSNorm's statistics and the attention softmax are float32. The LM head's bfloat16 product is widened to float32
logits before the log-softmax (jaxadapt.model.project), and the loss, token counts and metrics are float32
(jaxadapt.train.loss). tests/train/test_mixed_precision.py bounds a bfloat16 step against float32 (loss within 1e-3,
each gradient within 6% relative L2). param_dtype bfloat16 is pure bfloat16 training, not mixed precision: the
parameters and moments are bfloat16 with no float32 copy (half the state's memory), and an update smaller than
bfloat16's resolution (~0.4% of a weight) is rounded away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxadapt.config import ModelConfig
from jaxadapt.errors import UserError
from jaxadapt.model import Runtime
from jaxadapt.sharding import LOGICAL_TO_MESH, logical_size, param_mesh, path_str, per_device, tree_shardings
from jaxadapt.train.chunking import auto_attention_chunk, auto_logits_chunk
from jaxadapt.train.config import RunConfig
from jaxadapt.train.loss import OBJECTIVES, sequence_logprobs
from jaxadapt.train.optim import make_optimizer, schedule
from jaxadapt.train.partition import group, seen_tokens, split_trainable, update_scales, with_seen_rows


def batch_axis_size(mesh: Mesh) -> int:
    return logical_size(mesh, "batch")


def check_batch_divides(cfg: RunConfig, mesh: Mesh) -> None:
    micro = cfg.train.batch_size // cfg.train.grad_accum
    n = batch_axis_size(mesh)
    if micro % n:
        raise UserError(f"train.batch_size={cfg.train.batch_size} / grad_accum={cfg.train.grad_accum} = {micro} "
                        f"sequences per micro-batch, not divisible by the data-parallel size data*fsdp={n} "
                        f"of mesh {dict(mesh.shape)}")


@dataclass
class Engine:
    model_config: Any  # ModelConfig
    graphdef: Any
    frozen: dict  # {"model": frozen params, "ref": the DPO reference's trainable params (or {})}
    mesh: Mesh
    state_shardings: dict
    frozen_shardings: dict
    batch_sharding: NamedSharding
    step_fn: Callable
    lr_fn: optax.Schedule
    logits_chunk: int  # train.logits_chunk resolved ("auto" -> a number)

    def step(self, state, batch):
        return self.step_fn(state, self.frozen, batch)

    def model(self, params, frozen=None):
        """The nnx model with the given trainable params (for eval, export); pass `frozen` inside jit."""
        return nnx.merge(self.graphdef, params, (frozen or self.frozen)["model"])

    def trainable_matmul_params(self, state) -> int | None:
        """Weights in matmuls that get a weight gradient (None = all of them), for the FLOPs count."""
        return trainable_matmul_params(self.model_config, state["params"], self.frozen["model"])


def trainable_matmul_params(model_config, params, frozen_model) -> int | None:
    """`Engine.trainable_matmul_params` from the (possibly abstract) trainable and frozen trees."""
    if jax.tree.leaves(frozen_model) and any("kernel" in path_str(p) or "embedding" in path_str(p)
                                             for p, _ in jax.tree_util.tree_flatten_with_path(frozen_model)[0]):
        tied = model_config.tie_word_embeddings
        return sum(int(x.size) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
                   if group(path_str(p)) == "lora" or path_str(p) == "lm_head/kernel"
                   or (tied and path_str(p) == "model/embed_tokens/embedding"))
    return None


def state_shardings(state, mesh: Mesh):
    rep = NamedSharding(mesh, P())
    return {"params": tree_shardings(state["params"], mesh), "opt_state": tree_shardings(state["opt_state"], mesh),
            "step": rep, "rng": rep}


@dataclass
class StepParts:
    """The jitted step and what it needs, built from shapes alone (see `build_step`)."""

    step_fn: Callable  # (state, frozen, batch) -> (state, metrics), jitted with shardings, state donated
    init_fn: Callable  # trainable params -> the initial state, jitted with the state shardings
    lr_fn: optax.Schedule
    abstract_state: dict
    abstract_frozen: dict
    state_shardings: dict
    frozen_shardings: dict
    batch_sharding: NamedSharding
    logits_chunk: int


def rows_per_device(cfg: RunConfig, mesh: Mesh) -> int:
    """Sequences one device holds per micro-batch (DPO: chosen and rejected rows together)."""
    t = cfg.train
    return max(t.batch_size // t.grad_accum * (2 if t.objective == "dpo" else 1) // batch_axis_size(mesh), 1)


def resolve_logits_chunk(cfg: RunConfig, mesh: Mesh, vocab: int) -> int:
    """train.logits_chunk as a number: "auto" sizes it for the rows one device holds."""
    t = cfg.train
    return auto_logits_chunk(rows_per_device(cfg, mesh), t.seq_len, vocab) if t.logits_chunk == "auto" \
        else t.logits_chunk


def resolve_attention_impl(cfg: RunConfig, compute_dtype: str | None = None, *, model_cfg: ModelConfig | None = None,
                           training: bool = True) -> str | None:
    """model.attention_impl as the kernel to use. "auto": splash attention on a TPU (jaxadapt.splash, Pallas's
    block-sparse flash kernel), cuDNN's fused attention on a GPU computing in bfloat16 or float16 (it takes no
    float32) unless the model soft-caps its attention scores (Gemma-2: cuDNN cannot), XLA's elsewhere. On an H200
    cuDNN's bfloat16 logits and gradients were as close to float32 XLA as XLA's own bfloat16 ones (packed rows,
    sliding window; scripts/bench/device.py --check-attention) and its training step much faster, holding no scores
    (README, Performance).
    "splash" off a TPU is refused for training (Pallas could only interpret it there); a finished run restored
    elsewhere (`training=False`: export, eval) computes as "auto" would. `model_cfg`: the architecture, when known."""
    impl = cfg.model.attention_impl
    platform = jax.devices()[0].platform
    if impl == "splash" and platform != "tpu":
        if training:
            raise UserError(f"model.attention_impl: splash runs on a TPU only (Pallas's TPU kernel), and this is a "
                            f"{platform}; use auto, xla or cudnn")
        impl = "auto"
    capped = model_cfg is not None and model_cfg.attn_logit_softcapping is not None
    if impl == "cudnn" and capped:
        raise UserError(f"model.attention_impl: cudnn has no soft-capped attention scores, which this "
                        f"{model_cfg.model_type} model uses (attn_logit_softcapping={model_cfg.attn_logit_softcapping})"
                        "; use auto, xla or splash")
    if impl != "auto":
        return impl
    if platform == "tpu":
        return "splash"
    dtype = compute_dtype or cfg.model.compute_dtype
    return "cudnn" if platform == "gpu" and dtype in ("bfloat16", "float16") and not capped else "xla"


def resolve_attention_chunk(cfg: RunConfig, mesh: Mesh, model_cfg: ModelConfig) -> int:
    """model.attention_chunk as a number: "auto" sizes it for the rows and query heads one device holds (heads are
    split over the tensor axis); 0 with attention_impl cudnn or splash, whose fused kernels keep no scores."""
    chunk = cfg.model.attention_chunk
    if chunk != "auto":
        return chunk
    if resolve_attention_impl(cfg, model_cfg=model_cfg) in ("cudnn", "splash"):
        return 0
    heads = per_device(model_cfg.num_attention_heads, mesh, "heads")
    return auto_attention_chunk(rows_per_device(cfg, mesh), heads, cfg.train.seq_len, model_cfg.num_hidden_layers,
                                cfg.model.remat)


def train_runtime(cfg: RunConfig, mesh: Mesh, model_cfg: ModelConfig):
    """The model's Runtime for training run `cfg` on `mesh`: its dtypes and remat, the attention kernel and chunk
    resolved for these devices."""
    return Runtime(param_dtype=cfg.model.param_dtype, compute_dtype=cfg.model.compute_dtype, remat=cfg.model.remat,
                   attention_impl=resolve_attention_impl(cfg, model_cfg=model_cfg),
                   attention_chunk=resolve_attention_chunk(cfg, mesh, model_cfg))


def build_step(graphdef, params, frozen_model, cfg: RunConfig, mesh: Mesh, old_vocab: int | None = None) -> StepParts:
    """The train step for the nnx split (graphdef, trainable pure dict, frozen pure dict). Only the leaves' shapes
    and dtypes are read, so abstract trees (ShapeDtypeStruct) work: `jaxadapt plan` compiles the real step
    ahead of time without allocating a parameter."""
    t = cfg.train
    scales = update_scales(params, cfg, old_vocab)
    seen_only = cfg.optim.embedding_updates == "seen"
    opt = make_optimizer(cfg.optim, t.steps)
    objective = OBJECTIVES[t.objective]
    lr_fn = schedule(cfg.optim, t.steps)
    dropout = cfg.lora.dropout > 0 and t.trainable.lora
    embed = [tree["model"]["embed_tokens"]["embedding"] for tree in (params, frozen_model)
             if "embed_tokens" in tree.get("model", {})][0]
    chunk = resolve_logits_chunk(cfg, mesh, embed.shape[0])

    shape = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
    abstract_params = jax.tree.map(shape, params)
    abstract = {"params": abstract_params, "opt_state": jax.eval_shape(opt.init, abstract_params),
                "step": jax.ShapeDtypeStruct((), jnp.int32), "rng": jax.ShapeDtypeStruct((2,), jnp.uint32)}
    st_sh = state_shardings(abstract, mesh)
    # The DPO reference is the model as it starts: a copy of the trainable params, frozen.
    abstract_frozen = {"model": jax.tree.map(shape, frozen_model),
                       "ref": abstract_params if t.objective == "dpo" else {}}
    fr_sh = tree_shardings(abstract_frozen, mesh)
    batch_sh = NamedSharding(mesh, P(None, LOGICAL_TO_MESH["batch"], None))

    def loss_parts(p, fz, mb, rng):
        m = nnx.merge(graphdef, p, fz["model"])
        extra = {}
        if t.objective == "dpo":
            ref = nnx.merge(graphdef, fz["ref"], fz["model"])
            extra["ref_logps"] = jax.lax.stop_gradient(sequence_logprobs(ref, mb, chunk))
        total, n, aux = objective(m, mb, rng=rng if dropout else None, z_loss=t.z_loss, beta=t.dpo_beta,
                                  chunk=chunk, **extra)
        return total, (n, aux)

    grad_fn = jax.value_and_grad(loss_parts, has_aux=True)

    def train_step(state, fz, batch):
        with param_mesh(mesh):  # the scanned layers stay sharded while traced (jaxadapt.sharding.constrain_layer)
            return _train_step(state, fz, batch)

    def _train_step(state, fz, batch):
        rng = jax.random.fold_in(state["rng"], state["step"])
        p = state["params"]

        def micro(carry, xs):
            g_acc, tot_acc, n_acc, aux_acc = carry
            mb, i = xs
            (total, (n, aux)), g = grad_fn(p, fz, mb, jax.random.fold_in(rng, i))
            # Gradients live sharded like the params: under FSDP no device holds a full gradient stack.
            g_acc = jax.lax.with_sharding_constraint(jax.tree.map(jnp.add, g_acc, g), st_sh["params"])
            aux_acc = {k: aux_acc[k] + aux[k] for k in aux_acc}
            return (g_acc, tot_acc + total, n_acc + n, aux_acc), None

        zeros = jax.tree.map(jnp.zeros_like, p)
        aux0 = {k: jnp.zeros((), jnp.float32) for k in _aux_keys(t)}
        accum = jax.tree.leaves(batch)[0].shape[0]
        (g, total, n, aux), _ = jax.lax.scan(micro, (zeros, jnp.zeros(()), jnp.zeros(()), aux0),
                                             (batch, jnp.arange(accum)))
        n = jnp.maximum(n, 1.0)
        g = jax.tree.map(lambda x: x / n, g)
        factors = with_seen_rows(scales, seen_tokens(batch, embed.shape[0])) if seen_only else scales
        scaled = lambda tree, f: jax.tree.map(  # noqa: E731
            lambda x, s: x if s is None else f(x, s), tree, factors, is_leaf=lambda x: x is None)
        # A frozen row or group (factor 0) gives no gradient (clipping and Adam's moments see only what trains) and
        # keeps its value exactly; the others' updates are scaled after Adam, which makes the factor a lr multiplier.
        g = scaled(g, lambda x, s: jnp.where(s > 0, x, 0).astype(x.dtype))
        updates, opt_state = opt.update(g, state["opt_state"], p)
        stepped = optax.apply_updates(p, scaled(updates, lambda u, s: (u * s).astype(u.dtype)))
        new_p = jax.tree.map(lambda x, old, s: x if s is None else jnp.where(s > 0, x, old), stepped, p, factors,
                             is_leaf=lambda x: x is None)
        new = {"params": new_p, "opt_state": opt_state, "step": state["step"] + 1, "rng": state["rng"]}
        metrics = {"loss": total / n, "grad_norm": optax.tree.norm(g), "lr": lr_fn(state["step"]),
                   "tokens": n, **{k.replace("_sum", ""): v / n for k, v in aux.items()}}
        return new, metrics

    step_fn = jax.jit(train_step, in_shardings=(st_sh, fr_sh, batch_sh),
                      out_shardings=(st_sh, NamedSharding(mesh, P())), donate_argnums=(0,))
    init_fn = jax.jit(lambda p: {"params": p, "opt_state": opt.init(p), "step": jnp.zeros((), jnp.int32),
                                 "rng": jax.random.PRNGKey(t.seed)}, out_shardings=st_sh)
    return StepParts(step_fn, init_fn, lr_fn, abstract, abstract_frozen, st_sh, fr_sh, batch_sh, chunk)


def build_engine(model, cfg: RunConfig, mesh: Mesh, old_vocab: int | None = None):
    """Compile-ready engine and the initial (sharded) state for `model`, whose params are already placed."""
    graphdef, trainable, frozen = split_trainable(model, cfg.train.trainable)
    params, frozen = nnx.to_pure_dict(trainable), nnx.to_pure_dict(frozen)
    parts = build_step(graphdef, params, frozen, cfg, mesh, old_vocab)
    # device_put reshards a model that was loaded without a mesh.
    state = parts.init_fn(jax.device_put(params, parts.state_shardings["params"]))
    frozen = {"model": frozen, "ref": jax.tree.map(jnp.copy, params) if cfg.train.objective == "dpo" else {}}
    engine = Engine(model.config, graphdef, jax.device_put(frozen, parts.frozen_shardings), mesh,
                    parts.state_shardings, parts.frozen_shardings, parts.batch_sharding, parts.step_fn, parts.lr_fn,
                    parts.logits_chunk)
    return engine, state


def _aux_keys(t) -> tuple[str, ...]:
    if t.objective == "dpo":
        return ("reward_acc_sum",)
    return ("z_loss_sum",) if t.z_loss else ()


def shard_batch(batch: dict, engine: Engine, grad_accum: int):
    """A host batch {key: [global_batch, seq]} (or this process's share of it) -> device arrays
    [grad_accum, micro, seq] sharded over the data axes; works across processes. Per-row metadata
    (`num_bytes`) stays on the host."""
    out = {}
    for k, x in batch.items():
        if k == "num_bytes":
            continue
        x = x.reshape(grad_accum, x.shape[0] // grad_accum, *x.shape[1:])
        global_shape = (grad_accum, x.shape[1] * jax.process_count(), *x.shape[2:])
        out[k] = jax.make_array_from_process_local_data(engine.batch_sharding, x, global_shape)
    return out
