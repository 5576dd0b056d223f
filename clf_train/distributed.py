"""Data-parallel training across processes: the process group, who owns which text, the
collectives, and the trainable top wrapped in DistributedDataParallel.

A run with ``WORLD_SIZE > 1`` (set by ``torchrun`` or ``clf-train --devices N``) trains
exactly the run a single process would, split across the ranks:

* **Same global batches.** Every rank computes ``epoch_batches`` from ``(seed, epoch)`` over
  all training texts, as one process does; ``--batch-size`` is the global batch (all ranks
  together), so results do not depend on the number of processes.
* **Fixed owners.** Text ``i`` belongs to rank ``position of i in the length-sorted order mod
  world size`` (:func:`text_owners`), for the whole run. Neighbours in length go to different
  ranks, so each rank gets the same token mix, and a length-bucketed batch splits about
  evenly (up to ties: equal-length texts are shuffled anew each epoch). Each rank caches the
  frozen prefix of its own texts only (memory and caching time divided by the world size)
  and evaluates only them.
* **Global-mean loss.** At each optimizer step each rank runs forward/backward on the members
  of the step's micro-batches it owns, with loss ``sum(CE of its texts) / N`` where ``N`` is
  the number of texts in the whole step (all micro-batches of ``--grad-accum``, all ranks).
  Gradients are then *summed* across ranks (:func:`_allreduce_sum`, a DDP communication
  hook), which gives exactly the gradient of the global mean loss, whatever the shard sizes
  (an uneven last batch included). DDP's default hook averages instead; that would need the
  loss multiplied by the world size and one more rounding.
* **Only trainable parameters are wrapped.** DDP gets a module that registers exactly the
  parameters with ``requires_grad`` (:class:`_TrainableParams`), so its start-up broadcast
  and its all-reduce buckets never touch the frozen part. Micro-batches before a rank's last
  one in a step run under ``no_sync``; a rank that owns no text of a step still runs one
  zero-weighted placeholder so that it joins the step's all-reduce with zero gradients.

Dropout (``--dropout > 0``) draws its masks per rank from ``(seed, epoch, step, rank)``: runs
are exact on resume, but masks differ between world sizes, so only with dropout 0 (the
default) does a run equal the single-process one (to float rounding of the all-reduce).

Every collective has the process group's timeout (``--dist-timeout``); a failure or timeout
becomes a :class:`~clf_train.errors.DistributedError` naming this rank.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .batches import derive_seed
from .config import DIST_TIMEOUT_S
from .errors import ConfigError, DistributedError
from .frozen_cache import TopSpec, forward_top
from .launch import ENV_MASTER_ADDR, ENV_MASTER_PORT, dist_env, resume_command
from .model import GPTClassifier

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ReplicatedTop",
    "World",
    "check_world_size",
    "init_world",
    "text_owners",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = DIST_TIMEOUT_S
"""Default seconds any collective waits (``--dist-timeout``)."""

# Substrings of the RuntimeErrors gloo, NCCL and c10d raise when a peer is gone or a collective
# timed out (torch raises them as plain RuntimeError, not always as DistError).
_COMM_FAILURE_MARKERS = (
    "gloo",
    "NCCL",
    "nccl",
    "c10d",
    "ProcessGroup",
    "Connection closed",
    "Connection reset",
    "Broken pipe",
    "Timed out",
    "timed out",
)


@dataclass(frozen=True)
class World:
    """This process's place in the job; ``World()`` is a single process (no collectives)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    """Where this rank computes: ``cuda:LOCAL_RANK`` under NCCL."""
    backend: str | None = None
    """``"gloo"`` (CPU) or ``"nccl"`` (CUDA); None for a single process."""
    timeout_s: float = DEFAULT_TIMEOUT_S
    created_group: bool = False
    """Whether :func:`init_world` created the process group (and :meth:`close` destroys it)."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that writes files."""
        return self.rank == 0

    @property
    def where(self) -> str:
        return f"rank {self.rank} of {self.size}"

    # ------------------------------------------------------------------------- collectives

    @contextlib.contextmanager
    def collective(self, what: str) -> Iterator[None]:
        """Turn a failed or timed-out collective inside the block into a DistributedError."""
        if self.size == 1:
            yield
            return
        try:
            yield
        except RuntimeError as e:
            if isinstance(e, DistributedError) or not _is_comm_failure(e):
                raise
            raise DistributedError(
                f"{self.where}: {what} failed: another rank stopped (its own message says why) "
                f"or did not answer within --dist-timeout {self.timeout_s:g} s ({e})"
            ) from e

    def barrier(self, what: str) -> None:
        """Wait until every rank got here (a no-op for one process)."""
        if self.size == 1:
            return
        with self.collective(what):
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def sum_floats(self, values: Sequence[float], what: str) -> list[float]:
        """Element-wise sum over ranks, in float64 (``values`` unchanged for one process)."""
        if self.size == 1:
            return [float(v) for v in values]
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        with self.collective(what):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def sum_counts(self, values: Sequence[int], what: str) -> list[int]:
        """Element-wise sum over ranks of integer counts (exact, int64)."""
        if self.size == 1:
            return [int(v) for v in values]
        t = torch.tensor(list(values), dtype=torch.int64, device=self.device)
        with self.collective(what):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [int(v) for v in t.tolist()]

    def share_outcome(self, failure: str | None, what: str) -> None:
        """Rank 0 tells every rank whether ``what`` worked; the others raise if it did not.

        Called by every rank; ``failure`` (rank 0's error message, or None) is ignored on the
        other ranks. Without it, ranks waiting for rank 0's setup would wait for the timeout.
        """
        if self.size == 1:
            return
        box: list[Any] = [failure]
        with self.collective(what):
            dist.broadcast_object_list(box, src=0)
        if not self.is_main and box[0] is not None:
            # Rank 0 reports the reason itself; repeating it on every rank is noise.
            raise DistributedError(
                f"{self.where}: stopped because rank 0 failed {what} (rank 0's message says why)"
            )

    # ------------------------------------------------------------------------- sharding

    def held(self, lengths: Sequence[int]) -> list[int]:
        """Indices of the texts this rank owns (all of them for one process)."""
        if self.size == 1:
            return list(range(len(lengths)))
        owners = text_owners(lengths, self.size)
        return [i for i, r in enumerate(owners) if r == self.rank]

    def dropout_seed(self, seed: int, epoch: int, step: int) -> int:
        """The torch seed of one optimizer step: a single process keeps its historical seed
        (so existing runs resume exactly); ranks draw independent masks."""
        if self.size == 1:
            return derive_seed(seed, "dropout", epoch, step)
        return derive_seed(seed, "dropout", epoch, step, self.rank)

    def close(self) -> None:
        """Destroy the process group if :func:`init_world` created it."""
        if self.created_group and dist.is_initialized():
            dist.destroy_process_group()


