"""The training loop: epochs of length-bucketed batches over the trainable top of the model.

Exact resume is a design goal: every random choice is derived from ``(seed, epoch, step)``
(batch order per epoch, and torch's RNG is re-seeded before each optimizer step for
dropout), the running sums are checkpointed as exact Python numbers, and the frozen-part
caches are deterministic. A run killed at any moment and resumed from its last checkpoint
therefore ends with bit-identical weights and metrics.

Reported per epoch: ``train_loss``/``train_accuracy`` are running values over the epoch's
training batches (train mode, weights changing), as most training loops report them;
``val_loss``/``val_accuracy`` are computed in eval mode after the epoch. The final
``metrics.json`` recomputes every split in eval mode with the best weights.

The loss of an optimizer step is the mean cross-entropy over all of its texts (every
micro-batch of ``--grad-accum``, every rank), so a short last batch weighs each of its texts
like any other. Several processes (:mod:`clf_train.distributed`) run the same global batches,
each on the texts it owns, and sum their gradients: the same step as one process, up to the
rounding of the all-reduce. Only rank 0 writes checkpoints.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from clf_runtime.contract import CHECKPOINT_DIR

from .batches import epoch_batches, eval_batches
from .checkpoint import TrainState, save_checkpoint
from .config import TrainConfig
from .distributed import ReplicatedTop, World
from .errors import TrainingError
from .frozen_cache import FeatureStore, TopSpec, forward_top
from .model import GPTClassifier

__all__ = [
    "EVAL_BATCH",
    "Evaluation",
    "LoopState",
    "TrainingError",
    "evaluate",
    "fit",
    "label_targets",
    "step_gradients",
]

logger = logging.getLogger(__name__)

EVAL_BATCH = 64


@dataclass
class LoopState:
    """Everything the loop needs to continue; all JSON-serializable (stored in state.json)."""

    epoch: int = 0
    """Epoch in progress (0-based); equals ``epochs`` once training is over."""
    step: int = 0
    """Optimizer steps already done in ``epoch``."""
    global_step: int = 0
    sum_loss: float = 0.0
    """Sum over the epoch's seen examples of their training loss (batch mean x batch size)."""
    n_correct: int = 0
    n_seen: int = 0
    epoch_seconds: float = 0.0
    """Wall time spent in ``epoch`` so far (before a kill, too)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_loss: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    """Epochs since the best validation loss (early-stopping patience counter)."""
    finished: bool = False
    stop_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopState:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _trainable(model: GPTClassifier) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _snapshot(model: GPTClassifier) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in _trainable(model).items()}


def load_trainable(model: GPTClassifier, tensors: dict[str, torch.Tensor], *, what: str) -> None:
    """Copy ``tensors`` into the trainable parameters; the names must match exactly."""
    params = _trainable(model)
    if set(params) != set(tensors):
        missing = sorted(set(params) - set(tensors))[:5]
        extra = sorted(set(tensors) - set(params))[:5]
        raise TrainingError(
            f"the {what} do not match this model's trainable parameters (missing {missing}, "
            f"unexpected {extra}); was the checkpoint written by another run?"
        )
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[name])


@dataclass(frozen=True)
class Evaluation:
    """One split evaluated in eval mode, every text counted once over all ranks."""

    n: int
    loss: float | None
    """Mean cross-entropy; None for an empty split."""
    matrix: list[list[int]]
    """Confusion counts: rows true label ids, columns predicted label ids."""

    @property
    def accuracy(self) -> float | None:
        return sum(self.matrix[i][i] for i in range(len(self.matrix))) / self.n if self.n else None


def evaluate(
    model: GPTClassifier,
    spec: TopSpec,
    store: FeatureStore,
    targets: torch.Tensor,
    *,
    world: World | None = None,
) -> Evaluation:
    """Loss and confusion counts of a split in eval mode.

    Each rank evaluates the texts its ``store`` holds; the loss sums and the counts are summed
    over the ranks, so every rank returns the same :class:`Evaluation` of the whole split.
    """
    world = world or World()
    k = model.num_labels
    matrix = [[0] * k for _ in range(k)]
    total = 0.0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for idx in eval_batches(store.lengths, EVAL_BATCH, indices=store.held):
            inputs, lengths = store.batch(idx)
            logits = forward_top(model, spec, inputs, lengths)  # (B, num_labels)
            y = targets[idx]
            total += F.cross_entropy(logits.float(), y, reduction="sum").item()
            for t, p in zip(y.tolist(), logits.argmax(-1).tolist(), strict=True):
                matrix[t][p] += 1
    model.train(was_training)
    (total,) = world.sum_floats([total], "summing the evaluation loss")
    flat = world.sum_counts([c for row in matrix for c in row], "summing the evaluation counts")
    matrix = [flat[r * k : (r + 1) * k] for r in range(k)]
    n = len(store)
    if sum(flat) != n:  # every text is owned by exactly one rank
        raise TrainingError(f"evaluation counted {sum(flat)} texts of a split of {n}")
    return Evaluation(n=n, loss=total / n if n else None, matrix=matrix)


def _check_finite_params(model: GPTClassifier, where: str, lr: float) -> None:
    bad = [n for n, p in _trainable(model).items() if not torch.isfinite(p).all()]
    if bad:
        raise TrainingError(
            f"parameters became non-finite ({', '.join(bad[:3])}) {where}; the last checkpoint "
            f"is kept. The learning rate {lr:g} is probably too high: rerun with a lower --lr"
        )


def _backward_step(
    top: ReplicatedTop, store: FeatureStore, targets: torch.Tensor, group: list[list[int]]
) -> tuple[float, int]:
    """Forward and backward of this rank's share of one optimizer step; gradients accumulate.

    ``group``: the step's global micro-batches. Each text's loss is divided by the number of
    texts in the whole step, so the gradients, summed over micro-batches and ranks, are those
    of the step's mean loss. Returns this rank's (sum of losses, number correct).
    """
    n_step = sum(len(idx) for idx in group)
    mine = [m for idx in group if (m := store.mine(idx))]
    if not mine:
        # This rank owns no text of the step but must join its all-reduce: a placeholder
        # with weight 0 contributes exact zeros.
        logits = top(*store.placeholder())
        (logits.float().sum() * 0.0).backward()
        return 0.0, 0
    loss_sum, correct = 0.0, 0
    for j, idx in enumerate(mine):
        # Only the rank's last micro-batch of the step all-reduces (DDP no_sync before it).
        with top.accumulating(skip_sync=j < len(mine) - 1):
            inputs, lengths = store.batch(idx)
            logits = top(inputs, lengths)  # (B, num_labels)
            y = targets[idx]
            loss = F.cross_entropy(logits.float(), y, reduction="sum")
            (loss / n_step).backward()
        loss_sum += loss.item()
        correct += int((logits.argmax(-1) == y).sum().item())
    return loss_sum, correct


def step_gradients(
    top: ReplicatedTop,
    store: FeatureStore,
    targets: torch.Tensor,
    group: list[list[int]],
    *,
    world: World,
    where: str,
) -> tuple[float, int]:
    """The gradients of one optimizer step, in ``.grad``, on every rank; returns the step's
    (sum of losses, number correct) over all its texts and ranks.

    ``group``: the step's global micro-batches. Each rank runs its own texts; DDP sums the
    gradients; the counters are summed too. ``where`` names the step in error messages.
    """
    with world.collective(f"the gradient all-reduce at {where}"):
        loss_sum, correct = _backward_step(top, store, targets, group)
    loss_sum, n_correct = world.sum_floats([loss_sum, correct], f"the loss sum at {where}")
    return loss_sum, round(n_correct)


def fit(
    model: GPTClassifier,
    spec: TopSpec,
    stores: dict[str, FeatureStore],
    targets: dict[str, torch.Tensor],
    config: TrainConfig,
    *,
    run_dir: Path,
    resume_from: TrainState | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    world: World | None = None,
) -> tuple[LoopState, dict[str, torch.Tensor] | None]:
    """Train until ``config.epochs`` or early stopping; return (final state, best weights).

    ``config`` must be resolved (:meth:`TrainConfig.resolved`: ``lr`` and ``epochs`` set); the
    loop reads its batch size, gradient accumulation, AdamW settings, seed, early stopping,
    checkpoint interval and progress switch. Checkpoints to ``run_dir/checkpoint/`` at every
    epoch end and every ``checkpoint_every`` optimizer steps. Raises :class:`TrainingError` on
    a non-finite loss or weights.

    ``world``: this process's place in a multi-process run (default: alone). Every rank calls
    ``fit`` with stores holding its own texts; all return the same state and weights; only
    rank 0 writes checkpoints and shows progress.
    """
    from tqdm.auto import tqdm

    if config.lr is None or config.epochs is None:
        raise ValueError("fit needs a resolved config (lr and epochs set): pass config.resolved()")
    world = world or World()
    lr, epochs, seed = config.lr, config.epochs, config.seed
    params = list(_trainable(model).values())
    # The fused kernel is much faster than the per-tensor loop on CPU: it matters with
    # --trainable all, where the 50257 x C token embedding is updated every step.
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay, fused=fused)
    best: dict[str, torch.Tensor] | None = None
    st = LoopState()
    if resume_from is not None:
        load_trainable(model, resume_from.trainable, what="checkpointed weights")
        optimizer.load_state_dict(resume_from.optimizer)
        st = LoopState.from_dict(resume_from.state)
        best = resume_from.best
        logger.info("resuming at epoch %d, step %d", st.epoch + 1, st.step)
    # After the weights are loaded: DDP's start-up broadcast then copies equal values.
    top = ReplicatedTop(model, spec, world)

    def checkpoint(new_best: dict[str, torch.Tensor] | None, where: str) -> None:
        _check_finite_params(model, where, lr)
        # Every rank holds the same weights, optimizer state and (all-reduced) counters: the
        # step's collectives have just synchronised them, so rank 0 alone writes.
        if not world.is_main:
            return
        save_checkpoint(
            run_dir,
            st.to_dict(),
            trainable=_snapshot(model),
            optimizer=optimizer.state_dict(),
            best=new_best,
        )

    train_store, y_train = stores["train"], targets["train"]
    while not st.finished and st.epoch < epochs:
        epoch = st.epoch
        batches = epoch_batches(train_store.lengths, config.batch_size, seed=seed, epoch=epoch)
        accum = config.grad_accum
        groups = [batches[i : i + accum] for i in range(0, len(batches), accum)]
        started = time.perf_counter() - st.epoch_seconds
        model.train()
        bar = tqdm(
            total=len(groups),
            initial=st.step,
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=not (config.progress and world.is_main),
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )
        for step in range(st.step, len(groups)):
            # Dropout masks depend only on (seed, epoch, step): a resumed run replays them.
            torch.manual_seed(world.dropout_seed(seed, epoch, step))
            optimizer.zero_grad(set_to_none=True)
            where = f"epoch {epoch + 1}, step {step + 1}"
            loss_sum, correct = step_gradients(
                top, train_store, y_train, groups[step], world=world, where=where
            )
            n_step = sum(len(idx) for idx in groups[step])
            # Checked on the global sum, before the update: every rank stops together.
            if not math.isfinite(loss_sum):
                raise TrainingError(
                    f"the training loss became {loss_sum / n_step} at {where}; the last good "
                    f"checkpoint is kept in {run_dir / CHECKPOINT_DIR}. The learning rate "
                    f"{lr:g} is probably too high: rerun with a lower --lr"
                )
            st.sum_loss += loss_sum
            st.n_correct += correct
            st.n_seen += n_step
            optimizer.step()
            st.step, st.global_step = step + 1, st.global_step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{st.sum_loss / st.n_seen:.4f}")
            every = config.checkpoint_every
            if every and st.step % every == 0 and st.step < len(groups):
                st.epoch_seconds = time.perf_counter() - started
                checkpoint(None, f"after epoch {epoch + 1}, step {st.step}")
        bar.close()

        val = evaluate(model, spec, stores["val"], targets["val"], world=world)
        val_loss, val_acc = val.loss, val.accuracy
        if val_loss is not None and not math.isfinite(val_loss):
            raise TrainingError(
                f"the validation loss became {val_loss} after epoch {epoch + 1}; the last good "
                f"checkpoint is kept. Rerun with a lower --lr (now {lr:g})"
            )
        record = {
            "epoch": epoch + 1,
            "train_loss": st.sum_loss / st.n_seen if st.n_seen else None,
            "train_accuracy": st.n_correct / st.n_seen if st.n_seen else None,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "seconds": time.perf_counter() - started,
            "lr": lr,
            "steps": len(groups),
        }
        st.history.append(record)
        new_best = None
        if val_loss is None or st.best_val_loss is None or val_loss < st.best_val_loss:
            best = new_best = _snapshot(model)
            st.best_val_loss, st.best_epoch, st.bad_epochs = val_loss, epoch + 1, 0
        else:
            st.bad_epochs += 1
        st.epoch, st.step = epoch + 1, 0
        st.sum_loss, st.n_correct, st.n_seen, st.epoch_seconds = 0.0, 0, 0, 0.0
        if config.early_stopping is not None and st.bad_epochs >= config.early_stopping:
            st.finished = True
            st.stop_reason = f"early stopping: no lower validation loss for {st.bad_epochs} epochs"
        elif st.epoch >= epochs:
            st.finished, st.stop_reason = True, "completed all epochs"
        checkpoint(new_best, f"after epoch {epoch + 1}")
        logger.info(
            "epoch %d/%d: train loss %.4f acc %.4f | val loss %s acc %s | %.1fs",
            epoch + 1,
            epochs,
            record["train_loss"] or 0.0,
            record["train_accuracy"] or 0.0,
            "-" if val_loss is None else f"{val_loss:.4f}",
            "-" if val_acc is None else f"{val_acc:.4f}",
            record["seconds"],
        )
        if on_epoch is not None:
            on_epoch(record)
    return st, best


def label_targets(
    labels: Sequence[str], names: Sequence[str], device: torch.device
) -> torch.Tensor:
    """Label strings -> (N,) int64 ids in ``names`` (logit) order."""
    index = {name: i for i, name in enumerate(names)}
    try:
        ids = [index[y] for y in labels]
    except KeyError as e:
        raise TrainingError(f"label {e.args[0]!r} is not one of the run's labels {names}") from e
    return torch.as_tensor(ids, dtype=torch.int64, device=device)
