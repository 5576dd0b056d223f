"""Scoring with Ray Data (local Ray, 2 CPUs, tiny model): same answers as the single-process
runtime, every row exactly once even when an actor is killed mid-job.

One Ray session serves the whole module (starting Ray takes seconds).
"""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")

from clf_runtime import Classifier  # noqa: E402
from clf_runtime.predict_cli import main  # noqa: E402
from clf_runtime.ray import (  # noqa: E402
    MANIFEST_FILE,
    ClassifierPredictor,
    plan_inputs,
    predict_dataset,
    read_dataset,
    write_dataset,
)

LABELS = ("negative", "neutral", "positive")
PROBS = [f"prob_{label}" for label in LABELS]
N_TEXTS = 10_000
WORDS = ["free", "prize", "call", "now", "see", "you", "later", "ok", "win", "claim", "cash"]


@pytest.fixture(scope="module")
def ray_session():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """10,000 texts in one CSV: a `Message` column (found without --text-col) and an id."""
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 40))) for _ in range(N_TEXTS)]
    texts[7] = 'quotes "inside", commas\nand a newline'
    path = tmp_path_factory.mktemp("corpus") / "texts.csv"
    frame = pd.DataFrame({"row_id": [f"r{i}" for i in range(N_TEXTS)], "Message": texts})
    frame.to_csv(path, index=False)
    return path, texts


@pytest.fixture(scope="module")
def reference(tiny_export_dir: Path, corpus) -> np.ndarray:
    """The single-process runtime's probabilities for the corpus (fp32, one thread)."""
    clf = Classifier.load(tiny_export_dir, providers="cpu", threads=1, precision="fp32")
    return clf.predict_proba(corpus[1])


def _check_rows(frame, corpus, reference: np.ndarray) -> None:
    path = corpus[0]
    assert len(frame) == N_TEXTS
    frame = frame.sort_values("index")
    assert frame["index"].tolist() == list(range(N_TEXTS))  # every row exactly once
    assert set(frame["file"]) == {str(path)}
    assert frame["id"].tolist() == [f"r{i}" for i in range(N_TEXTS)]
    probs = frame[PROBS].to_numpy()
    np.testing.assert_allclose(probs, reference, atol=1e-6, rtol=0)
    assert frame["label"].tolist() == [LABELS[k] for k in reference.argmax(axis=1)]