def _is_comm_failure(e: BaseException) -> bool:
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(e, dist_error):
        return True
    text = str(e)
    return any(marker in text for marker in _COMM_FAILURE_MARKERS)


def text_owners(lengths: Sequence[int], world_size: int) -> list[int]:
    """Owner rank of every text: its position in the (length, index) order modulo the world size.

    Deterministic from the lengths alone, the same on every rank and on resume. Consecutive
    texts of the length order go to different ranks, so each rank holds the same mix of
    lengths and a length-bucketed batch splits evenly, up to ties: among texts of equal
    length, which ones share a batch is the epoch's random tie-break.
    """
    owners = [0] * len(lengths)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    for pos, i in enumerate(order):
        owners[i] = pos % world_size
    return owners


def init_world(device: torch.device, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> World:
    """Join the job the environment describes (torchrun's variables), or run alone.

    ``device`` is the requested device; under CUDA each rank takes ``cuda:LOCAL_RANK`` and
    the backend is NCCL, on CPU gloo. Raises :class:`ConfigError` for an environment that
    does not fit (too few GPUs, no rendezvous address) and :class:`DistributedError` when the
    other ranks do not show up within ``timeout_s``.
    """
    env = dist_env()
    if env is None:
        return World(device=device, timeout_s=timeout_s)
    if device.type == "cuda":
        n_gpus = torch.cuda.device_count()
        if env.local_rank >= n_gpus:
            raise ConfigError(
                f"rank {env.rank} has LOCAL_RANK {env.local_rank} but this node has {n_gpus} "
                f"visible GPU(s): start at most {n_gpus} processes per node (--devices / "
                "--nproc-per-node), or train on the CPU with --device cpu"
            )
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(f"distributed training supports cpu and cuda devices, not {device}")
    world = World(
        rank=env.rank,
        size=env.world_size,
        local_rank=env.local_rank,
        device=device,
        backend=backend,
        timeout_s=timeout_s,
    )
    if dist.is_initialized():  # the caller's own script set the group up: use it as it is
        if (dist.get_rank(), dist.get_world_size()) != (env.rank, env.world_size):
            raise ConfigError(
                f"the process group is already initialized as rank {dist.get_rank()} of "
                f"{dist.get_world_size()}, but RANK/WORLD_SIZE say {env.rank} of "
                f"{env.world_size}"
            )
        return replace(world, backend=str(dist.get_backend()))
    missing = [v for v in (ENV_MASTER_ADDR, ENV_MASTER_PORT) if not os.environ.get(v)]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={env.world_size} is set but {' and '.join(missing)} not: ranks cannot "
            "meet. Start the processes with torchrun or clf-train --devices N"
        )
    try:
        dist.init_process_group(
            backend,
            rank=env.rank,
            world_size=env.world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=device if backend == "nccl" else None,
        )
    except (RuntimeError, ValueError) as e:
        raise DistributedError(
            f"{world.where} could not join the job at {os.environ[ENV_MASTER_ADDR]}:"
            f"{os.environ[ENV_MASTER_PORT]} ({backend}) within {timeout_s:g} s: {e}"
        ) from e
    logger.info("joined the job as %s (%s on %s)", world.where, backend, device)
    return replace(world, created_group=True)


