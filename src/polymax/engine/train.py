"""The training loop, written to be read top to bottom: batch → forward → losses → backward → step.

:func:`fit` is the loop itself and takes ready-made pieces (model, objective, data set), so it can be
driven by any model that has ``.tasks`` and returns a :class:`~polymax.structures.ModelOutput`: one trunk pass runs
every task of the model and the objective (:mod:`polymax.engine.objective`) sums the tasks' losses; the loop never
reads a task's own fields. :func:`train` is the command-line orchestrator: it builds those pieces from a
:class:`TrainConfig` and calls :func:`fit`.

Guarantees (tested in ``tests/engine``):
* ``--resume`` is bit-identical: 2N steps straight and N steps + resume + N steps give identical weights and
  optimiser state — the checkpoint holds model, optimiser, scheduler, every rank's RNG states and the data
  stream position, and sample augmentation depends only on the sample's stream position.
* A non-finite loss stops all ranks *before* the optimiser step and leaves the last checkpoint untouched.
* SIGINT / SIGTERM finish the current step, write a checkpoint and return; a second one aborts at once. The
  caller's signal handlers are back in place when :func:`fit` returns or raises.
* With ``keep_best``, ``OUT/best/`` holds the checkpoint of the best evaluation so far (:mod:`polymax.engine.best`),
  written as ``OUT/last/`` is; only rank 0 writes, after every rank has agreed that the evaluation improved.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polymax.config.train import TrainConfig, fill_step_defaults, precise_bn_batches
from polymax.engine import distributed
from polymax.engine.best import BEST, BestCheckpoint, check_metric
from polymax.engine.checkpoint import (
    LAST,
    TrainingState,
    capture_rng,
    find_checkpoint,
    load_checkpoint,
    recipe_changes,
    remove_interrupted_saves,
    restore_rng,
    save_checkpoint,
    saved_config,
)
from polymax.engine.optim import build_optimizer, load_optimizer_state, set_learning_rate
from polymax.engine.reporting import (
    PICTURE_IMAGES,
    ScalarLog,
    logger,
    prediction_grid,
    progress_bar,
    require_tracker,
    run_log,
)
from polymax.engine.sampler import SeededDataset, ShardedStream
from polymax.errors import UserError
from polymax.structures import ModelOutput


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; training stopped without writing a checkpoint."""


@dataclass
class TrainResult:
    """step: optimiser steps done. checkpoint: the last checkpoint written. interrupted: the signal number
    that stopped the run early (None when it ran to the end). last_loss / metrics: for scripts and tests."""

    step: int
    checkpoint: Path | None
    interrupted: int | None
    last_loss: float
    losses: list[float]
    metrics: dict[str, float]


def train(config: TrainConfig, *, resume: bool | str = False, allow_config_change: bool = False) -> TrainResult:
    """Build model, objective and data from ``config`` and run :func:`fit`. Under ``torchrun`` every rank
    calls this; rank 0 prints, logs and writes. On ``resume`` a recipe that differs from the checkpoint's
    (batch size, learning rate, fewer steps, data set) is refused unless ``allow_config_change``.
    ``resume="auto"``: continue when ``out_dir/last`` exists, start otherwise (restarts and requeues re-run one
    command)."""
    from polymax.engine.assemble import (
        build_collate,
        build_eval_set,
        build_evaluate_fn,
        build_train_set,
        build_training_model,
    )
    from polymax.engine.objective import build_objective

    if resume == "auto":      # decided before any rank writes, so every rank sees the same folder
        resume = (Path(config.out_dir) / LAST).exists()
    context = distributed.setup(config.device)
    try:
        check_out_dir(Path(config.out_dir), resume=bool(resume))
        with run_log(config.out_dir, enabled=context.is_main):
            if resume:
                check_recipe(config, allow_change=allow_config_change, context=context)
            model = build_training_model(config)
            config = dataclasses.replace(config, precise_bn_batches=precise_bn_batches(config))   # None → this run's
            _say(context, "resolved training config:\n" + config.to_yaml())
            eval_set = build_eval_set(config, model.config) if config.eval_every else None
            evaluate_fn = build_evaluate_fn(config, model.config, device=context.device, dataset=eval_set,
                                            context=context) \
                if eval_set is not None else None
            check_tracking(config, has_evaluation=evaluate_fn is not None)
            if config.keep_best and evaluate_fn is not None:   # every rank, before training: names, no images
                with torch.random.fork_rng(devices=[]):         # the loader draws a seed; training must not see it
                    check_metric(config.keep_best, evaluate_fn(model, max_batches=0))
            return fit(config, model=model, objective=build_objective(model.config, config),
                       train_set=build_train_set(config, model.config), collate_fn=build_collate(model.config),
                       resume=bool(resume), evaluate_fn=evaluate_fn, context=context,
                       picture_set=eval_set if config.tensorboard else None)
    except OSError as error:
        if error.errno not in _WRITE_ERRNOS:
            raise
        what = f" ({error.filename})" if error.filename else ""
        raise UserError(f"cannot write to the output folder {config.out_dir}{what}: {error.strerror or error}; "
                        f"the last checkpoint there is intact") from None
    finally:
        distributed.teardown(context)