def test_cli_scores_10000_texts_like_the_single_process_runtime(
    ray_session, tiny_export_dir, corpus, reference, tmp_path, capsys
) -> None:
    out = tmp_path / "scores"
    argv = [str(tiny_export_dir), "--engine", "ray", "--input", str(corpus[0]), "--output"]
    argv += [str(out), "--workers", "2", "--threads", "1", "--precision", "fp32"]
    assert main([*argv, "--id-col", "row_id", "--include-text"]) == 0
    err = capsys.readouterr().err
    assert "10,000 texts in 1 file(s); 2 worker(s) x 1 thread(s)" in err
    assert "model.onnx (fp32) on CPUExecutionProvider" in err
    frame = pd.read_parquet(out)
    _check_rows(frame, corpus, reference)
    assert frame.sort_values("index")["text"].tolist() == corpus[1]
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["rows"] == N_TEXTS and manifest["workers"] == 2
    assert manifest["model"]["precision"] == "fp32" and manifest["texts_per_s"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores"]  # no staging left behind


def test_killed_actor_is_restarted_and_every_row_written_once(
    ray_session, tiny_export_dir, corpus, reference, tmp_path
) -> None:
    marker = tmp_path / "crashed"

    class CrashOnce(ClassifierPredictor):  # local: Ray pickles it by value for the workers
        """Kills its own actor process (SIGKILL, no cleanup) in one mid-job batch, once."""

        def __call__(self, batch):
            if batch["index"].min() >= 4096:  # a batch in the middle of the job
                try:
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass  # crashed once already: score normally
                else:
                    os.close(fd)
                    os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(batch)

    splits = plan_inputs([str(corpus[0])], rows_per_split=1024, id_col="row_id")
    assert sum(s.rows for s in splits) == N_TEXTS
    ds = predict_dataset(
        read_dataset(splits),
        tiny_export_dir,
        workers=2,
        threads=1,
        precision="fp32",
        predictor=CrashOnce,
    )
    out = tmp_path / "out"
    record = write_dataset(ds, out, output_format="jsonl", expected_rows=N_TEXTS)
    assert marker.exists()  # the actor really was killed
    assert record["rows"] == N_TEXTS
    frame = pd.concat(
        pd.read_json(p, lines=True, dtype={"id": str}) for p in sorted(out.glob("*.jsonl"))
    )
    _check_rows(frame, corpus, reference)


def test_folders_globs_and_formats(ray_session, tiny_export_dir, tmp_path, capsys) -> None:
    """Parquet, JSONL and TSV files from a folder and a glob; JSONL output joins back by
    (file, index) and by id."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    (data / "part").mkdir(parents=True)
    texts = [f"message {i} " * (i % 7) for i in range(30)]
    texts[15] = "a lone surrogate \ud800 from JSON"  # Arrow refuses it; scored as U+FFFD
    pq.write_table(pa.table({"key": list(range(10)), "text": texts[:10]}), data / "a.parquet")
    (data / "part" / "b.jsonl").write_text(
        "".join(json.dumps({"key": 10 + i, "text": t}) + "\n" for i, t in enumerate(texts[10:20]))
    )
    (data / "_ignored.jsonl").write_text("not json\n")  # hidden names are skipped
    (tmp_path / "c.tsv").write_text(
        "key\ttext\n" + "".join(f"{20 + i}\t{t}\n" for i, t in enumerate(texts[20:]))
    )
    out = tmp_path / "out"
    argv = [str(tiny_export_dir), "--engine", "ray", "-i", str(data), "-i", str(tmp_path / "*.tsv")]
    argv += ["-o", str(out), "--output-format", "jsonl", "--id-col", "key", "--chunk-size", "4"]
    assert main([*argv, "--precision", "fp32", "--threads", "1", "--quiet"]) == 0
    rows = [json.loads(line) for p in out.glob("*.jsonl") for line in p.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(str(i) for i in range(30))  # ids as text
    by_id = {int(r["id"]): r for r in rows}
    expected = Classifier.load(tiny_export_dir, providers="cpu", threads=1, precision="fp32")
    probs = expected.predict_proba(texts)
    for key, row in by_id.items():
        np.testing.assert_allclose([row[c] for c in PROBS], probs[key], atol=1e-6)
        source = "a.parquet" if key < 10 else "b.jsonl" if key < 20 else "c.tsv"
        assert row["file"].endswith(source) and row["index"] == key % 10

    # A second run into the same directory is refused without --overwrite, replaces it with.
    assert main([*argv, "--precision", "fp32", "--quiet"]) == 1
    assert "already exists and is not empty. Pass --overwrite" in capsys.readouterr().err
    argv[argv.index("jsonl")] = "parquet"
    assert main([*argv, "--precision", "fp32", "--quiet", "--overwrite"]) == 0
    assert len(pd.read_parquet(out)) == 30 and not list(out.glob("*.jsonl"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tsv", "data", "out"]


def test_bad_input_fails_before_any_worker(ray_session, tiny_export_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n' * 3 + '{"text": 5}\n')
    out = tmp_path / "out"
    argv = [str(tiny_export_dir), "--engine", "ray", "-i", str(bad), "-o", str(out)]
    assert main(argv) == 1
    assert "bad.jsonl line 4: 'text' is int" in capsys.readouterr().err
    assert main([*argv[:4], str(tmp_path / "none*.csv"), "-o", str(out)]) == 1
    assert "matches no file" in capsys.readouterr().err
    assert not out.exists()


def test_predictor_numpy_batches_and_column_clash(tiny_export_dir) -> None:
    """The class works on Ray's numpy batch format and refuses to overwrite a column."""
    predictor = ClassifierPredictor(tiny_export_dir, precision="fp32", threads=1)
    batch = {"text": np.array(["hello", "free prize"], dtype=object), "n": np.arange(2)}
    out = predictor(batch)
    assert list(out) == ["text", "n", "label", *PROBS]
    np.testing.assert_allclose(np.stack([out[c] for c in PROBS], 1).sum(1), 1.0, atol=1e-6)
    from clf_runtime.errors import ClassifierError

    with pytest.raises(ClassifierError, match=r"already has column\(s\) \['label'\]"):
        predictor(pd.DataFrame({"text": ["a"], "label": ["gold"]}))
    with pytest.raises(ClassifierError, match="no column 'text'"):
        predictor({"body": np.array(["a"], dtype=object)})


def test_actor_threads_follow_the_cpus_ray_reserved(ray_session, tiny_export_dir) -> None:
    """Without threads=, an actor runs as many onnxruntime threads as CPUs it reserved."""

    class Threads(ClassifierPredictor):
        def __call__(self, batch):
            out = super().__call__(batch)
            out["threads"] = np.full(len(out["text"]), self.threads)
            return out

    ds = ray.data.from_items([{"text": f"text {i}"} for i in range(8)])
    for cpus in (1, 2):
        scored = ds.map_batches(
            Threads,
            fn_constructor_args=(str(tiny_export_dir),),
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=cpus,
            batch_size=4,
            batch_format="numpy",
        )
        assert set(scored.to_pandas()["threads"]) == {cpus}
