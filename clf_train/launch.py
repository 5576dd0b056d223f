"""``clf-train --devices N``: start N training processes on this machine and watch them.

``torchrun --nproc-per-node N -m clf_train ...`` does the same job (and more: several nodes,
restarts); this is for users who do not want a launcher. Each child runs
``python -m clf_train`` with the same flags and the environment torchrun would give it
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``,
``MASTER_PORT``: a free port). The first child to fail stops the job: the others are
terminated (SIGTERM, then SIGKILL after a grace period) and the outcome names the failed rank
and how it ended. Checkpoints are written atomically by rank 0, so the last one stays
resumable whatever was killed.

Torch-free: reading the environment and supervising processes need no torch, so the parent,
which never trains, stays small and starts fast.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = [
    "EXIT_PEER_FAILED",
    "DistEnv",
    "LaunchConfig",
    "LaunchOutcome",
    "RankExit",
    "child_env",
    "dist_env",
    "free_port",
    "launch",
    "resume_command",
]

# torchrun's variables (torch.distributed.run): what every rank of a job reads.
ENV_RANK = "RANK"
ENV_LOCAL_RANK = "LOCAL_RANK"
ENV_WORLD_SIZE = "WORLD_SIZE"
ENV_LOCAL_WORLD_SIZE = "LOCAL_WORLD_SIZE"
ENV_MASTER_ADDR = "MASTER_ADDR"
ENV_MASTER_PORT = "MASTER_PORT"

EXIT_PEER_FAILED = 3
"""Exit status of a rank that stopped because a collective failed (another rank died, or did
not answer in time): the launcher uses it to name the rank that failed first, not its victims."""

_POLL_S = 0.05


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a multi-process job, as its launcher (torchrun or
    ``clf-train --devices``) described it in the environment."""

    rank: int
    """Global rank, 0 .. world_size - 1 (rank 0 writes every file)."""
    world_size: int
    """Number of processes in the job, on all nodes."""
    local_rank: int
    """Rank on this node: picks the GPU (``cuda:LOCAL_RANK``)."""


def dist_env(environ: Mapping[str, str] | None = None) -> DistEnv | None:
    """The job this process belongs to, or None when it runs alone (no ``WORLD_SIZE``, or 1).

    Raises :class:`ConfigError` when the variables are present but inconsistent.
    """
    env = os.environ if environ is None else environ
    raw = env.get(ENV_WORLD_SIZE)
    if raw is None:
        return None
    try:
        world_size = int(raw)
        rank = int(env.get(ENV_RANK, ""))
        local_rank = int(env.get(ENV_LOCAL_RANK, str(rank)))
    except ValueError as e:
        raise ConfigError(
            f"WORLD_SIZE={raw!r} is set but RANK={env.get(ENV_RANK)!r} / LOCAL_RANK="
            f"{env.get(ENV_LOCAL_RANK)!r} are not integers: start the processes with torchrun "
            "(it sets all three) or with clf-train --devices N"
        ) from e
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ConfigError(
            f"inconsistent launcher environment: RANK={rank}, LOCAL_RANK={local_rank}, "
            f"WORLD_SIZE={world_size} (need 0 <= RANK < WORLD_SIZE); start the processes with "
            "torchrun or with clf-train --devices N"
        )
    if world_size == 1:
        return None
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank)


@dataclass(frozen=True)
class LaunchConfig:
    """How ``clf-train --devices N`` starts and stops its processes."""

    devices: int
    """--devices: processes to start on this machine (one per GPU, or CPU processes)."""
    master_addr: str = "127.0.0.1"
    """Address rank 0 listens on for the rendezvous: loopback, since all ranks are local."""
    master_port: int | None = None
    """Rendezvous port; None picks a free one."""
    threads_per_process: int | None = None
    """OMP_NUM_THREADS for each child when the environment does not set it; None: this
    machine's CPUs divided by ``devices`` (torchrun sets 1), so N processes do not
    oversubscribe the cores."""
    grace_s: float = 10.0
    """Seconds the other ranks get after SIGTERM before SIGKILL, once one rank failed."""

    def problems(self) -> list[str]:
        """Every problem, one line each naming the flag; empty when valid."""
        p = []
        if self.devices < 1:
            p.append(f"--devices must be >= 1, got {self.devices}")
        if self.master_port is not None and not 0 < self.master_port < 65536:
            p.append(f"MASTER_PORT must be in 1..65535, got {self.master_port}")
        if self.threads_per_process is not None and self.threads_per_process < 1:
            p.append(f"threads per process must be >= 1, got {self.threads_per_process}")
        return p


@dataclass(frozen=True)
class RankExit:
    """How one child process ended."""

    rank: int
    returncode: int
    """``Popen.returncode``: the exit status, or minus the signal number."""

    def describe(self) -> str:
        """``"exit code 1"`` or ``"killed by signal SIGKILL"``."""
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = str(-self.returncode)
            return f"killed by signal {name}"
        return f"exit code {self.returncode}"


@dataclass(frozen=True)
class LaunchOutcome:
    """The result of :func:`launch`: success, or which rank failed first."""

    returncode: int
    """What the launcher should exit with: 0, or the failed rank's 1 / 2 / 130 (else 1)."""
    failed: RankExit | None = None
    """The rank that failed first (None on success)."""
    stopped: list[int] = field(default_factory=list)
    """Ranks the launcher terminated because another one failed."""
    exits: list[RankExit] = field(default_factory=list)
    """How every rank ended, in rank order."""