# A full disk, a quota, a read-only or failing disk: the run cannot go on, and the user has to act.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG}


def ensure_writable_dir(directory: Path, *, what: str = "output folder") -> None:
    """Create ``directory`` and prove it writable, or fail with one line naming it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserError(f"cannot write to the {what} {directory}: {error.strerror or error}") from error


def check_out_dir(out_dir: Path, *, resume: bool) -> None:
    """Fail early with a clear message: unwritable folder, --resume without a checkpoint, or a run that
    would silently overwrite an existing checkpoint."""
    ensure_writable_dir(out_dir)
    remove_interrupted_saves(out_dir)
    if resume:
        find_checkpoint(out_dir)
    elif (out_dir / LAST).exists():
        raise UserError(f"{out_dir / LAST} already holds a checkpoint; pass --resume to continue that run or "
                        "choose another --out")


def check_tracking(config: TrainConfig, *, has_evaluation: bool) -> None:
    """One line, before any step, for a keep_best without evaluation or a tracker whose library is missing."""
    if config.keep_best and not config.eval_every:
        raise UserError(f"keep_best={config.keep_best} needs periodic evaluation: set eval_every=N (--set "
                        "eval_every=1000), or drop keep_best")
    if config.keep_best and not has_evaluation:
        raise UserError(f"keep_best={config.keep_best} needs evaluation data, and the {config.data.dataset} data "
                        f"set has no {config.data.eval_split!r} split here (set data.eval_split), or drop keep_best")
    if config.tracker:
        require_tracker(config.tracker)


def check_recipe(config: TrainConfig, *, allow_change: bool, context) -> None:
    """Name what differs from the checkpoint's recipe; refuse it unless the user allowed it."""
    changes = recipe_changes(saved_config(find_checkpoint(Path(config.out_dir))), config.to_dict())
    if not changes:
        return
    if not allow_change:
        raise UserError(f"--resume with a recipe that differs from the checkpoint's ({'; '.join(changes)}); "
                        "pass the run's own values, or --allow-config-change to continue with the new ones")
    _say(context, "resuming with a changed recipe: " + "; ".join(changes))


