"""clf-serve as a process: graceful SIGTERM (no accepted request dropped), flags, exit codes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_util import metric, wait_healthy

from clf_runtime import Classifier
from clf_runtime.serve import cli


def start_server(export: Path, *flags: str) -> tuple[subprocess.Popen[str], str, list[str]]:
    """Run ``python -m clf_runtime.serve EXPORT --port 0 FLAGS``; return (process, url, log)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "clf_runtime.serve", str(export), "--port", "0", *flags],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    log: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def reader() -> None:  # keeps draining stderr so the server never blocks on a full pipe
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            match = re.search(r"Uvicorn running on (http://\S+)", line)
            if match and not found.is_set():
                url.append(match.group(1))
                found.set()

    threading.Thread(target=reader, daemon=True).start()
    if not found.wait(60):
        proc.kill()
        raise AssertionError("clf-serve did not start:\n" + "".join(log))
    return proc, url[0], log


def test_sigterm_finishes_every_request_in_flight(tiny_export_dir: Path) -> None:
    texts = [f"in flight {i} " * (i + 1) for i in range(8)]
    expected = Classifier.load(tiny_export_dir, providers="cpu", threads=1).predict_proba(texts)
    # Batches wait up to 5 s for 64 texts: the 8 requests below sit in the queue, in flight,
    # when SIGTERM arrives.
    proc, url, log = start_server(
        tiny_export_dir, "--threads", "1", "--max-wait-ms", "5000", "--max-batch-requests", "64"
    )
    try:
        wait_healthy(url)
        responses: list[httpx.Response | BaseException | None] = [None] * len(texts)
        done_at: list[float] = [0.0] * len(texts)

        def client(i: int) -> None:
            try:
                responses[i] = httpx.post(f"{url}/predict", json={"inputs": texts[i]}, timeout=60)
            except BaseException as e:  # checked below
                responses[i] = e
            done_at[i] = time.monotonic()

        clients = [threading.Thread(target=client, args=(i,)) for i in range(len(texts))]
        for t in clients:
            t.start()
        deadline = time.monotonic() + 20
        while metric(httpx.get(f"{url}/metrics").text, "clf_queue_depth") < len(texts):
            assert time.monotonic() < deadline, "the requests never all reached the queue"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        refused_at = None
        deadline = time.monotonic() + 10
        while refused_at is None and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), 1):
                    pass
                time.sleep(0.02)
            except OSError:
                refused_at = time.monotonic()
        for t in clients:
            t.join(60)
        # Like uvicorn, the process ends by the signal it got once it has drained (a shell
        # sees status 143), so a supervisor can tell why it stopped.
        assert proc.wait(60) == -signal.SIGTERM, "".join(log)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert all(isinstance(r, httpx.Response) for r in responses), responses
    assert [r.status_code for r in responses] == [200] * len(texts)  # type: ignore[union-attr]
    got = [{d["label"]: d["score"] for d in r.json()} for r in responses]  # type: ignore[union-attr]
    labels = ["negative", "neutral", "positive"]
    np.testing.assert_allclose([[g[k] for k in labels] for g in got], expected, atol=1e-6)
    # New connections were refused while the accepted requests were still being served.
    assert refused_at is not None and refused_at < min(done_at)
    assert "Application shutdown complete" in "".join(log)  # the batcher was drained
    assert "Traceback" not in "".join(log)


def test_bad_flags_exit_2_naming_each(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["some/export", "--max-client-batch", "600", "--max-queue", "10"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--max-client-batch (600) must not exceed --max-queue (10)" in err
    assert cli.main(["some/export", "--max-wait-ms", "-1"]) == 2
    assert "--max-wait-ms" in capsys.readouterr().err


def test_a_missing_model_exits_1_before_listening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([str(tmp_path / "nope"), "--port", "0"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_a_port_in_use_exits_1(tiny_export_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        command = [sys.executable, "-m", "clf_runtime.serve", str(tiny_export_dir)]
        result = subprocess.run(
            [*command, "--port", str(port), "--threads", "1"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1, result.stderr
    assert "address already in use" in result.stderr.lower()
