"""`train(cfg)`: the continued-pretraining loop, from a resolved RunConfig to a run dir.

runs/NAME/
  config.yaml      the resolved config (also stored in every checkpoint's meta)
  metrics.jsonl    one JSON object per logged step
  checkpoints/     orbax steps; a restart in the same run dir resumes from the newest one that restores
  config_history.jsonl  what each resume changed (only with allow_changes), and from which step
  tensorboard/

One trainer per run dir (a lock); a resume must use the recorded config (train/rundir.py). SIGTERM / SIGINT (spot
preemption, SLURM's --signal, Ctrl-C) finish the current step, save it, and raise errors.Stopped: the command exits
75 (errors.PREEMPTED) after SIGTERM, 130 after SIGINT, never 0, so a watcher can tell "resume me" from "finished".
With several processes the signal reaches one host at a time (or only one), so JAX's preemption service (its own
SIGTERM handler, started by jax.distributed.initialize) agrees on the step: every process asks
`reached_preemption_sync_point(step)` after each step, and all save that same step, then exit 75.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from typing import Protocol

import jax
import numpy as np

from jaxadapt.config.loader import save_resolved, to_dict
from jaxadapt.errors import INTERRUPTED, PREEMPTED, Stopped, UserError
from jaxadapt import fs
from jaxadapt.model import Runtime
from jaxadapt.perf import device_peak_flops, train_flops_per_token
from jaxadapt.sharding import make_mesh
from jaxadapt.train.checkpoint import Checkpointer
from jaxadapt.train.config import RunConfig, validate
from jaxadapt.train.distributed import maybe_initialize
from jaxadapt.train.lora import add_lora
from jaxadapt.train.loss import scored_logprobs
from jaxadapt.train.metrics import MetricsLogger
from jaxadapt.train.partition import resolve_old_vocab
from jaxadapt.train.modelload import architecture, load_model, load_training_tokenizer
from jaxadapt.train.rundir import (RunLock, check_resume, first_missing, record_changes, remove_if_unused,
                                   truncate_metrics)
from jaxadapt.train.step import (Engine, build_engine, check_batch_divides, resolve_attention_chunk,
                                 resolve_attention_impl, shard_batch)


class DataIterator(Protocol):
    """What the loop needs from the data pipeline: per-process numpy batches and an exact-resume state."""

    def __next__(self) -> dict[str, np.ndarray]: ...
    def get_state(self) -> dict: ...
    def set_state(self, state: dict) -> None: ...


class _Stop:
    """Why the loop stops early (`reason`, None while it goes on); `check(step)` after every step.

    One process: SIGTERM / SIGINT set it. Several: SIGTERM is left to JAX's preemption notifier and every process
    polls the sync point, so all stop after the same step; SIGINT is passed to that notifier as a SIGTERM."""

    def __init__(self, multiprocess: bool):
        self.reason = None
        self.code = 0
        self._multi = multiprocess
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGINT,) if self._multi else (signal.SIGTERM, signal.SIGINT):
            self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, _frame):
        if self._multi:
            signal.raise_signal(signal.SIGTERM)  # to JAX's notifier, which has the SIGTERM handler
        else:
            self.reason = signal.Signals(signum).name
            self.code = PREEMPTED if signum == signal.SIGTERM else INTERRUPTED

    def check(self, step: int) -> bool:
        if self._multi and self.reason is None:
            from jax.experimental.multihost_utils import reached_preemption_sync_point

            if reached_preemption_sync_point(step):
                self.reason = f"preemption notice (SIGTERM on a host; all {jax.process_count()} processes stop here)"
                self.code = PREEMPTED
        return self.reason is not None

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def run_dir_of(cfg: RunConfig):
    """runs_root/name: a local path, or a `gs://` (any fsspec) URL."""
    return fs.path(cfg.runs_root) / cfg.name


def train(cfg: RunConfig, data: DataIterator | None = None, eval_data: dict | None = None,
          allow_changes: bool = False):
    """Train per `cfg`; `data`/`eval_data` default to the pipeline built from cfg.data. Returns the run dir.

    A run dir with checkpoints is resumed; `allow_changes` lets a resume change keys other than rundir.FIXED."""
    maybe_initialize()
    validate(cfg)
    mesh = make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    check_batch_divides(cfg, mesh)
    if data is None:  # before the weights load or the run dir exists: a bad corpus fails in seconds
        data, eval_data = build_data(cfg, load_training_tokenizer(cfg.model))
    rdir = run_dir_of(cfg)
    created = first_missing(rdir)
    with RunLock(rdir, active=jax.process_index() == 0):
        try:
            return _train(cfg, mesh, rdir, data, eval_data, allow_changes)
        except BaseException:
            if created and jax.process_index() == 0:
                remove_if_unused(rdir, created)
            raise


def _train(cfg: RunConfig, mesh, rdir, data, eval_data, allow_changes: bool):
    t = cfg.train
    ckpt = Checkpointer(rdir / "checkpoints", keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save)
    latest = ckpt.latest_step()
    try:
        changes = check_resume(rdir, to_dict(cfg), latest, allow_changes) if latest is not None else {}
    except UserError:
        ckpt.close()
        raise
    arch = architecture(cfg.model)
    attention_chunk = resolve_attention_chunk(cfg, mesh, arch)
    if attention_chunk and cfg.model.attention_chunk == "auto":
        _say(f"model.attention_chunk auto: the training attention runs {attention_chunk} queries at a time")
    rt = Runtime(param_dtype=cfg.model.param_dtype, compute_dtype=cfg.model.compute_dtype, remat=cfg.model.remat,
                 attention_impl=resolve_attention_impl(cfg, model_cfg=arch), attention_chunk=attention_chunk)
    model = load_model(cfg.model, rt, mesh, seed=t.seed)
    old_vocab = resolve_old_vocab(cfg)
    if t.trainable.lora:
        add_lora(model, cfg.lora, seed=t.seed)
    engine, state = build_engine(model, cfg, mesh, old_vocab)
    del model

    start = 0
    restored = ckpt.restore_latest(state, engine.state_shardings) if latest is not None else None
    if restored is not None:
        start, state, data_state, _ = restored
        data.set_state(data_state)
        if start >= t.steps:  # restoring it verified the final checkpoint
            ckpt.close()
            _say(f"{rdir} already finished ({start} of train.steps={t.steps} steps); nothing to do")
            return rdir
    # Rows logged after the restored step (or, with nothing to restore, by a run killed before its first checkpoint)
    # are about to be logged again.
    dropped = truncate_metrics(rdir, start) if jax.process_index() == 0 else 0
    if restored is not None:
        _say(f"resumed {rdir} from step {start}" + (f" (dropped {dropped} metrics rows logged after it)"
                                                       if dropped else ""))
    elif dropped:
        _say(f"{rdir}: no checkpoint to resume from; starting again (dropped {dropped} metrics rows)")
    if jax.process_index() == 0:  # after the restore: the step the changes take effect from is the restored one
        record_changes(rdir, start, changes)
        save_resolved(cfg, rdir)

    logger = MetricsLogger(rdir, cfg.logging.tensorboard, cfg.logging.wandb_project, to_dict(cfg), t.steps)
    flops_per_token = train_flops_per_token(engine.model_config, t.seq_len, engine.trainable_matmul_params(state))
    peak = device_peak_flops(cpu_peak=cfg.logging.cpu_peak_flops) * jax.device_count()
    tokens_seen = start * t.batch_size * t.seq_len
    meta = {"config": to_dict(cfg)}
    step = start
    # The preemption service is on by default; without it (jax_enable_preemption_service=False) each process
    # falls back to its own signal, as a single process does.
    with _Stop(jax.process_count() > 1 and jax.config.jax_enable_preemption_service) as stop:
        while step < t.steps:
            batch = shard_batch(next(data), engine, t.grad_accum)
            t0 = time.perf_counter()
            state, metrics = engine.step(state, batch)
            metrics = jax.device_get(metrics)
            dt = time.perf_counter() - t0
            step += 1
            tokens_seen += t.batch_size * t.seq_len
            if step % t.log_every == 0 or step == t.steps or step == start + 1:
                tps = t.batch_size * t.seq_len / dt
                logger.log(step, {**metrics, "tokens_seen": tokens_seen, "tokens_per_sec": tps,
                                  "mfu": tps * flops_per_token / peak, "step_time_s": dt})
            if eval_data and t.eval_every and step % t.eval_every == 0:
                logger.log(step, evaluate(engine, state, eval_data, t.eval_batches, engine.logits_chunk))
            last = step == t.steps
            stopping = stop.check(step)
            if last or step % cfg.checkpoint.every == 0 or stopping:
                logger.flush()  # a resume from this step keeps the rows up to it
                ckpt.save(step, state, data.get_state(), meta)
            if stopping and not last:
                ckpt.wait()
                _say(f"{stop.reason}: saved step {step} in {rdir / 'checkpoints'}; run the same command to resume "
                     f"(exit {stop.code})")
                break
    if eval_data and step == t.steps and not t.eval_every:
        logger.log(step, evaluate(engine, state, eval_data, t.eval_batches, engine.logits_chunk))
    ckpt.close()
    logger.close()
    if step < t.steps:  # stopped early, saved: not finished
        if jax.process_count() > 1:  # no process leaves (and ends the job) before every one has written its part
            from jax.experimental.multihost_utils import sync_global_devices

            sync_global_devices("jaxadapt: stopped and saved")
        raise Stopped(stop.code)
    return rdir


def evaluate(engine: Engine, state, eval_data: dict, max_batches: int, chunk: int = 0) -> dict:
    """Loss and bits per byte per validation source: total NLL / (UTF-8 bytes x ln 2)."""
    @jax.jit
    def nll(params, fz, batch):
        scored = batch["loss_mask"] > 0
        return -scored_logprobs(engine.model(params, fz), batch, scored, chunk=chunk).sum(), scored.sum()

    out = {}
    for name, batches in eval_data.items():
        total = count = nbytes = 0.0
        for b in batches[:max_batches]:
            arrays = shard_batch(b, engine, 1)
            s, n = nll(state["params"], engine.frozen, {k: v[0] for k, v in arrays.items()})
            total, count, nbytes = total + float(s), count + float(n), nbytes + float(np.sum(b["num_bytes"]))
        out[f"eval/{name}/loss"] = total / max(count, 1)
        out[f"eval/{name}/bpb"] = total / max(nbytes, 1) / math.log(2)
    return out


def build_data(cfg: RunConfig, tokenizer):
    """The training iterator (this process's share) and the validation batches per source, from cfg.data."""
    from jaxadapt.data import build_eval_batches, build_train_iterator

    if tokenizer is None:
        raise UserError(f"model.path={cfg.model.path!r} has no tokenizer files and model.tokenizer is not set: the "
                        "data needs a tokenizer")
    if not cfg.data.sources:
        raise UserError("data.sources is empty: name at least one corpus to train on")
    t = cfg.train
    it = build_train_iterator(cfg.data, tokenizer, seq_len=t.seq_len, global_batch=t.batch_size,
                              process_index=jax.process_index(), process_count=jax.process_count())
    evals = build_eval_batches(cfg.data, tokenizer, seq_len=t.seq_len, batch_size=t.batch_size // t.grad_accum,
                               process_index=jax.process_index(), process_count=jax.process_count())
    return _Peeked(it), evals


class _Peeked:
    """A data iterator whose first batch is read at once, so that a bad record fails before the model loads. The
    batch is handed out first unless `set_state` (a resume) moves the stream elsewhere."""

    def __init__(self, it: DataIterator):
        self._it = it
        self._first = [next(it)]

    def __next__(self) -> dict[str, np.ndarray]:
        return self._first.pop() if self._first else next(self._it)

    def get_state(self) -> dict:
        return self._it.get_state()

    def set_state(self, state: dict) -> None:
        self._first = []
        self._it.set_state(state)


def _say(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, file=sys.stderr, flush=True)
