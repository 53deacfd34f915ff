"""The training run config: one frozen dataclass tree, loaded from YAML by `jaxadapt.config.loader`.

Defaults follow the studies in ../shared/METHODS.md where they agree (AdamW, cosine, warmup, clip 1.0);
recipes override them. `train.trainable` is parsed where the config is read (`Trainable`); semantic checks that
need more than types (counts, divisibility of the batch) live in `validate`, which runs before anything is compiled.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Literal

from jaxadapt.config.loader import Spelled
from jaxadapt.data.config import DataConfig
from jaxadapt.errors import UserError
from jaxadapt.model import REMAT_POLICIES
from jaxadapt.params import LORA_TARGETS

TRAINABLE_PARTS = ("full", "lora", "embeddings", "new_rows")
# the dtypes a run trains in (float16 would need loss scaling, which the trainer does not do)
TRAIN_DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class Trainable(Spelled):
    """`train.trainable`, parsed once where the config is read: which weights train and which embedding rows.

    YAML spells it as parts of TRAINABLE_PARTS joined by '+' ("lora+embeddings"); it is written back exactly as
    spelled, since a resume compares the saved config with the new one."""

    spelling: str
    body: bool = field(init=False)  # every weight that is neither a LoRA factor nor an embedding / LM-head row
    lora: bool = field(init=False)  # the LoRA factors
    # the embedding and LM-head rows: none, all, or only the rows vocab adapt added (ids >= old_vocab_size)
    rows: Literal["none", "all", "new"] = field(init=False)

    def __post_init__(self):
        spec = self.spelling
        parts = frozenset(p.strip() for p in spec.split("+") if p.strip())
        unknown = sorted(parts - set(TRAINABLE_PARTS))
        if unknown or not parts:
            raise UserError(f"{spec!r}: unknown part(s) {unknown or [spec]}; expected "
                            f"{' | '.join(TRAINABLE_PARTS)} or a '+'-joined union such as 'lora+embeddings'")
        if "full" in parts and len(parts) > 1:
            raise UserError(f"{spec!r}: 'full' already trains everything; use it alone")
        if {"embeddings", "new_rows"} <= parts:
            raise UserError(f"{spec!r}: 'embeddings' already trains every row; drop 'new_rows'")
        rows = "all" if parts & {"full", "embeddings"} else "new" if "new_rows" in parts else "none"
        for name, value in (("body", "full" in parts), ("lora", "lora" in parts), ("rows", rows)):
            object.__setattr__(self, name, value)

    def __str__(self) -> str:
        return self.spelling


@dataclass(frozen=True)
class MeshConfig:
    data: int = -1  # -1: the devices left over by the other axes
    fsdp: int = 1
    tensor: int = 1


@dataclass(frozen=True)
class LoraConfig:
    rank: int = 8
    alpha: float = 32.0
    dropout: float = 0.0
    targets: tuple[str, ...] = LORA_TARGETS
    rslora: bool = False  # scale alpha/sqrt(r) instead of alpha/r
    layers: tuple[int, ...] | None = None  # None: every layer; negative indices count from the end


@dataclass(frozen=True)
class GroupScales:
    """Learning-rate multipliers per parameter group; 0 freezes a group bit for bit (no update, no weight decay).

    Adam normalises every gradient, so on a tied embedding matrix the softmax's small gradient moves each row of
    an unseen token by about the learning rate per step; a small `old_rows` keeps what the model knew."""

    new_rows: float = 1.0  # embedding and LM-head rows of the tokens added by vocab adapt (ids >= old_vocab_size)
    old_rows: float = 1.0  # the rows the model came with (every row of a model without adaptation.json)
    lora: float = 1.0  # LoRA factors
    body: float = 1.0  # every other trained weight (full fine-tuning: attention, MLP, norms)


@dataclass(frozen=True)
class OptimConfig:
    learning_rate: float = 3e-4
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # the schedule decays to learning_rate * min_lr_ratio
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0  # decoupled (AdamW); never applied to norms and biases
    embedding_weight_decay: bool = False  # decay embedding and LM-head rows too (pulls unseen rows toward 0)
    clip_norm: float | None = 1.0
    groups: GroupScales = field(default_factory=GroupScales)
    # "seen": an embedding / LM-head row moves only in steps whose batch holds its token (as input or as target);
    # its Adam moments still decay in between. "all": every row moves every step, as plain AdamW does.
    embedding_updates: Literal["all", "seen"] = "all"


@dataclass(frozen=True)
class TrainConfig:
    trainable: Trainable = Trainable("full")  # a string here is parsed as YAML's is: TrainConfig(trainable="lora")
    objective: Literal["clm", "sft", "dpo"] = "clm"
    steps: int = 100
    batch_size: int = 8  # global sequences per optimizer step (across grad_accum micro-batches)
    grad_accum: int = 1
    seq_len: int = 1024
    z_loss: float = 0.0
    # positions per chunk of the LM head + cross-entropy, recomputed in the backward (jaxadapt.train.loss.
    # target_logprobs); 0: all positions at once; else a divisor of seq_len. "auto": chunk only where one device's
    # float32 logits would exceed 1 GiB (jaxadapt.train.chunking.auto_logits_chunk).
    logits_chunk: int | Literal["auto"] = "auto"
    dpo_beta: float = 0.1
    old_vocab_size: int | None = None  # for new_rows; default: adaptation.json of the model dir
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0  # 0: evaluate only at the end (when eval data is configured)
    eval_batches: int = 8

    def __post_init__(self):
        if isinstance(self.trainable, str):
            object.__setattr__(self, "trainable", Trainable(self.trainable))


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 500  # steps between saves (and always at the end)
    keep: int = 3
    async_save: bool = True


@dataclass(frozen=True)
class LoggingConfig:
    tensorboard: bool = True
    wandb_project: str | None = None
    cpu_peak_flops: float | None = None  # MFU denominator on CPU; None = measure a matmul once


@dataclass(frozen=True)
class ModelSection:
    path: str = ""  # an HF dir, a hub id, or a preset name (random init, for smoke tests and benchmarks)
    tokenizer: str | None = None  # default: the model dir's own tokenizer
    param_dtype: Literal[TRAIN_DTYPES] = "float32"
    compute_dtype: Literal[TRAIN_DTYPES] = "float32"
    remat: Literal[tuple(REMAT_POLICIES)] = "none"
    # the attention kernel; auto: splash on a TPU (jaxadapt.splash), cuDNN's fused attention on a GPU computing in
    # bfloat16/float16, XLA's elsewhere (train/step.resolve_attention_impl); None: jax.nn.dot_product_attention's
    # own choice
    attention_impl: Literal["auto", "xla", "cudnn", "splash"] | None = "auto"
    # queries per chunk of the training attention, recomputed in the backward; 0: all queries at once; else a
    # divisor of train.seq_len. "auto": chunk only where one device would hold more than 1 GiB of float32 attention
    # scores (jaxadapt.train.chunking.auto_attention_chunk).
    attention_chunk: int | Literal["auto"] = "auto"


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    runs_root: str = "runs"  # the run dir is runs_root/name
    model: ModelSection = field(default_factory=ModelSection)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    data: DataConfig = field(default_factory=DataConfig)


def validate(cfg: RunConfig) -> None:
    """Semantic checks that must fail before any compile (the mesh and batch split are checked with the devices)."""
    t = cfg.train
    positive = [(f"train.{k}", getattr(t, k)) for k in ("steps", "batch_size", "grad_accum", "seq_len", "log_every")]
    positive += [("checkpoint.every", cfg.checkpoint.every), ("lora.rank", cfg.lora.rank)]
    for key, value in positive:
        if value < 1:
            raise UserError(f"{key}={value}: expected a positive integer")
    if cfg.checkpoint.keep < 1:
        raise UserError(f"checkpoint.keep={cfg.checkpoint.keep}: expected at least 1 (the final step is always kept; "
                        "0 would delete the trained weights)")
    if t.eval_every < 0:
        raise UserError(f"train.eval_every={t.eval_every}: expected 0 (only at the end) or a positive integer")
    for key, chunk in (("model.attention_chunk", cfg.model.attention_chunk), ("train.logits_chunk", t.logits_chunk)):
        if chunk != "auto" and (chunk < 0 or (chunk and t.seq_len % chunk)):
            raise UserError(f"{key}={chunk}: expected 0 (no chunking) or a divisor of train.seq_len={t.seq_len}")
    o = cfg.optim
    if not o.learning_rate > 0:
        raise UserError(f"optim.learning_rate={o.learning_rate}: expected a positive number")
    for group, scale in vars(o.groups).items():
        if not scale >= 0:
            raise UserError(f"optim.groups.{group}={scale}: expected a learning-rate multiplier >= 0 (0 freezes)")
    if t.batch_size % t.grad_accum:
        raise UserError(f"train.batch_size={t.batch_size} is not divisible by train.grad_accum={t.grad_accum}")
    bad = sorted(set(cfg.lora.targets) - set(LORA_TARGETS))
    if bad:
        raise UserError(f"lora.targets: unknown module(s) {bad}; expected a subset of {list(LORA_TARGETS)}")
    if not 0 <= cfg.lora.dropout < 1:
        raise UserError(f"lora.dropout={cfg.lora.dropout}: expected 0 <= dropout < 1")
    if not cfg.model.path:
        raise UserError("model.path is empty: give an HF dir, a hub id or a preset name")
    if cfg.logging.wandb_project and importlib.util.find_spec("wandb") is None:
        raise UserError(f"logging.wandb_project={cfg.logging.wandb_project!r}: wandb is not installed; install the "
                        "extra (pip install -e '.[wandb]') or unset the key")
    want = {"clm": "pretrain", "sft": "sft", "dpo": "dpo"}[t.objective]
    if cfg.data.sources and cfg.data.task != want:
        raise UserError(f"train.objective={t.objective!r} needs data.task={want!r}, got data.task={cfg.data.task!r}")
