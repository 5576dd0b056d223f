"""clf-serve over real HTTP (uvicorn on 127.0.0.1): answers equal offline predict_proba while
requests share batches, every refusal, readiness, metrics, internal errors."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_util import ThreadedServer, metric

from clf_runtime import Classifier
from clf_runtime.serve import ServeConfig, ServeConfigError, create_app

LABELS = ["negative", "neutral", "positive"]  # tests/conftest.py TINY_LABELS
MAX_LENGTH = 64  # tests/conftest.py TINY_MAX_LENGTH


def make_texts(n: int, seed: int = 7) -> list[str]:
    """Texts of every kind: short, long (over max_length), empty, unicode, special tokens."""
    rng = random.Random(seed)
    words = ["free", "prize", "call", "now", "ok", "see", "you", "later", "日本", "café", "😀"]
    special = ["", " ", "<|endoftext|>", "x\x00y", "WINNER!!", "word " * 200]
    out = []
    for i in range(n):
        if i % 9 == 0:
            out.append(special[(i // 9) % len(special)])
        else:
            out.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 90))))
    return out


@pytest.fixture(scope="module")
def clf_int8(tiny_export_dir: Path) -> Classifier:
    return Classifier.load(tiny_export_dir, providers="cpu", threads=1, precision="int8")


@pytest.fixture(scope="module")
def server(clf_int8: Classifier) -> Iterator[ThreadedServer]:
    """The default configuration on the int8 model, shared by the refusal tests."""
    config = ServeConfig(max_client_batch=4, payload_limit=4096)
    with ThreadedServer(create_app(clf_int8, config)) as srv:
        yield srv


def assert_healthy(srv: ThreadedServer) -> None:
    assert httpx.get(f"{srv.url}/health").status_code == 200
    r = httpx.post(f"{srv.url}/predict", json={"inputs": "still serving?"})
    assert r.status_code == 200, r.text


# ----------------------------------------------------------------------------- the headline


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_concurrent_single_text_requests_equal_offline_predict(
    tiny_export_dir: Path, precision: str
) -> None:
    clf = Classifier.load(tiny_export_dir, providers="cpu", threads=1, precision=precision)
    texts = make_texts(192)
    expected = clf.predict_proba(texts)
    # A short wait makes batches of many requests likely even on a tiny, fast model; the test
    # asserts below that they really happened.
    config = ServeConfig(max_wait_ms=2, max_batch_requests=16)
    with ThreadedServer(create_app(clf, config)) as srv:
        results: list[list[dict[str, object]] | None] = [None] * len(texts)

        def client(worker: int) -> None:
            with httpx.Client(base_url=srv.url, timeout=30) as http:
                for i in range(worker, len(texts), 32):
                    r = http.post("/predict", json={"inputs": texts[i]})
                    assert r.status_code == 200, r.text
                    results[i] = r.json()

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(client, range(32)))
        metrics = httpx.get(f"{srv.url}/metrics").text
    got = np.array([[{d["label"]: d["score"] for d in row}[k] for k in LABELS] for row in results])
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert [row[0]["label"] for row in results] == [LABELS[k] for k in expected.argmax(1)]
    calls = metric(metrics, "clf_batch_requests_count")
    single = metric(metrics, "clf_batch_requests_bucket", le="1.0")
    assert calls - single > 0, "no model call held texts of more than one request"
    assert metric(metrics, "clf_requests_total", route="/predict", status="200") == len(texts)


def test_predict_shapes_follow_tei(server: ThreadedServer, clf_int8: Classifier) -> None:
    texts = ["Free entry in 2 a wkly comp", "see you later"]
    expected = clf_int8.predict_proba(texts)
    one = httpx.post(f"{server.url}/predict", json={"inputs": texts[0]})
    assert one.status_code == 200
    body = one.json()  # a single string in: one list of every label, most probable first
    assert [d["label"] for d in body] == [LABELS[k] for k in np.argsort(-expected[0])]
    assert [d["score"] for d in body] == sorted((d["score"] for d in body), reverse=True)
    for header in ("x-total-time", "x-queue-time", "x-inference-time", "x-tokenization-time"):
        assert float(one.headers[header]) >= 0
    many = httpx.post(f"{server.url}/predict", json={"inputs": texts}).json()
    assert len(many) == 2 and all(len(row) == 3 for row in many)
    np.testing.assert_allclose(
        [[{d["label"]: d["score"] for d in row}[k] for k in LABELS] for row in many],
        expected,
        atol=1e-6,
    )
    raw = httpx.post(f"{server.url}/predict", json={"inputs": texts, "raw_scores": True}).json()
    logits = np.array([[{d["label"]: d["score"] for d in row}[k] for k in LABELS] for row in raw])
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(1, keepdims=True), expected, atol=1e-6)


def test_classify_route_is_vllm_shaped(server: ThreadedServer, clf_int8: Classifier) -> None:
    texts = ["WINNER!! claim now", "", "ok"]
    expected = clf_int8.predict_proba(texts)
    r = httpx.post(f"{server.url}/classify", json={"input": texts, "model": "anything"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert [d["label"] for d in body["data"]] == [LABELS[k] for k in expected.argmax(1)]
    np.testing.assert_allclose([d["probs"] for d in body["data"]], expected, atol=1e-6)
    tokens = sum(len(t) for t in clf_int8_tokens(clf_int8, texts))
    assert body["usage"]["prompt_tokens"] == tokens
    single = httpx.post(f"{server.url}/classify", json={"input": "ok"}).json()
    assert len(single["data"]) == 1


def clf_int8_tokens(clf: Classifier, texts: list[str]) -> list[list[int]]:
    from clf_runtime.tokenizer import encode_batch

    return encode_batch(texts, max_length=clf.metadata.max_length)


def test_long_client_list_is_split_and_reassembled(clf_int8: Classifier) -> None:
    texts = make_texts(40, seed=3)
    expected = clf_int8.predict_proba(texts)
    config = ServeConfig(max_batch_requests=3, max_batch_tokens=64, max_client_batch=40)
    with ThreadedServer(create_app(clf_int8, config)) as srv:
        r = httpx.post(f"{srv.url}/classify", json={"input": texts}, timeout=30)
        metrics = httpx.get(f"{srv.url}/metrics").text
    assert r.status_code == 200, r.text
    np.testing.assert_allclose([d["probs"] for d in r.json()["data"]], expected, atol=1e-6)
    assert metric(metrics, "clf_batch_size_count") >= 40 / 3  # really split into many calls
    assert metric(metrics, "clf_batch_size_bucket", le="4.0") == metric(
        metrics, "clf_batch_size_count"
    )


def test_info_health_metrics_and_page(server: ThreadedServer, clf_int8: Classifier) -> None:
    info = httpx.get(f"{server.url}/info").json()
    assert info["labels"] == LABELS and info["max_length"] == MAX_LENGTH
    assert info["precision"] == "int8" and info["provider"] == "CPUExecutionProvider"
    assert info["limits"]["max_client_batch"] == 4 and info["versions"]["gpt-clf"]
    assert httpx.get(f"{server.url}/health").json() == {"status": "ready"}
    httpx.post(f"{server.url}/predict", json={"inputs": ["a", "b"]})
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "clf_request_duration_seconds_bucket",
        "clf_queue_duration_seconds_bucket",
        "clf_tokenization_duration_seconds_bucket",
        "clf_inference_duration_seconds_bucket",
        "clf_batch_size_bucket",
        "clf_batch_tokens_bucket",
        "clf_queue_depth",
        "clf_requests_total",
    ):
        assert name in text, name
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert "http://" not in html and "https://" not in html  # nothing loaded from elsewhere


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "body is empty"),
        (b"\xff\xfe{}", "not"),
        (b"[1, 2]", "is an array; send a JSON object"),
        (b'{"text": "hi"}', "unknown field(s) 'text'"),
        (b'{"raw_scores": true}', '"inputs" is missing'),
        (b'{"inputs": 3}', '"inputs" must be a string or an array of strings'),
        (b'{"inputs": []}', "empty array"),
        (b'{"inputs": ["ok", 5]}', '"inputs"[1] is a number'),
        (b'{"inputs": [["a", "b"]]}', "text pairs are not supported"),
        (b'{"inputs": "hi", "raw_scores": "yes"}', '"raw_scores" must be true or false'),
        (b'{"inputs": "hi", "truncation_direction": "left"}', "not supported"),
    ],
)
def test_malformed_requests_get_422_naming_the_problem(
    server: ThreadedServer, body: bytes, fragment: str
) -> None:
    r = httpx.post(f"{server.url}/predict", content=body)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["error"]
    assert r.json()["error_type"] == "validation"


def test_classify_validates_its_own_fields(server: ThreadedServer) -> None:
    r = httpx.post(f"{server.url}/classify", json={"inputs": "hi"})  # TEI's name, wrong here
    assert r.status_code == 422 and "'inputs'" in r.json()["error"]
    r = httpx.post(f"{server.url}/classify", json={"input": "hi", "model": 3})
    assert r.status_code == 422 and '"model" must be a string' in r.json()["error"]


def test_too_many_texts_or_too_large_a_body_get_413(server: ThreadedServer) -> None:
    r = httpx.post(f"{server.url}/predict", json={"inputs": ["a"] * 5})
    assert r.status_code == 413
    assert "5 texts" in r.json()["error"] and "--max-client-batch" in r.json()["error"]
    big = json.dumps({"inputs": "x" * 5000}).encode()
    r = httpx.post(f"{server.url}/predict", content=big)
    assert r.status_code == 413 and "--payload-limit" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield b'{"inputs": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    r = httpx.post(f"{server.url}/predict", content=chunks())
    assert r.status_code == 413 and "--payload-limit" in r.json()["error"]
    r = httpx.post(f"{server.url}/predict", json={"inputs": "word " * 100, "truncate": False})
    assert r.status_code == 413 and "max_length of 64" in r.json()["error"]
    ok = httpx.post(f"{server.url}/predict", json={"inputs": "word " * 10, "truncate": False})
    assert ok.status_code == 200
    assert_healthy(server)


def test_unknown_route_and_method_are_json(server: ThreadedServer) -> None:
    r = httpx.get(f"{server.url}/nope")
    assert r.status_code == 404 and "/predict" in r.json()["error"]
    r = httpx.get(f"{server.url}/predict")
    assert r.status_code == 405 and "GET is not allowed" in r.json()["error"]


def test_full_queue_gets_429_with_retry_after(
    tiny_export_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clf = Classifier.load(tiny_export_dir, providers="cpu", threads=1, precision="int8")
    config = ServeConfig(max_queue=4, max_client_batch=4)
    with ThreadedServer(create_app(clf, config)) as srv:
        # Hold the model: the first request is taken by the worker and waits inside its model
        # call; the second fills the queue (4 texts); the third finds it full. No timing race.
        entered, release = threading.Event(), threading.Event()
        real = clf.run_logits

        def held(input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
            entered.set()
            release.wait(30)
            return real(input_ids, lengths)

        monkeypatch.setattr(clf, "run_logits", held)
        answers: dict[int, httpx.Response] = {}

        def send(k: int) -> None:
            answers[k] = httpx.post(f"{srv.url}/predict", json={"inputs": ["a"] * 4}, timeout=60)

        senders = [threading.Thread(target=send, args=(k,)) for k in range(2)]
        try:
            senders[0].start()
            assert entered.wait(30), "the first request never reached the model"
            senders[1].start()
            deadline = time.monotonic() + 30
            while metric(httpx.get(f"{srv.url}/metrics").text, "clf_queue_depth") < 4:
                assert time.monotonic() < deadline, "the second request never reached the queue"
                time.sleep(0.01)
            r = httpx.post(f"{srv.url}/predict", json={"inputs": "one more"})
        finally:
            release.set()
            for t in senders:
                t.join(60)
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1
        assert "retry later" in r.json()["error"] and r.json()["error_type"] == "overloaded"
        assert [answers[k].status_code for k in range(2)] == [200, 200]  # both were served
        assert_healthy(srv)


def test_api_key_is_required_when_set(clf_int8: Classifier) -> None:
    config = ServeConfig(api_key="s3cret")
    with ThreadedServer(create_app(clf_int8, config)) as srv:
        body = {"inputs": "hi"}
        missing = httpx.post(f"{srv.url}/predict", json=body)
        assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["error"]
        assert missing.headers["www-authenticate"] == "Bearer"
        for header in ("Bearer wrong", "Bearer s3cret2", "Basic s3cret", "s3cret"):
            r = httpx.post(f"{srv.url}/predict", json=body, headers={"Authorization": header})
            assert r.status_code == 401 and "wrong" in r.json()["error"], header
        assert httpx.get(f"{srv.url}/info").status_code == 401
        assert httpx.get(f"{srv.url}/metrics").status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert httpx.post(f"{srv.url}/predict", json=body, headers=good).status_code == 200
        assert httpx.get(f"{srv.url}/info", headers=good).json()["auth_required"] is True
        assert httpx.get(f"{srv.url}/health").status_code == 200  # probes need no key
        assert httpx.get(srv.url + "/").status_code == 200  # the page asks for the key


def test_a_failing_batch_gets_500_and_the_server_keeps_serving(
    tiny_export_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clf = Classifier.load(tiny_export_dir, providers="cpu", threads=1, precision="int8")
    from clf_runtime.tokenizer import encode_batch

    poison = encode_batch(["POISON PILL"], max_length=MAX_LENGTH)[0]
    real = clf.run_logits

    def run_logits(input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        if any(list(row[: len(poison)]) == poison for row in input_ids.tolist()):
            raise RuntimeError("simulated onnxruntime failure")
        return real(input_ids, lengths)

    monkeypatch.setattr(clf, "run_logits", run_logits)
    with ThreadedServer(create_app(clf)) as srv:
        r = httpx.post(f"{srv.url}/predict", json={"inputs": ["fine", "POISON PILL"]})
        assert r.status_code == 500
        assert "simulated onnxruntime failure" in r.json()["error"]
        assert r.json()["error_type"] == "backend"
        assert_healthy(srv)
        text = httpx.get(f"{srv.url}/metrics").text
        assert metric(text, "clf_batch_failures_total") >= 1
        assert metric(text, "clf_requests_total", route="/predict", status="500") == 1


def test_health_is_503_until_warmed_up(
    tiny_export_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clf = Classifier.load(tiny_export_dir, providers="cpu", threads=1, precision="int8")
    release = threading.Event()
    real = clf.run_logits

    def slow_first_calls(input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        release.wait(30)  # warm-up blocks here until the test has seen the 503s
        return real(input_ids, lengths)

    monkeypatch.setattr(clf, "run_logits", slow_first_calls)
    with ThreadedServer(create_app(clf), wait_ready=False) as srv:
        health = httpx.get(f"{srv.url}/health")
        assert health.status_code == 503 and health.json()["status"] == "warming up"
        r = httpx.post(f"{srv.url}/predict", json={"inputs": "too early"})
        assert r.status_code == 503 and "GET /health" in r.json()["error"]
        assert r.headers["retry-after"] == "1"
        release.set()
        from serve_util import wait_healthy

        wait_healthy(srv.url, timeout=30)
        assert httpx.post(f"{srv.url}/predict", json={"inputs": "now"}).status_code == 200


def test_bad_config_is_one_error_naming_every_flag(clf_int8: Classifier) -> None:
    bad = ServeConfig(max_queue=0, max_wait_ms=-1, port=70000, max_client_batch=64)
    with pytest.raises(ServeConfigError) as info:
        create_app(clf_int8, bad)
    message = str(info.value)
    for flag in ("--max-queue", "--max-wait-ms", "--port"):
        assert flag in message
    too_big = ServeConfig(max_client_batch=600, max_queue=512)
    assert any("--max-client-batch (600)" in p for p in too_big.problems())


def test_a_model_path_is_loaded_without_spinning_unless_asked(tiny_export_dir: Path) -> None:
    key = "session.intra_op.allow_spinning"
    quiet = create_app(tiny_export_dir, ServeConfig(threads=1))
    options = quiet.state.clf_server.clf._session.get_session_options()
    assert options.get_session_config_entry(key) == "0"
    assert quiet.state.clf_server.info["onnxruntime_spin"] is False
    spinning = create_app(tiny_export_dir, ServeConfig(threads=1, spin=True))
    options = spinning.state.clf_server.clf._session.get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):
        options.get_session_config_entry(key)  # onnxruntime's default (spinning) applies