def fit(config: TrainConfig, *, model: nn.Module, objective: Callable, train_set: SeededDataset,
        collate_fn: Callable, resume: bool = False, evaluate_fn: Callable[[nn.Module], dict] | None = None,
        context: distributed.DistributedContext | None = None, picture_set: Sequence | None = None) -> TrainResult:
    """Train ``model`` (unwrapped, with ``.config`` and ``.tasks``) for ``config.steps`` optimiser steps.

    Each micro-batch runs ``model(images, task=model.tasks)`` (every task on one trunk pass) and
    objective(output: ModelOutput, targets) → LossTerms; train_set[(index, seed)] → one augmented sample;
    collate_fn(samples) → Batch(images, targets); evaluate_fn(model) → metrics, run on every rank (each scores
    its share of the images; :func:`polymax.inference.evaluate.evaluate` merges them).
    picture_set: held-out Samples whose first PICTURE_IMAGES are drawn to TensorBoard after each evaluation.
    """
    context = context or distributed.DistributedContext()
    config, _ = fill_step_defaults(config)   # a TrainConfig built by hand may leave the warm-up to the run length
    check_tracking(config, has_evaluation=evaluate_fn is not None)
    out_dir = Path(config.out_dir)
    device, micro_batches = context.device, config.data.accumulate
    per_rank_batch = config.data.batch_size // (context.world_size * micro_batches)
    if per_rank_batch * context.world_size * micro_batches != config.data.batch_size:
        raise UserError(f"batch size {config.data.batch_size} does not split into {context.world_size} ranks × "
                        f"{micro_batches} micro-batches")
    seed_everything(config.seed + context.rank)  # distinct drop-path masks per rank
    model.to(device)
    optimizer, schedule = build_optimizer(
        model, lr=config.optim.lr, weight_decay=config.optim.weight_decay,
        backbone_lr_multiplier=config.optim.backbone_lr_multiplier, betas=(config.optim.beta1, config.optim.beta2),
        eps=config.optim.eps, warmup_steps=config.optim.warmup_steps, total_steps=config.steps,
        power=config.optim.poly_power)
    extra = _objective_parameters(objective, optimizer, device=device, lr=config.optim.lr)
    generators = _random_generators(objective)
    tasks = tuple(model.tasks)   # a tuple even for one task: the objective indexes the output by task name

    # fp16 needs its loss scaled so that small gradients survive; bf16 has float32's range and needs none.
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    step, rng_to_restore = 0, None
    if resume:
        state = load_checkpoint(find_checkpoint(out_dir), model=model)
        load_optimizer_state(optimizer, state.optimizer)
        if state.grad_scaler and scaler.is_enabled():
            scaler.load_state_dict(state.grad_scaler)
        step = state.step
        if extra:
            objective.load_state_dict(state.objective)
        if len(state.rng) == context.world_size:
            rng_to_restore = state.rng[context.rank]
        else:  # a different number of ranks: reproducible, though no longer identical to an uninterrupted run
            seed_everything(config.seed + context.rank + 7919 * step)
        _say(context, f"resumed from {out_dir / LAST} at step {step}")
    if step >= config.steps:
        _say(context, f"nothing to do: the checkpoint is at step {step} and --steps is {config.steps}")
    train_model = distributed.wrap_model(model, context, sync_bn=config.sync_bn)
    batches = iter(_loader(train_set, collate_fn, config=config, context=context, per_rank_batch=per_rank_batch,
                           start_micro_step=step * micro_batches))
    if rng_to_restore is not None:
        restore_rng(rng_to_restore, generators)  # last, so that nothing above consumes the restored streams

    save_to = partial(_save, context, model=model, optimizer=optimizer, schedule=schedule, config=config,
                      generators=generators, scaler=scaler, objective=objective if extra else None)
    save_now = partial(save_to, out_dir / LAST)   # a checkpoint at a given step
    best = BestCheckpoint(out_dir, metric=config.keep_best, mode=config.keep_best_mode, resume=resume) \
        if config.keep_best else None
    log = ScalarLog(out_dir, enabled=context.is_main, tensorboard=config.tensorboard, tracker=config.tracker,
                    config=config.to_dict())
    draw = _picture_drawer(picture_set) if picture_set is not None and log.draws_pictures else None
    bar = progress_bar(total=config.steps, initial=step, enabled=context.is_main and config.progress)
    losses: list[float] = []
    metrics: dict[str, float] = {}
    checkpoint: Path | None = None
    with StopRequest() as stop:
        while step < config.steps:
            # Warm-up, then polynomial decay, evaluated at the global step.
            lr = set_learning_rate(optimizer, schedule(step))

            # Forward and backward over the micro-batches; DDP all-reduces gradients on the last one only.
            train_model.train()
            loss_sum = torch.zeros((), device=device)
            for micro_step in range(micro_batches):
                batch = to_device(_next_batch(batches, step=step, save=None if context.enabled else save_now), device)
                last_micro_step = micro_step == micro_batches - 1
                with nullcontext() if last_micro_step or not context.enabled else train_model.no_sync():
                    with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16,
                                        enabled=autocast_dtype is not None):
                        # Through the (possibly DDP-wrapped) module's forward, so DDP sees the whole pass.
                        output = train_model(batch.images, **_model_inputs(objective, batch, tasks))
                    # Losses in float32: softmaxes over many clusters and dice sums lose too much in bf16.
                    terms = _losses(objective, to_float(output), batch.targets, step=step + 1, out_dir=out_dir)
                    scaler.scale(terms.total / micro_batches).backward()
                loss_sum += terms.total.detach()

            # All ranks agree on the loss and on a stop request, then step (or stop) together.
            loss, stop_requested = distributed.mean_and_any(context, loss_sum / micro_batches, stop.signal is not None)
            if not math.isfinite(loss):
                bar.close()
                raise _diverged(f"the loss became {loss}", step=step + 1, out_dir=out_dir)
            distributed.average_gradients(context, extra)   # the objective's own weights (outside DDP)
            scaler.step(optimizer)      # a plain step unless fp16; fp16 skips a step whose gradients overflowed
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(loss)

            # Report, evaluate, checkpoint.
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                logger.info("step %d: loss %.4f, lr %.3g", step, loss, lr)
                log.scalars(step, {"loss/total": loss, "lr": lr,
                                   **{f"loss/{k}": v for k, v in terms.to_floats().items() if k != "total_loss"}})
            done = step == config.steps or stop_requested
            if step == config.steps and (config.precise_bn_batches or 0) > 0:   # before the last evaluation and save
                from polymax.engine.precise_bn import recalibrate_at_end
                used = recalibrate_at_end(model, batches, count=config.precise_bn_batches, device=device)
                _say(context, f"precise BN: BatchNorm statistics re-estimated on {used} training batches", bar)
            if evaluate_fn is not None and ((config.eval_every and step % config.eval_every == 0) or done):
                metrics, picture = _evaluate_on_every_rank(context, evaluate_fn, model, generators, draw=draw)
                log.scalars(step, {f"eval/{k}": v for k, v in metrics.items()})
                if picture is not None:
                    log.picture("eval/predictions", step, picture)
                _say(context, f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), bar)
                if best is not None:
                    _keep_best(context, best, metrics, step=step, save=partial(save_to, out_dir / BEST), bar=bar)
            if done or (config.checkpoint_every and step % config.checkpoint_every == 0):
                checkpoint = save_now(step=step)
            if stop_requested:
                break
    bar.close()
    log.close()
    interrupted = None
    if step < config.steps:  # stopped early: by our own signal, or by one that reached another rank
        interrupted = stop.signal or signal.SIGTERM
        _say(context, f"stopped by {signal.Signals(interrupted).name} at step {step}; checkpoint saved to "
                      f"{checkpoint}. Continue with the same command and --resume.")
    return TrainResult(step=step, checkpoint=checkpoint, interrupted=interrupted,
                       last_loss=losses[-1] if losses else math.nan, losses=losses, metrics=metrics)


