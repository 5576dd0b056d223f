"""Closed-loop HTTP load and server processes for ``bench_serve.py`` (loopback only).

A pass runs N clients for a fixed time; each client holds one keep-alive connection and sends
one text per ``POST /predict``, the next as soon as the answer arrives. The client is a few
lines of raw HTTP/1.1 over asyncio streams rather than an HTTP library, so that the load
generator, which shares the machine's cores with the server, spends microseconds per request.
Every pass is bounded: clients stop sending at the deadline and the pass waits (bounded) for
the answers in flight.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import common


@dataclass
class PassResult:
    """What one load pass measured: answers completed inside the window and their latencies."""

    clients: int
    window_s: float
    texts: int
    errors: int
    latencies_s: list[float]
    answered: int = 0
    """Every 200 answer of the pass, warm-up and tail included (for CPU time per text)."""
    answers: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    """First answer seen for each text index (to check it against offline predict_proba)."""

    def summary(self) -> dict[str, Any]:
        stats = common.percentiles(self.latencies_s) if self.latencies_s else {}
        return {
            "clients": self.clients,
            "window_s": round(self.window_s, 3),
            "texts": self.texts,
            "errors": self.errors,
            "texts_per_s": round(self.texts / self.window_s, 2) if self.window_s else None,
            **stats,
        }


async def _post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, body: bytes
) -> tuple[int, bytes]:
    writer.write(
        b"POST /predict HTTP/1.1\r\nHost: "
        + host.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _run_pass(
    url: str, texts: Sequence[str], clients: int, seconds: float, warmup_s: float
) -> PassResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    bodies = [json.dumps({"inputs": t}).encode() for t in texts]
    start = time.perf_counter()
    window_start, stop = start + warmup_s, start + warmup_s + seconds
    result = PassResult(clients=clients, window_s=seconds, texts=0, errors=0, latencies_s=[])

    async def client(c: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        i = (c * 37) % len(bodies)  # clients start at different texts
        try:
            while time.perf_counter() < stop:
                sent = time.perf_counter()
                try:
                    status, body = await _post(reader, writer, f"{host}:{port}", bodies[i])
                except (ConnectionError, asyncio.IncompleteReadError):
                    result.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                done = time.perf_counter()
                # Steady state: count what completes inside the window, whenever it was sent
                # (under batching, answers come in bursts; the window must not cut one off).
                if status != 200:
                    result.errors += 1  # any time: no request may fail
                else:
                    result.answered += 1
                if status == 200 and window_start <= done <= stop:
                    result.texts += 1
                    result.latencies_s.append(done - sent)
                if status == 200 and i not in result.answers:
                    result.answers[i] = json.loads(body)
                i = (i + 1) % len(bodies)
        finally:
            writer.close()

    # Clients stop sending at the deadline; answers still in flight are awaited (bounded) and
    # checked, but not counted.
    await asyncio.wait_for(
        asyncio.gather(*(client(c) for c in range(clients))), warmup_s + seconds + 120
    )
    return result


def load_pass(
    url: str, texts: Sequence[str], clients: int, seconds: float, warmup_s: float = 1.0
) -> PassResult:
    """``clients`` closed-loop clients for ``warmup_s`` (not counted) + ``seconds``."""
    return asyncio.run(_run_pass(url, texts, clients, seconds, warmup_s))


# ----------------------------------------------------------------------------- servers


class ServerProcess:
    """A server started as a child process on 127.0.0.1 (port 0: the OS picks one)."""

    def __init__(self, name: str, command: list[str]) -> None:
        self.name = name
        self.command = command
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        found = threading.Event()
        urls: list[str] = []

        def read() -> None:  # drains stderr so the server never blocks on a full pipe
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log.append(line)
                match = re.search(r"Uvicorn running on (http://\S+)", line)
                if match and not found.is_set():
                    urls.append(match.group(1))
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(180):
            self.proc.kill()
            raise RuntimeError(f"{name} did not start:\n" + "".join(self.log[-40:]))
        self.url = urls[0]
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: /health never answered 200")

    def memory_mb(self) -> dict[str, float]:
        """Current (VmRSS) and peak (VmHWM) resident memory of the server process."""
        out = {}
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as fh:
            for line in fh:
                key = line.split(":")[0]
                if key in ("VmRSS", "VmHWM"):
                    out[key] = round(int(line.split()[1]) / 1024, 1)
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (all its threads).

        Less sensitive than wall time to other programs on a shared machine: CPU ms per text
        tells how much work a server spends on each answer.
        """
        with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metrics(self) -> dict[str, float]:
        """Prometheus samples of ``/metrics`` as {"name{labels}": value}."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def stop(self) -> int | None:
        """SIGTERM (graceful drain), then wait (bounded); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def batch_stats(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Model calls made between two scrapes, mean texts and mean requests per call."""
    calls = after.get("clf_batch_size_count", 0) - before.get("clf_batch_size_count", 0)
    if calls <= 0:
        return {"model_calls": 0}
    rows = after["clf_batch_size_sum"] - before.get("clf_batch_size_sum", 0)
    reqs = after["clf_batch_requests_sum"] - before.get("clf_batch_requests_sum", 0)
    single = after.get("clf_batch_requests_bucket{le=1.0}", 0) - before.get(
        "clf_batch_requests_bucket{le=1.0}", 0
    )
    tokens = after["clf_batch_tokens_sum"] - before.get("clf_batch_tokens_sum", 0)
    return {
        "model_calls": int(calls),
        "padded_tokens_per_text": round(tokens / rows, 2),
        "mean_texts_per_call": round(rows / calls, 2),
        "mean_requests_per_call": round(reqs / calls, 2),
        "share_of_calls_with_several_requests": round(1 - single / calls, 3),
    }