def free_port(host: str) -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def child_env(
    base: Mapping[str, str], *, rank: int, config: LaunchConfig, port: int
) -> dict[str, str]:
    """The environment of rank ``rank``: ``base`` plus what torchrun would set."""
    env = dict(base)
    env.update(
        {
            ENV_RANK: str(rank),
            ENV_LOCAL_RANK: str(rank),
            ENV_WORLD_SIZE: str(config.devices),
            ENV_LOCAL_WORLD_SIZE: str(config.devices),
            ENV_MASTER_ADDR: config.master_addr,
            ENV_MASTER_PORT: str(port),
        }
    )
    if "OMP_NUM_THREADS" not in env:
        per = config.threads_per_process or max(1, _usable_cpus() // config.devices)
        env["OMP_NUM_THREADS"] = str(per)
    return env


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _first_failure(failures: list[RankExit]) -> RankExit:
    """Of ranks that failed within one poll, the one that failed first.

    A rank that lost a collective exits with :data:`EXIT_PEER_FAILED` *because* another one
    died; a rank killed by a signal or failing on its own is the cause. A signal is never a
    consequence of another rank's failure, while an error exit may be (a peer's death can
    surface as an error outside the collectives), so a rank killed by a signal comes first.
    """
    causes = [f for f in failures if f.returncode != EXIT_PEER_FAILED]
    return min(causes or failures, key=lambda f: (f.returncode >= 0, f.rank))


def _wait_any(procs: dict[int, subprocess.Popen[bytes]], timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for another child to exit, with a failure other than a victim's."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        codes = [p.poll() for p in procs.values()]
        if any(c not in (None, 0, EXIT_PEER_FAILED) for c in codes) or None not in codes:
            return
        time.sleep(_POLL_S)


def _stop(procs: dict[int, subprocess.Popen[bytes]], grace_s: float) -> list[int]:
    """Terminate every child still running (SIGTERM, then SIGKILL); return their ranks."""
    running = [r for r, p in procs.items() if p.poll() is None]
    for r in running:
        procs[r].terminate()
    deadline = time.monotonic() + grace_s
    for r in running:
        try:
            procs[r].wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            procs[r].kill()
            procs[r].wait()
    return running


def launch(
    argv: Sequence[str],
    config: LaunchConfig,
    *,
    python: str = sys.executable,
    environ: Mapping[str, str] | None = None,
) -> LaunchOutcome:
    """Run ``python -m clf_train *argv`` as ranks 0 .. devices-1 and wait for all of them.

    The children share this process's stdout/stderr. When one exits non-zero or is killed,
    the others are terminated and the outcome names the first failure. A ``KeyboardInterrupt``
    or ``SystemExit`` in this process (Ctrl-C, or a SIGTERM handler of the caller) also stops
    every child before it propagates.
    """
    problems = config.problems()
    if problems:
        raise ConfigError("invalid launch configuration: " + "; ".join(problems))
    base = dict(os.environ if environ is None else environ)
    port = config.master_port or free_port(config.master_addr)
    procs: dict[int, subprocess.Popen[bytes]] = {}
    try:
        for rank in range(config.devices):
            env = child_env(base, rank=rank, config=config, port=port)
            procs[rank] = subprocess.Popen([python, "-m", "clf_train", *argv], env=env)
        while True:
            codes = {r: p.poll() for r, p in procs.items()}
            failures = [RankExit(r, c) for r, c in codes.items() if c not in (None, 0)]
            if failures and all(f.returncode == EXIT_PEER_FAILED for f in failures):
                # Only victims so far: the rank that caused it is usually a moment behind
                # (exiting, or its own collective about to fail). Let it show up.
                _wait_any(procs, config.grace_s)
                codes = {r: p.poll() for r, p in procs.items()}
                failures = [RankExit(r, c) for r, c in codes.items() if c not in (None, 0)]
            if failures:
                failed = _first_failure(failures)
                stopped = _stop(procs, config.grace_s)
                rc = failed.returncode if failed.returncode in (1, 2, 130) else 1
                exits = [RankExit(r, int(p.returncode)) for r, p in procs.items()]
                return LaunchOutcome(rc, failed, stopped, exits)
            if all(c == 0 for c in codes.values()):
                return LaunchOutcome(0, exits=[RankExit(r, 0) for r in procs])
            time.sleep(_POLL_S)
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reaches the children too: give them the grace period to say
        # "interrupted" and exit by themselves before the finally below terminates them.
        deadline = time.monotonic() + config.grace_s
        while time.monotonic() < deadline and any(p.poll() is None for p in procs.values()):
            time.sleep(_POLL_S)
        raise
    finally:
        # Any way out of here (Ctrl-C, an exception) leaves no child behind.
        _stop(procs, config.grace_s)


def resume_command(run_dir: str, world_size: int) -> str:
    """The command that continues the run in ``run_dir`` with the same number of processes."""
    if world_size <= 1:
        return f"clf-train --resume {run_dir}"
    return (
        f"clf-train --devices {world_size} --resume {run_dir} (or, under torchrun, with "
        f"{world_size} processes in all: torchrun --nproc-per-node {world_size} -m clf_train "
        f"--resume {run_dir})"
    )