def _next_batch(batches, *, step: int, save: Callable[..., Path] | None):
    """The next batch; a bad sample (a UserError from the data set, in this process or a loader worker) saves
    a checkpoint of the steps done (single process: under DDP the other ranks could not join the save) and
    ends the run with one line naming the file."""
    try:
        return next(batches)
    except UserError as error:
        saved = save(step=step) if save is not None else None
        where = f"checkpoint at step {step} saved in {saved}" if saved else "no checkpoint saved (distributed run)"
        raise UserError(f"bad training sample before step {step + 1}: {sample_error_message(error)}; {where}. "
                        "Fix or remove the file and continue with --resume") from None


def sample_error_message(error: UserError) -> str:
    """The data set's own one-line message: a loader worker's error arrives wrapped with its traceback, whose
    last line is ``polymax.errors.UserError: <message>``."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(error).__name__
    last = lines[-1]
    marker = "UserError: "
    return last[last.index(marker) + len(marker):] if marker in last else last


def _diverged(what: str, *, step: int, out_dir: Path) -> TrainingDiverged:
    return TrainingDiverged(
        f"{what} at step {step}; stopped without saving. The last good checkpoint ({out_dir / LAST}) is "
        "untouched; resume from it with a lower learning rate (--set optim.lr=...) or --set precision=fp32")


def _losses(objective, output: ModelOutput, targets, *, step: int, out_dir: Path):
    """objective(output, targets), with a clear stop when the weights have diverged: non-finite logits
    make the Hungarian matching itself fail (scipy rejects the cost matrix) before any loss exists."""
    try:
        return objective(output, targets)
    except ValueError:
        if _finite(output):
            raise
        raise _diverged("the model's outputs became non-finite", step=step, out_dir=out_dir) from None


def _finite(output: ModelOutput) -> bool:
    """Every tensor of every task's final output is finite (read through ``tensors()``: no task's own field)."""
    return all(bool(torch.isfinite(value).all()) for run in output.runs.values()
               for value in run.final.tensors().values() if value.is_floating_point())


def _save(context: distributed.DistributedContext, directory: Path, *, model: nn.Module, optimizer, schedule,
          step: int, config: TrainConfig, generators: dict[str, torch.Generator], scaler=None,
          objective=None) -> Path:
    """Every rank contributes its RNG state; rank 0 writes."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise _diverged("the weights became non-finite", step=step, out_dir=directory.parent)
    rng = distributed.gather_objects(context, capture_rng(generators))
    if context.is_main:
        state = TrainingState(step=step, samples_seen=step * config.data.batch_size, optimizer=optimizer.state_dict(),
                              scheduler=schedule.describe(), rng=rng, config=config.to_dict(),
                              grad_scaler=scaler.state_dict() if scaler is not None and scaler.is_enabled() else {},
                              objective={} if objective is None else objective.state_dict())
        save_checkpoint(directory, model=model, state=state, config_yaml=config.to_yaml())
    distributed.barrier(context)
    return directory