def check_world_size(saved: int, world_size: int, run_dir: str) -> None:
    """Refuse to resume a run with another number of processes than it started with."""
    if saved != world_size:
        raise ConfigError(
            f"the run in {run_dir} was started with {saved} process(es) and is being resumed "
            f"with {world_size}: the texts each rank owns, its frozen-prefix cache and the "
            f"dropout masks depend on the number of processes, so the run can only continue "
            f"exactly with {saved}. Resume it with: {resume_command(run_dir, saved)}"
        )


# ----------------------------------------------------------------------------- DDP


class _TrainableParams(nn.Module):
    """The trainable top as DDP sees it: it registers exactly the parameters that require a
    gradient (the same tensors as the model's) and runs :func:`forward_top`.

    The full model is held as a plain attribute, not a submodule, so DDP's start-up broadcast
    and its gradient buckets cover the trainable parameters only, never the frozen blocks.
    """

    def __init__(self, model: GPTClassifier, spec: TopSpec) -> None:
        super().__init__()
        self.__dict__["_model"] = model  # bypasses nn.Module registration on purpose
        self.__dict__["_spec"] = spec
        for name, p in model.named_parameters():
            if p.requires_grad:
                self.register_parameter(name.replace(".", "__"), p)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return forward_top(self._model, self._spec, inputs, lengths)  # (B, num_labels)


# No annotations on purpose: DDP checks the hook's annotations against the real classes, and
# this module's postponed (string) annotations would fail that check.
# (process_group: dist.ProcessGroup | None, bucket: dist.GradBucket) -> Future[Tensor]
def _allreduce_sum(process_group, bucket):  # type: ignore[no-untyped-def]
    """DDP communication hook: sum the bucket over ranks (no division by the world size).

    Each rank's loss is already divided by the step's global text count, so the sum of the
    ranks' gradients is the gradient of the global mean loss.
    """
    group = process_group if process_group is not None else dist.group.WORLD
    work = dist.all_reduce(bucket.buffer(), group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


class ReplicatedTop:
    """The trainable top as the training step calls it: ``top(inputs, lengths) -> logits``.

    One process: plain :func:`forward_top`. Several: the same, through DDP with a summing
    all-reduce. Use :meth:`accumulating` around micro-batches whose gradients must not be
    all-reduced yet (all but the rank's last one in the step).
    """

    def __init__(self, model: GPTClassifier, spec: TopSpec, world: World) -> None:
        self._model, self._spec, self.world = model, spec, world
        self._ddp: nn.parallel.DistributedDataParallel | None = None
        if world.size > 1:
            params = _TrainableParams(model, spec)
            with world.collective("wrapping the trainable parameters in DDP"):
                self._ddp = nn.parallel.DistributedDataParallel(
                    params,
                    device_ids=[world.device.index] if world.device.type == "cuda" else None,
                    # Every trainable parameter is used by every forward_top call; a future
                    # one that is not makes DDP raise at the next step instead of hanging.
                    find_unused_parameters=False,
                )
            self._ddp.register_comm_hook(None, _allreduce_sum)

    def __call__(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self._ddp is None:
            return forward_top(self._model, self._spec, inputs, lengths)
        return self._ddp(inputs, lengths)

    def accumulating(self, skip_sync: bool) -> contextlib.AbstractContextManager[Any]:
        """``no_sync`` when ``skip_sync`` (and distributed); otherwise nothing."""
        if self._ddp is None or not skip_sync:
            return contextlib.nullcontext()
        return self._ddp.no_sync()
