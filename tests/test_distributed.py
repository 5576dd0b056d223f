"""Data-parallel training (DDP, gloo, 2 CPU processes, gpt2-tiny): the same run as one process,
a killed rank stops the job and resumes exactly, a hung rank times out, and the pieces."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from samples import write_topic_csv

from clf_runtime.tokenizer import encode_batch
from clf_train.api import train
from clf_train.batches import epoch_batches, pad_ids
from clf_train.cli import build_parser, config_from_args, main
from clf_train.config import ConfigError
from clf_train.distributed import ReplicatedTop, World, text_owners
from clf_train.frozen_cache import apply_trainable, build_store
from clf_train.launch import (
    EXIT_PEER_FAILED,
    DistEnv,
    RankExit,
    _first_failure,
    dist_env,
    free_port,
)
from clf_train.model import PRESETS, GPTClassifier, init_weights
from clf_train.trainer import _backward_step

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120  # per subprocess: a hung job fails the test instead of hanging it
# 57 rows -> 39 training texts. Batch 2 with 2 micro-batches per step makes every case
# happen (checked by test_the_run_exercises_every_sharding_case): micro-batches split across
# the ranks, a rank with two micro-batches (no_sync), a rank with nothing in a step (the
# placeholder) and a short last batch. lr 5e-5 is the finetuning default: see the tolerance
# note in test_two_processes_train_the_same_model_as_one.
N_ROWS, BATCH, ACCUM, EPOCHS, LR = 57, 2, 2, 3, 5e-5


def write_csv(path: Path, n: int = N_ROWS) -> Path:
    return write_topic_csv(path, n)


def flags(data: Path) -> list[str]:
    return [
        "--data", str(data), "--text-col", "message", "--label-col", "topic",
        "--model", "gpt2-tiny", "--init", "random", "--trainable", "last-block",
        "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--grad-accum", str(ACCUM),
        "--lr", str(LR), "--checkpoint-every", "1", "--threads", "1", "--no-progress",
        "--dist-timeout", "60",
    ]  # fmt: skip


def child_env() -> dict[str, str]:
    """The test's environment for child processes: this tree first on the path, no stale
    launcher variables, gloo on the loopback interface."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["GLOO_SOCKET_IFNAME"] = "lo"
    env["OMP_NUM_THREADS"] = "1"
    return env