def _evaluate_on_every_rank(context, evaluate_fn, model: nn.Module, generators,
                            draw: Callable[[nn.Module], Any] | None = None) -> tuple[dict[str, float], Any]:
    """Evaluate rank 0's model (every rank scores a share; rank 0 also ``draw``s the prediction pictures) with
    the RNG streams put back afterwards, so evaluation never changes training. Returns (metrics, picture or
    None)."""
    distributed.broadcast_buffers(context, model)
    saved = capture_rng(generators)
    was_training = model.training
    model.eval()
    picture = None
    with torch.no_grad():
        metrics = evaluate_fn(model)
        if draw is not None and context.is_main:
            picture = draw(model)
    model.train(was_training)
    restore_rng(saved, generators)
    distributed.barrier(context)
    return metrics, picture


def _picture_drawer(picture_set: Sequence) -> Callable[[nn.Module], Any]:
    """``draw(model)`` → the prediction grid of the first PICTURE_IMAGES samples (read once, at the first draw)."""
    samples: list = []

    def draw(model: nn.Module):
        if not samples:
            samples.extend(picture_set[index] for index in range(min(PICTURE_IMAGES, len(picture_set))))
        return prediction_grid(model, samples) if samples else None
    return draw


def _keep_best(context, best: BestCheckpoint, metrics: dict[str, float], *, step: int,
               save: Callable[..., Path], bar) -> None:
    """Rank 0 judges the evaluation (sharded evaluation gives every rank the same metrics, but an ``evaluate_fn``
    given to :func:`fit` by hand may return them on rank 0 only); every rank learns the verdict, because a
    checkpoint gathers every rank's RNG state. Then rank 0 records the new best in best.json."""
    improved = best.improved(metrics) if context.is_main else False
    _, improved = distributed.mean_and_any(context, torch.zeros((), device=context.device), improved)
    if not improved:
        return
    save(step=step)
    if context.is_main:
        record = best.saved(step)
        _say(context, f"best {record.metric} so far ({record.mode}): {record.value:.4f} at step {step}, "
                      f"saved to {best.out_dir / BEST}", bar)


