"""Cheap checks of bench_serve.py's load generator and helpers on the tiny model (the benchmark
itself is a program, run by hand: see benchmarks/README.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from serve_util import ThreadedServer

from clf_runtime import Classifier
from clf_runtime.serve import ServeConfig, create_app

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import bench_serve  # noqa: E402
import loadgen  # noqa: E402


def test_a_load_pass_counts_answers_and_checks_them(tiny_export_dir: Path) -> None:
    clf = Classifier.load(tiny_export_dir, providers="cpu", threads=1, precision="int8")
    texts = [f"message number {i} " * (1 + i % 4) for i in range(12)]
    expected = clf.predict_proba(texts)
    with ThreadedServer(create_app(clf, ServeConfig(max_wait_ms=1))) as srv:
        res = loadgen.load_pass(srv.url, texts, clients=4, seconds=0.6, warmup_s=0.2)
    summary = res.summary()
    assert res.errors == 0 and res.texts == len(res.latencies_s) > 0
    assert summary["texts_per_s"] == round(res.texts / res.window_s, 2)
    assert summary["p50_ms"] <= summary["p99_ms"]
    check = bench_serve.check_answers(res, expected, list(clf.labels))
    assert check["checked"] == len(res.answers) > 0
    assert check["max_abs_prob_diff"] <= 1e-6 and check["label_agreement"] == 1.0


def test_check_answers_sees_a_wrong_answer() -> None:
    res = loadgen.PassResult(clients=1, window_s=1.0, texts=1, errors=0, latencies_s=[0.01])
    res.answers[0] = [{"label": "b", "score": 0.9}, {"label": "a", "score": 0.1}]
    check = bench_serve.check_answers(res, np.array([[0.7, 0.3]], np.float32), ["a", "b"])
    assert check["label_agreement"] == 0.0
    assert abs(check["max_abs_prob_diff"] - 0.6) < 1e-6


def test_batch_stats_from_two_scrapes() -> None:
    before = {"clf_batch_size_count": 2, "clf_batch_size_sum": 2, "clf_batch_requests_sum": 2}
    before |= {"clf_batch_requests_bucket{le=1.0}": 2, "clf_batch_tokens_sum": 30}
    after = {"clf_batch_size_count": 6, "clf_batch_size_sum": 22, "clf_batch_requests_sum": 14}
    after |= {"clf_batch_requests_bucket{le=1.0}": 3, "clf_batch_tokens_sum": 830}
    assert loadgen.batch_stats(before, after) == {
        "model_calls": 4,
        "padded_tokens_per_text": 40.0,
        "mean_texts_per_call": 5.0,
        "mean_requests_per_call": 3.0,
        "share_of_calls_with_several_requests": 0.75,
    }
    assert loadgen.batch_stats(after, after) == {"model_calls": 0}


def test_targets_compare_the_top_load_and_one_client() -> None:
    summary = {
        "on": {"1": {"texts_per_s": 90, "p50_ms": 12.0}, "64": {"texts_per_s": 150}},
        "off-serial": {"64": {"texts_per_s": 60}},
        "off-threadpool": {"64": {"texts_per_s": 40}},
    }
    goals = bench_serve.targets(summary, offline=160.0, direct_p50=11.0)
    assert goals["64 clients: on / off-serial texts/s >= 3"] == {
        "value": 2.5,
        "threshold": 3.0,
        "met": False,
    }
    assert goals["64 clients: on / off-threadpool texts/s >= 3"]["met"] is True
    assert goals["64 clients: on / offline predict_proba texts/s >= 0.8"]["value"] == 0.938
    assert goals["1 client: on p50 - direct call p50 <= 1.5 ms"]["met"] is True
