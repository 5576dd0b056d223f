"""Cheap checks of the benchmark programs' helpers (the benchmarks themselves are programs,
run by hand: see benchmarks/README.md). No model is built here (the profiler test reads the
suite's shared tiny export); the whole file takes seconds."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import bench_coldstart  # noqa: E402
import bench_ddp  # noqa: E402
import bench_inference  # noqa: E402
import common  # noqa: E402


def test_percentiles_are_exact_in_milliseconds() -> None:
    stats = common.percentiles([0.005, 0.001, 0.003, 0.002, 0.004])
    assert stats == {
        "n": 5,
        "p50_ms": 3.0,
        "p90_ms": 4.6,
        "p99_ms": 4.96,
        "mean_ms": 3.0,
        "min_ms": 1.0,
        "max_ms": 5.0,
    }


def test_percentiles_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        common.percentiles([])


def test_ratio_and_batches() -> None:
    assert common.ratio(3.0, 2.0) == 1.5
    assert common.ratio(1.0, 0.0) is None
    assert common.ratio(None, 1.0) is None
    assert common.batches([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]


def test_write_result_round_trips_and_environment_records_settings(tmp_path: Path) -> None:
    env = common.environment(threads=2, providers=["CPUExecutionProvider"])
    assert env["settings"] == {"threads": 2, "providers": ["CPUExecutionProvider"]}
    assert set(env["cpu"]["flags"]) >= {"avx2", "avx512_vnni", "avx512_bf16", "amx_tile"}
    assert {"torch", "onnxruntime-gpu", "optimum", "transformers", "numpy"} <= set(env["packages"])
    path = common.write_result("demo", {"environment": env, "x": [1, 2]}, out_dir=tmp_path)
    assert path == tmp_path / "demo.json"
    assert json.loads(path.read_text())["x"] == [1, 2]


def test_agreement_counts_argmax_matches_against_the_reference() -> None:
    ref = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], dtype=np.float32)
    other = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.3, 0.7]], dtype=np.float32)
    out = bench_inference.agreement({"ref": ref, "other": other}, "ref")
    assert out["ref"]["argmax_agreement"] == 1.0
    assert out["other"]["argmax_agreement"] == 0.75
    assert out["other"]["max_abs_prob_diff"] == pytest.approx(0.2, abs=1e-6)


def test_targets_compare_ratios_with_thresholds() -> None:
    # Batch 32 targets: the runtime's own batching ("whole list") against optimum sorted by
    # hand and torch; single text: ours predict_proba([text]) against optimum pre-tokenized.
    b32 = {
        "torch-fp32": {"texts_per_s": 10.0},
        "ours-int8 (whole list)": {"texts_per_s": 170.0},
        "ours-fp32 (whole list)": {"texts_per_s": 50.0},
        "optimum-fp32 (sorted by hand)": {"texts_per_s": 40.0},
        "optimum-int8 (sorted by hand)": {"texts_per_s": 150.0},
    }
    single = {
        "ours-int8": {"p50_ms": 6.0, "p99_over_p50": 2.5},
        "optimum-int8": {"p50_ms": 6.6},
    }
    checks = {
        "ours-int8 vs ours-fp32": 0.99,
        "ours-int8 alone vs whole list max_abs_prob_diff": 2e-6,
        "int8 / fp32 file bytes": 0.26,
    }
    t = bench_inference._targets(b32, single, checks, None)
    assert t["b32 ours-int8 (whole list) / torch-fp32 texts/s >= 16"] == {
        "value": 17.0,
        "threshold": 16.0,
        "met": True,
    }
    assert (
        t["b32 ours-int8 (whole list) / optimum-int8 (sorted by hand) texts/s >= 1.25"]["met"]
        is False
    )  # 1.13
    assert (
        t["b32 ours-fp32 (whole list) / optimum-fp32 (sorted by hand) texts/s >= 1.15"]["value"]
        == 1.25
    )
    assert t["single text: optimum-int8 p50 / ours-int8 p50 >= 1 (ours no slower)"]["met"] is True
    # "at most" targets: met when the value is not above the threshold
    assert t["single text: ours-int8 p99 / p50 <= 2"]["met"] is False
    assert t["ours-int8: max |prob diff| alone vs whole list <= 1e-5 (pooling contract)"]["met"]
    assert t["int8 file / fp32 file <= 0.30"]["met"] is True
    assert t["ours int8 vs fp32 argmax agreement >= 0.995 (random weights)"]["met"] is False
    assert not any("trained run" in k for k in t)
    trained = {"int8_vs_fp32_argmax_agreement": 1.0}
    t = bench_inference._targets(b32, single, checks, trained)
    assert t["ours int8 vs fp32 argmax agreement >= 0.995 (trained run, SMS test)"]["met"] is True


def test_sorted_by_hand_batches_are_padded_ahead_and_unsorted_back() -> None:
    calls = []

    def feed(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        calls.append((ids.copy(), mask.copy()))
        return np.stack([mask.sum(1), -mask.sum(1)], axis=1).astype(np.float32)

    engine = bench_inference.Engine(
        "optimum-int8",
        "int8",
        run=lambda texts: None,
        fixed=lambda ids: None,
        tokenize=lambda texts: [list(range(len(t))) for t in texts],
        feed=feed,
    )
    texts = ["aaaa", "a", "aaa", "aa", "aaaaa"]
    jobs, orders = bench_inference.sorted_by_hand_jobs([engine], texts, 2)
    [(name, runner, groups)] = jobs
    assert name == "optimum-int8 (sorted by hand)"
    assert [g[0].shape for g in groups] == [(2, 2), (2, 4), (1, 5)]  # sorted, padded per batch
    assert groups[0][0].tolist() == [[0, 50256], [0, 1]]
    assert orders[name].tolist() == [1, 3, 2, 0, 4]
    out = np.concatenate([runner.run(g) for g in groups])
    unsorted = np.empty_like(out)
    unsorted[orders[name]] = out
    assert unsorted[:, 0].tolist() == [4, 1, 3, 2, 5]  # each text's own length, input order


def test_coldstart_summary_takes_medians_and_peak_memory() -> None:
    runs = [
        {
            "import_s": i,
            "load_s": 2 * i,
            "predict_s": 0.1,
            "in_process_s": 3 * i,
            "process_wall_s": 4 * i,
            "vmhwm_kb": 1024 * i,
            "wait4_maxrss_kb": 999_999,  # polluted by the parent: must be ignored
            "torch_imported": False,
            "model_file": "model.int8.onnx",
        }
        for i in (1, 3, 2)
    ]
    s = bench_coldstart.summarize(runs)
    assert s["median_import_s"] == 2 and s["median_in_process_s"] == 6
    assert s["median_peak_rss_mb"] == 2.0 and s["max_peak_rss_mb"] == 3.0
    assert s["torch_imported"] is False and s["runs"] == 3


def test_plot_latency_writes_a_png(tmp_path: Path) -> None:
    import plot

    rows = [
        {"engine": e, "batch_size": b, "seq_len": t, "p50_ms": float(b * t) * k}
        for k, e in ((1.0, "torch-fp32"), (0.3, "ours-int8"))
        for b in (1, 8)
        for t in (16, 64)
    ]
    out = plot.plot_latency({"sweep": rows}, tmp_path / "latency.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no fixed-shape sweep"):
        plot.plot_latency({"sweep": []}, tmp_path / "empty.png")


def test_bench_cuda_fails_fast_without_cuda() -> None:
    from clf_runtime.session import cuda_is_usable

    if cuda_is_usable():
        pytest.skip("a CUDA device is usable here: the fail-fast path does not apply")
    proc = subprocess.run(
        [sys.executable, str(BENCH_DIR / "bench_cuda.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "onnxruntime cannot run on CUDA here" in proc.stderr
    assert "--allow-cpu" in proc.stderr


def test_preset_config_names_each_library_its_way() -> None:
    assert common.preset_config("gpt2", "ch04") == {  # the book's GPT_CONFIG_124M, qkv_bias on
        "vocab_size": 50257,
        "context_length": 1024,
        "emb_dim": 768,
        "n_layers": 12,
        "n_heads": 12,
        "qkv_bias": True,
    }
    from transformers import GPT2Config

    cfg = GPT2Config(**common.preset_config("gpt2-tiny", "hf"))
    assert (cfg.n_positions, cfg.n_embd, cfg.n_layer, cfg.n_head) == (512, 128, 2, 4)
    assert (cfg.vocab_size, cfg.layer_norm_epsilon) == (50257, 1e-5)


def test_int_list_parses_comma_separated_positive_integers() -> None:
    assert common.int_list("1, 32,128,") == [1, 32, 128]
    for bad in ("", "1,x", "0,2", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive integers"):
            common.int_list(bad)


@pytest.mark.parametrize("name", [None, "custom"])
def test_run_program_measures_in_a_temp_dir_and_writes_the_result(
    tmp_path: Path, name: str | None
) -> None:
    seen: list[Path] = []

    def measure(args: argparse.Namespace, work: Path) -> tuple[str, dict]:
        assert work.is_dir()
        seen.append(work)
        return "default", {"x": 1}

    args = argparse.Namespace(work_dir=None, out=tmp_path, name=name)
    assert common.run_program(args, measure, prefix="demo_") == 0
    assert json.loads((tmp_path / f"{name or 'default'}.json").read_text()) == {"x": 1}
    assert seen[0].name.startswith("demo_") and not seen[0].exists()
    kept = tmp_path / "kept"
    common.run_program(
        argparse.Namespace(work_dir=kept, out=tmp_path, name=None), measure, prefix=""
    )
    assert seen[1] == kept and kept.is_dir()


def test_ddp_balance_is_mean_over_max_rank_work() -> None:
    # One batch of 4 distinct lengths on 2 ranks: owners alternate along the length order,
    # rank 0 gets lengths 1 and 3 (work 2 x 3), rank 1 gets 2 and 4 (work 2 x 4).
    out = bench_ddp.balance([4, 1, 3, 2], 4, 2, epochs=1)
    assert out == {"global_batch": 4, "world": 2, "balance": 0.875, "steps": 1, "empty_shares": 0}
    lonely = bench_ddp.balance([5], 1, 2, epochs=1)  # rank 1 owns nothing
    assert (lonely["balance"], lonely["empty_shares"]) == (0.5, 1)


def test_profile_ops_splits_kernel_time_by_op_type(tiny_export_dir: Path) -> None:
    import profile_ops

    from clf_runtime.tokenizer import encode_batch

    tokens = encode_batch(["ok", "see you at lunch?", "WINNER!! claim your prize now"] * 3)
    batches = profile_ops._batches(tokens, 4)
    assert [len(lengths) for _, lengths in batches] == [4, 4, 1]
    assert all(np.all(np.diff(lengths) >= 0) for _, lengths in batches)  # sorted by length
    ids, lengths = batches[0]
    assert ids.shape == (4, lengths.max()) and ids[0, lengths[0] :].tolist() == [50256] * (
        lengths.max() - lengths[0]
    )
    r = profile_ops.profile_model(tiny_export_dir / "model.int8.onnx", batches, threads=1, warmup=1)
    assert r["calls"] == 3 and r["graph_nodes"] > 0
    assert "MatMulIntegerToFloat" in r["kernel_ms_per_op_type"]
    assert r["kernel_ms_total"] > 0
    assert r["matrix_share_of_kernel_time"] + r["outside_matrix_share_of_kernel_time"] == (
        pytest.approx(1.0, abs=1e-3)
    )


def test_profile_ops_feeds_optimum_graphs_a_mask() -> None:
    import profile_ops

    class Inputs:
        def __init__(self, *names: str) -> None:
            self.names = names

        def get_inputs(self) -> list:
            return [type("I", (), {"name": n})() for n in self.names]

    ids = np.array([[5, 6, 7], [8, 50256, 50256]])
    lengths = np.array([3, 1])
    feeds = profile_ops._feeds(Inputs("input_ids", "attention_mask", "position_ids"), ids, lengths)
    assert feeds["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert feeds["position_ids"].tolist() == [[0, 1, 2], [0, 1, 2]]
    assert set(profile_ops._feeds(Inputs("input_ids", "lengths"), ids, lengths)) == {
        "input_ids",
        "lengths",
    }


def test_int8_schemes_bench_exports_each_scheme_and_times_it(tmp_path: Path) -> None:
    import bench_int8_schemes
    from conftest import TINY_LABELS, make_tiny_torch_model

    from clf_train.run_dir import WEIGHTS_FILE, RunConfig, save_weights, write_split

    model = make_tiny_torch_model()
    run = tmp_path / "run"
    run.mkdir()
    cfg = RunConfig(model=model.cfg, labels=list(TINY_LABELS), max_length=32)
    cfg.write(run)
    save_weights(run / WEIGHTS_FILE, model, run_config=cfg)
    texts = [f"message {i} " + "word " * (i % 7) for i in range(24)]
    labels = [TINY_LABELS[i % 3] for i in range(24)]
    for split in ("train", "val", "test"):
        write_split(run, split, texts, labels)
    args = argparse.Namespace(threads=1, repeats=1, single_texts=3)
    name, payload = bench_int8_schemes.measure(args, tmp_path)
    assert name == "int8_schemes"
    rows = payload["schemes"]
    assert list(rows) == list(bench_int8_schemes.SCHEMES)
    for scheme, row in rows.items():
        report = json.loads((tmp_path / "schemes" / scheme / "report.json").read_text())
        assert report["int8"]["scheme"] == scheme  # forced, not chosen
        assert row["texts_per_s"] > 0 and row["single_p50_ms"] <= row["single_p99_ms"]
        assert 0 <= row["argmax_agreement_vs_fp32"] <= 1
    assert rows["rowwise"]["texts_per_s_vs_rowwise"] == 1.0


def test_int8_schemes_bench_needs_the_inference_models(tmp_path: Path) -> None:
    import bench_int8_schemes

    with pytest.raises(SystemExit, match=r"bench_inference\.py --work-dir"):
        bench_int8_schemes.export_schemes(tmp_path)