def _loader(train_set, collate_fn, *, config: TrainConfig, context, per_rank_batch: int, start_micro_step: int):
    stream = ShardedStream(len(train_set), per_rank_batch=per_rank_batch, rank=context.rank,
                           world_size=context.world_size, seed=config.seed, start_micro_step=start_micro_step)
    workers = config.data.workers
    # Own generator: creating the loader must not consume the global torch stream (drop path, losses).
    return torch.utils.data.DataLoader(
        train_set, batch_size=per_rank_batch, sampler=stream, collate_fn=collate_fn, num_workers=workers,
        worker_init_fn=_ignore_sigint if workers else None, persistent_workers=workers > 0,
        pin_memory=context.device.type == "cuda", generator=torch.Generator().manual_seed(config.seed))


def _ignore_sigint(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; loader workers must keep serving until the main process has
    # finished its step and saved, then it shuts them down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _model_inputs(objective: Any, batch: Any, tasks: tuple[str, ...]) -> dict[str, Any]:
    """The model call's keywords: the objective's (a OneFormer objective draws a task per image among those its
    labels support), else every task of the model on every image."""
    if hasattr(objective, "model_inputs"):
        return objective.model_inputs(batch.images.shape[0], batch.targets)
    return {"task": tasks}


def _objective_parameters(objective: Any, optimizer, *, device: torch.device, lr: float) -> list[nn.Parameter]:
    """The objective's own trainable weights (OneFormer's text mapper and temperature), moved to ``device`` and
    added to the optimiser as one group without weight decay; [] for an objective without any."""
    if not isinstance(objective, nn.Module):
        return []
    objective.to(device)
    params = [p for p in objective.parameters() if p.requires_grad]
    if params:
        optimizer.add_param_group({"params": params, "lr": lr, "base_lr": lr, "weight_decay": 0.0,
                                   "group_name": "objective/no_decay",
                                   "param_names": [n for n, p in objective.named_parameters() if p.requires_grad]})
    return params


def _random_generators(objective: Any) -> dict[str, torch.Generator]:
    """Private torch.Generators of the objective's criteria (e.g. for pixel sampling), saved with the checkpoint."""
    found = {}
    modules = objective.named_modules() if isinstance(objective, nn.Module) else [("", objective)]
    for prefix, module in modules:
        for name, value in vars(module).items():
            if isinstance(value, torch.Generator):
                found[f"criterion.{prefix}.{name}".replace("..", ".")] = value
    return found


class StopRequest:
    """Turns the first SIGINT / SIGTERM into a request (``.signal``) that the loop honours after the current
    step; a second one of either kind raises KeyboardInterrupt at once (abort without saving). The handlers
    that were in place are put back on exit, also when the loop raises, so a caller (a test session, a
    notebook, the demo) gets its own Ctrl-C back when :func:`fit` returns."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        print(f"\n{signal.Signals(signum).name} received: finishing this step and saving a checkpoint "
              "(Ctrl-C again to abort without saving)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals can only be caught there
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            # None: a handler installed outside Python, which cannot be reinstated; the default is the safe choice.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) dataclass batch to ``device``."""
    return _map_tensors(batch, lambda t: t.to(device, non_blocking=True))


def to_float(output: Any) -> Any:
    """Cast the floating-point tensors of a ModelOutput (every run: final, aux list, semantic logits) to float32."""
    return _map_tensors(output, lambda t: t.float() if t.is_floating_point() else t)


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    import dataclasses

    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, list):
        return [_map_tensors(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _map_tensors(getattr(value, f.name), fn) for f in dataclasses.fields(value)
                   if f.init}
        return dataclasses.replace(value, **changes)
    return value


def _say(context: distributed.DistributedContext, message: str, bar=None) -> None:
    """Print on rank 0 (above the progress bar), and log it (OUT/log.txt during ``train``)."""
    if context.is_main:
        (bar.write if bar is not None else print)(message)
        logger.info(message)