def torchrun(args: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port("127.0.0.1")),
        "-m", "clf_train", *args,
    ]  # fmt: skip
    return subprocess.run(
        cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=TIMEOUT_S
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same configuration trained by one process (in this one) and by 2 under torchrun."""
    root = tmp_path_factory.mktemp("ddp")
    data = write_csv(root / "data.csv")
    # The same flags as the 2-process run, parsed by the CLI's own parser.
    train(config_from_args(build_parser().parse_args([*flags(data), "--out", str(root / "one")])))
    proc = torchrun([*flags(data), "--out", str(root / "two")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"data": data, "one": root / "one", "two": root / "two"}


def test_the_run_exercises_every_sharding_case(runs: dict[str, Path]) -> None:
    texts = [json.loads(line)["text"] for line in (runs["two"] / "split/train.jsonl").open()]
    lengths = [len(ids) for ids in encode_batch(texts, max_length=256)]
    owners = text_owners(lengths, 2)
    seen = {"split": 0, "no_sync": 0, "empty": 0, "short": 0}
    for epoch in range(EPOCHS):
        batches = epoch_batches(lengths, BATCH, seed=123, epoch=epoch)
        for group in (batches[i : i + ACCUM] for i in range(0, len(batches), ACCUM)):
            seen["split"] += sum(len({owners[i] for i in idx}) == 2 for idx in group)
            seen["short"] += any(len(idx) < BATCH for idx in group)
            for rank in (0, 1):
                mine = [m for idx in group if (m := [i for i in idx if owners[i] == rank])]
                seen["no_sync"] += len(mine) > 1
                seen["empty"] += not mine
    assert all(seen.values()), seen


def test_two_processes_train_the_same_model_as_one(runs: dict[str, Path]) -> None:
    one, two = (
        load_file(runs["one"] / "model.safetensors"),
        load_file(runs["two"] / "model.safetensors"),
    )
    init = GPTClassifier(PRESETS["gpt2-tiny"], 3)
    init_weights(init, seed=123, n_layer=PRESETS["gpt2-tiny"].n_layer)
    start = init.state_dict()
    trained = [k for k in one if not torch.equal(one[k], start[k])]
    assert {"head.weight", "backbone.blocks.1.attn.qkv.weight"} <= set(trained)
    assert not any(k.startswith("backbone.blocks.0.") for k in trained)  # frozen stays frozen
    for k in one:
        # 1e-5: float rounding of the all-reduce, as AdamW turns it into steps. It normalises
        # every gradient entry, so one whose true value is ~0 (the attention key bias is exactly
        # 0 in exact arithmetic) moves by up to lr per step on rounding noise alone: with lr
        # 5e-5 that stays under 1e-5 here; with the random-init default 5e-4 it reaches 7e-5.
        torch.testing.assert_close(two[k], one[k], rtol=0, atol=1e-5, msg=k)
    moved = max((one[k] - start[k]).abs().max().item() for k in trained)
    assert moved > 50 * 1e-5  # the agreement is not that of two untrained models

    m1 = json.loads((runs["one"] / "metrics.json").read_text())
    m2 = json.loads((runs["two"] / "metrics.json").read_text())
    for split in ("train", "val", "test"):
        assert m2[split]["n"] == m1[split]["n"]
        assert m2[split]["confusion_matrix"] == m1[split]["confusion_matrix"]
        assert m2[split]["accuracy"] == m1[split]["accuracy"]
        assert m2[split]["loss"] == pytest.approx(m1[split]["loss"], abs=1e-5)
    h1 = json.loads((runs["one"] / "history.json").read_text())
    h2 = json.loads((runs["two"] / "history.json").read_text())
    assert (h2["world_size"], h2["backend"], h1["world_size"]) == (2, "gloo", 1)
    assert h2["best_epoch"] == h1["best_epoch"] and h2["optimizer_steps"] == h1["optimizer_steps"]
    for e1, e2 in zip(h1["epochs"], h2["epochs"], strict=True):
        assert e2["train_loss"] == pytest.approx(e1["train_loss"], abs=1e-5)
        assert e2["train_accuracy"] == e1["train_accuracy"]
    assert not (runs["two"] / "checkpoint").exists()


def _children(parent: int) -> dict[int, int]:
    """{RANK: pid} of the processes whose parent is ``parent`` (Linux /proc)."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            env = (d / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        rank = [v[5:] for v in env if v.startswith(b"RANK=")]
        if rank:
            found[int(rank[0])] = int(d.name)
    return found


def _state(run: Path) -> tuple[int, int]:
    try:
        state = json.loads((run / "checkpoint" / "state.json").read_text())
        return int(state["epoch"]), int(state["step"])
    except (OSError, ValueError, KeyError):
        return (0, 0)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_killed_rank_stops_the_job_then_resume_with_two_processes_matches(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "clf_train", "--devices", "2", *flags(runs["data"])]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out)], cwd=REPO, env=child_env(), stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while len(ranks := _children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # Mid-epoch: the second epoch's first checkpoint is on disk.
        while _state(out) < (1, 1) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(ranks[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        proc.kill()
    assert proc.returncode == 1, err[-3000:]
    assert "rank 1 of 2 failed (killed by signal SIGKILL)" in err, err[-3000:]
    assert f"continue with: clf-train --devices 2 --resume {out}" in err
    assert not (out / "metrics.json").exists()
    killed_at = _state(out)
    assert (1, 1) <= killed_at < (EPOCHS, 0)

    # One process cannot continue it: refused before anything changes.
    state_before = (out / "checkpoint" / "state.json").read_text()
    assert main(["--resume", str(out), "--no-progress"]) == 2
    msg = " ".join(capsys.readouterr().err.split())
    assert "was started with 2 process(es) and is being resumed with 1" in msg
    assert f"clf-train --devices 2 --resume {out}" in msg
    assert (out / "checkpoint" / "state.json").read_text() == state_before

    resumed = subprocess.run(
        [sys.executable, "-m", "clf_train", "--devices", "2", "--resume", str(out)],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("test: n=") == 1  # rank 0 alone prints the summary
    expected = json.loads((runs["two"] / "metrics.json").read_text())
    assert json.loads((out / "metrics.json").read_text()) == expected
    a, b = load_file(out / "model.safetensors"), load_file(runs["two"] / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


_HUNG_RANK = """
import sys, time, torch
from clf_train.distributed import init_world
from clf_train.errors import DistributedError

world = init_world(torch.device("cpu"), timeout_s=2.0)
if world.rank == 1:
    time.sleep(60)  # hung: never reaches the barrier (the test kills it)
t0 = time.monotonic()
try:
    world.barrier("the test barrier")
except DistributedError as e:
    print(f"after {time.monotonic() - t0:.1f} s: {e}")
    sys.exit(3)
"""


def test_a_hung_rank_makes_the_others_stop_after_the_timeout() -> None:
    env = {**child_env(), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    env["MASTER_PORT"] = str(free_port("127.0.0.1"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _HUNG_RANK],
            cwd=REPO,
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    try:
        out, err = procs[0].communicate(timeout=TIMEOUT_S)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert procs[0].returncode == 3, err[-2000:]
    assert "rank 0 of 2: the test barrier failed" in out
    assert "did not answer within --dist-timeout 2 s" in out
    assert float(out.split("after ", 1)[1].split(" s:")[0]) < 10


# ----------------------------------------------------------------------------- pieces, in-process


def test_text_owners_alternate_along_the_length_order() -> None:
    rng = random.Random(3)
    lengths = [rng.randint(1, 60) for _ in range(101)]
    owners = text_owners(lengths, 3)
    assert owners == text_owners(list(lengths), 3)  # a function of the lengths alone
    order = sorted(range(101), key=lambda i: (lengths[i], i))
    assert [owners[i] for i in order] == [p % 3 for p in range(101)]
    counts = [owners.count(r) for r in range(3)]
    assert counts == [34, 34, 33]
    tokens = [sum(n for n, r in zip(lengths, owners, strict=True) if r == k) for k in range(3)]
    assert max(tokens) - min(tokens) <= max(lengths)  # the same token mix per rank


TEXTS = [
    "hello", "a somewhat longer text about football matches", "cheese", "x" * 30,
    "hello again my friend", "robots write code", "soup", "the cloud ate my data",
]  # fmt: skip


def _grads(model: GPTClassifier) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("n_top", [0, 1, None])  # head (pooled cache), last block, all (ids)
def test_sharded_step_gradients_are_those_of_the_global_mean_loss(n_top: int | None) -> None:
    """Two ranks' shares of a step (summed, as the all-reduce does) give the gradient of the
    step's mean loss computed directly: uneven micro-batches and an empty share included."""
    torch.manual_seed(0)
    model = GPTClassifier(PRESETS["gpt2-tiny"], 3)
    init_weights(model, seed=0, n_layer=2)
    spec = apply_trainable(model, n_top)
    ids = encode_batch(TEXTS, max_length=32)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    owners = text_owners([len(x) for x in ids], 2)
    held = [[i for i, r in enumerate(owners) if r == k] for k in (0, 1)]
    stores = [
        build_store(model, spec, {"t": ids}, device=torch.device("cpu"), held={"t": h})["t"]
        for h in held
    ]
    top = ReplicatedTop(model, spec, World())
    alone = next(i for i in range(8) if owners[i] == 0)
    for group in ([[0, 1, 2, 3, 4], [5, 6]], [[alone]]):
        flat = [i for idx in group for i in idx]
        model.zero_grad(set_to_none=True)
        logits = model(*pad_ids([ids[i] for i in flat]))  # the full model, no cache
        torch.nn.functional.cross_entropy(logits, y[flat]).backward()
        expected = _grads(model)

        model.zero_grad(set_to_none=True)
        loss_sums = []
        for store in stores:  # each rank's backward adds into .grad, as the all-reduce sums
            loss_sums.append(_backward_step(top, store, y, group)[0])
        got = _grads(model)
        assert set(got) == set(expected)
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-7)
        ce = torch.nn.functional.cross_entropy(logits, y[flat], reduction="sum").item()
        assert sum(loss_sums) == pytest.approx(ce, rel=1e-5)
    assert loss_sums[1] == 0.0  # rank 1 owned nothing of the last step: zero contribution


def test_the_environment_decides_the_world() -> None:
    assert dist_env({}) is None
    assert dist_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    assert dist_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == DistEnv(3, 4, 1)
    with pytest.raises(ConfigError, match="RANK=None"):
        dist_env({"WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="need 0 <= RANK < WORLD_SIZE"):
        dist_env({"WORLD_SIZE": "2", "RANK": "2"})


def test_the_launcher_names_the_rank_that_failed_first() -> None:
    victim, cause = RankExit(0, EXIT_PEER_FAILED), RankExit(1, -signal.SIGKILL)
    assert _first_failure([victim, cause]) == cause
    assert cause.describe() == "killed by signal SIGKILL"
    assert RankExit(2, 1).describe() == "exit code 1"
    assert _first_failure([RankExit(3, EXIT_PEER_FAILED), victim]) == victim
    # Seen within one poll: rank 0's error exit (its peer vanished) and rank 1's SIGKILL.
    assert _first_failure([RankExit(0, 1), cause]) == cause
    assert _first_failure([RankExit(2, 1), RankExit(1, 2)]) == RankExit(1, 2)


def test_devices_flag_problems_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data", "x.csv", "--out", "o", "--devices", "0"]) == 2
    assert "--devices must be >= 1, got 0" in capsys.readouterr().err
    assert main(["--data", "x.csv", "--out", "o", "--dist-timeout", "0"]) == 2
    assert "--dist-timeout must be > 0 seconds, got 0.0" in capsys.readouterr().err
    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(k, v)
    assert main(["--data", "x.csv", "--out", "o", "--devices", "3"]) == 2
    assert "drop --devices, torchrun's --nproc-per-node" in capsys.readouterr().err
