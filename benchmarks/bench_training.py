"""Training benchmark: ``clf-train`` vs the published chapter-6 recipe, same configuration.

Configuration shared by both sides: GPT-2 small (``PRESETS["gpt2"]``), last transformer block
+ final norm + head trainable, batch 8, AdamW lr 5e-5 weight decay 0.1, 5 epochs, the
balanced SMS spam split (``prepare_data("sms-spam", balance=True, seed=123)``: 1,045 / 149 / 300
texts), and the SAME random initialisation: a seeded ``llms_from_scratch.ch04.GPTModel``
(GPT_CONFIG_124M with qkv_bias=True, drop_rate 0.0) whose ``out_head`` is replaced by a seeded
``Linear(768, 2)``, saved as a ``.pth`` state dict. No pretrained GPT-2 weights are needed.

- ours: ``clf-train --data train.jsonl --val-data val.jsonl --test-data test.jsonl --weights
  init.pth --trainable last-block ...`` in a fresh process (the split files are this split, so
  both sides see the same texts). Timed: the whole process (wall), and the per-epoch seconds
  it records in ``history.json``. Test accuracy from ``metrics.json`` (best-val-loss epoch).
  Repeated with ``--frozen-dtype bf16``.
- reference: the published code of ``llms_from_scratch.ch06`` as the book runs it:
  ``SpamDataset`` (pads to the longest training text), DataLoaders (batch 8, shuffle,
  drop_last=True, num_workers=0), all parameters frozen then ``trf_blocks[-1]``,
  ``final_norm``, ``out_head`` unfrozen, ``train_classifier_simple(eval_freq=50, eval_iter=5)``.
  Timed: ``train_classifier_simple`` (its periodic evaluations included, as in the book) and
  each optimizer step; test accuracy via ``calc_accuracy_loader`` on the test loader (final
  weights, as in the book).

The headline speedup divides the reference's training time by our WHOLE process time
(start-up, data, frozen-block cache, training, evaluation, files): a conservative ratio.

LoRA rows (``--lora-steps N``, default 20; 0 skips them):

- step time and extrapolated 5-epoch time of ``--trainable lora`` (rank 16, alpha 16, every
  target, every block), ``lora --lora-blocks last-2`` and ``last-block``, all three timed the
  same way on the same split and the same ``init.pth``, in process (:mod:`training_steps`:
  2 warm-up steps, then N steps, the three strategies' steps interleaved; the extrapolation
  is setup + 5 x (steps per epoch x mean step + a validation pass) + the final evaluation);
  the LoRA-on-every-block model's adapters after its steps are merged as ``clf-export`` does,
  and merged vs unmerged logits recorded;
- from scratch (no pretrained weights exist here): ``clf-train --preset sms-demo`` with
  ``--trainable lora`` and with ``--trainable all`` (the preset's own), whole runs in fresh
  processes, test accuracy and time; the LoRA run is then exported with ``clf-export
  --quantize`` (merge check and int8-vs-fp32 agreement on its test split from report.json).
  ``--skip-sms-demo`` leaves these out.

``--lora-only`` runs just the LoRA rows (result ``training_lora.json``).

Usage: ``python benchmarks/bench_training.py`` (full: ~15 min for the reference alone on 2
cores). Smoke: ``--epochs 1 --ref-epochs 1 --limit 40 --lora-steps 2 --skip-sms-demo``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common
import training_steps

LABEL_IDS = {"ham": 0, "spam": 1}  # the book's mapping; also our sorted label order


def ch04_config(preset: str) -> dict[str, Any]:
    """The book's GPT config dict for one of our presets (GPT_CONFIG_124M for "gpt2")."""
    return {**common.preset_config(preset, "ch04"), "drop_rate": 0.0}


def make_init_weights(path: Path, preset: str, seed: int) -> None:
    """Seeded ch04.GPTModel with a seeded 2-label out_head, saved as a state dict (.pth)."""
    import torch
    from llms_from_scratch.ch04 import GPTModel

    torch.manual_seed(seed)
    model = GPTModel(ch04_config(preset))
    torch.manual_seed(seed)
    model.out_head = torch.nn.Linear(model.out_head.in_features, len(LABEL_IDS))
    torch.save(model.state_dict(), path)


def make_split(work: Path, limit: int | None, seed: int) -> dict[str, Any]:
    """Write the split as JSONL (ours) and as the book's CSVs (Label 0/1, Text)."""
    import pandas as pd

    os.environ.setdefault("CLF_DATA_DIR", str(common.SMS_DIR))
    from clf_train.splits import prepare_data

    data = prepare_data("sms-spam", balance=True, seed=seed)
    sizes = {}
    for name, csv_name in (("train", "train"), ("val", "validation"), ("test", "test")):
        split = getattr(data, name)
        n = len(split.texts)
        if limit is not None:
            n = min(n, limit if name == "train" else max(8, limit // 4))
        texts, labels = split.texts[:n], split.labels[:n]
        with (work / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for t, y in zip(texts, labels, strict=True):
                fh.write(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n")
        frame = pd.DataFrame({"Label": [LABEL_IDS[y] for y in labels], "Text": texts})
        frame.to_csv(work / f"{csv_name}.csv", index=None)
        sizes[name] = n
    return sizes


# ----------------------------------------------------------------------------- ours


def run_cli(module: str, flags: Sequence[str], log: Path) -> float:
    """``python -m``-style run of ``module``'s ``main`` in a fresh process, output to ``log``;
    the wall seconds. Raises with the log's tail when it fails."""
    cmd = [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())", *flags]
    env = {**os.environ, "CLF_DATA_DIR": os.environ.get("CLF_DATA_DIR", str(common.SMS_DIR))}
    t0 = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(
            cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=common.REPO_ROOT, env=env
        ).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{module} {' '.join(flags)} exited with {rc}; log tail:\n{tail}")
    return wall


def run_ours(work: Path, init: Path, args: argparse.Namespace, frozen_dtype: str) -> dict[str, Any]:
    """``clf-train`` in a fresh process; wall time, epoch times and accuracy."""
    out = work / f"ours_{frozen_dtype}"
    flags = [
        "--data",
        str(work / "train.jsonl"),
        "--val-data",
        str(work / "val.jsonl"),
        "--test-data",
        str(work / "test.jsonl"),
        "--weights",
        str(init),
        "--trainable",
        "last-block",
        "--batch-size",
        "8",
        "--lr",
        "5e-5",
        "--weight-decay",
        "0.1",
        "--epochs",
        str(args.epochs),
        "--seed",
        str(args.seed),
        "--device",
        "cpu",
        "--frozen-dtype",
        frozen_dtype,
        "--no-progress",
        "--out",
        str(out),
        "--overwrite",
    ]
    if args.threads is not None:
        flags += ["--threads", str(args.threads)]
    print(f"ours ({frozen_dtype}): clf-train {' '.join(flags)}")
    wall = run_cli("clf_train.cli", flags, work / f"ours_{frozen_dtype}.log")
    history = common.load_json(out / "history.json")
    metrics = common.load_json(out / "metrics.json")
    epochs = history.get("epochs", [])
    # The trainer may store a split in another order; the same multiset of rows is what counts.
    same_split = all(
        sorted((out / "split" / f"{name}.jsonl").read_text("utf-8").splitlines())
        == sorted((work / f"{name}.jsonl").read_text("utf-8").splitlines())
        for name in ("train", "val", "test")
    )
    return {
        "command": "clf-train " + " ".join(flags),
        "frozen_dtype": frozen_dtype,
        "wall_seconds": round(wall, 2),
        "epoch_seconds": [round(e["seconds"], 2) for e in epochs],
        "sum_epoch_seconds": round(sum(e["seconds"] for e in epochs), 2),
        "optimizer_steps": history.get("optimizer_steps"),
        "best_epoch": history.get("best_epoch"),
        "frozen_part": history.get("frozen_part"),
        "val_accuracy": metrics.get("val", {}).get("accuracy"),
        "test_accuracy": metrics.get("test", {}).get("accuracy"),
        "split_same_rows_as_input": same_split,
    }


# ----------------------------------------------------------------------------- reference


def run_reference(work: Path, init: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The book's chapter-6 finetuning, with its published functions, timed."""
    import torch
    from llms_from_scratch.ch04 import GPTModel
    from llms_from_scratch.ch06 import SpamDataset, calc_accuracy_loader, train_classifier_simple
    from torch.utils.data import DataLoader

    from clf_runtime.tokenizer import get_encoding

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    # The book uses tiktoken.get_encoding("gpt2"), which downloads its files; the package's
    # offline copy has the same ranks.
    tokenizer = get_encoding()
    train_ds = SpamDataset(csv_file=work / "train.csv", max_length=None, tokenizer=tokenizer)
    val_ds = SpamDataset(
        csv_file=work / "validation.csv", max_length=train_ds.max_length, tokenizer=tokenizer
    )
    test_ds = SpamDataset(
        csv_file=work / "test.csv", max_length=train_ds.max_length, tokenizer=tokenizer
    )
    torch.manual_seed(123)
    train_loader = DataLoader(train_ds, batch_size=8, shuffle=True, num_workers=0, drop_last=True)
    val_loader = DataLoader(val_ds, batch_size=8, num_workers=0, drop_last=False)
    test_loader = DataLoader(test_ds, batch_size=8, num_workers=0, drop_last=False)

    model = GPTModel(ch04_config(args.preset))
    model.out_head = torch.nn.Linear(model.out_head.in_features, len(LABEL_IDS))
    model.load_state_dict(torch.load(init, weights_only=True))
    model.eval()
    for p in model.parameters():
        p.requires_grad = False
    for module in (model.trf_blocks[-1], model.final_norm, model.out_head):
        for p in module.parameters():
            p.requires_grad = True
    device = torch.device("cpu")

    torch.manual_seed(123)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1)
    step_times: list[float] = []
    optimizer.register_step_post_hook(lambda *_: step_times.append(time.perf_counter()))
    t0 = time.perf_counter()
    train_classifier_simple(
        model,
        train_loader,
        val_loader,
        optimizer,
        device,
        num_epochs=args.ref_epochs,
        eval_freq=50,
        eval_iter=5,
    )
    train_seconds = time.perf_counter() - t0
    test_acc = calc_accuracy_loader(test_loader, model, device)
    total = time.perf_counter() - t_start
    gaps = [b - a for a, b in zip([t0, *step_times[:-1]], step_times, strict=True)]
    return {
        "code": "llms_from_scratch.ch06 (SpamDataset, train_classifier_simple, "
        "calc_accuracy_loader), ch04.GPTModel",
        "padded_length": train_ds.max_length,
        "train_seconds": round(train_seconds, 2),
        "seconds_per_epoch": round(train_seconds / args.ref_epochs, 2),
        "optimizer_steps": len(step_times),
        "median_step_seconds": round(sorted(gaps)[len(gaps) // 2], 4) if gaps else None,
        "total_wall_seconds_incl_data_and_test_eval": round(total, 2),
        "test_accuracy": test_acc,
        "torch_threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------- LoRA

# (row name, --trainable, LoRA flags as TrainConfig fields): timed in process, same split.
LORA_STRATEGIES: tuple[tuple[str, str, dict[str, Any] | None], ...] = (
    ("last-block", "last-block", None),
    ("lora (all blocks)", "lora", {}),
    ("lora --lora-blocks last-2", "lora", {"lora_blocks": "last-2"}),
)


def read_split(work: Path) -> dict[str, tuple[list[str], list[str]]]:
    """The split files that :func:`make_split` wrote: {name: (texts, labels)}."""
    out = {}
    for name in ("train", "val", "test"):
        rows = [
            json.loads(line) for line in (work / f"{name}.jsonl").read_text("utf-8").splitlines()
        ]
        out[name] = ([r["text"] for r in rows], [r["label"] for r in rows])
    return out


def run_lora_steps(work: Path, init: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Step time and extrapolated 5-epoch time of each of :data:`LORA_STRATEGIES`, their
    steps interleaved (one step of each in turn) so that machine drift hits them alike."""
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    splits = read_split(work)
    strategies = []
    for name, trainable, lora in LORA_STRATEGIES:
        print(f"step timing: setting up {name} ...")
        strategies.append(
            training_steps.prepare(
                name, init, splits, trainable=trainable, lora=lora, seed=args.seed
            )
        )
    warmup = 2
    print(f"step timing: {warmup} warm-up + {args.lora_steps} timed steps each, interleaved ...")
    for i in range(warmup + args.lora_steps):
        for s in strategies:
            training_steps.step(s, timed=i >= warmup)
    return [
        {
            "run": s.name,
            **training_steps.finish(s, merge_check=lora_all(s)),
            "torch_threads": torch.get_num_threads(),
        }
        for s in strategies
    ]


def lora_all(s: training_steps.Strategy) -> bool:
    """Whether ``s`` is LoRA on every block (the row whose merge is checked)."""
    return s.info["lora"] is not None and s.info["lora"]["blocks"] == "all"


def run_sms_demo(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``clf-train --preset sms-demo`` with ``--trainable lora`` and ``all`` (from scratch), and
    ``clf-export --quantize`` of the LoRA run."""
    results: dict[str, Any] = {}
    for trainable in ("lora", "all"):
        out = work / f"sms_demo_{trainable}"
        flags = ["--preset", "sms-demo", "--trainable", trainable, "--seed", str(args.seed),
                 "--device", "cpu", "--no-progress", "--out", str(out), "--overwrite"]  # fmt: skip
        if args.threads is not None:
            flags += ["--threads", str(args.threads)]
        if args.sms_demo_epochs is not None:
            flags += ["--epochs", str(args.sms_demo_epochs)]
        print(f"sms-demo: clf-train {' '.join(flags)}")
        wall = run_cli("clf_train.cli", flags, work / f"sms_demo_{trainable}.log")
        metrics = common.load_json(out / "metrics.json")
        cfg = common.load_json(out / "config.json")["train"]
        history = common.load_json(out / "history.json")
        results[trainable] = {
            "command": "clf-train " + " ".join(flags),
            "wall_seconds": round(wall, 2),
            "sum_epoch_seconds": round(sum(e["seconds"] for e in history["epochs"]), 2),
            "trainable_parameters": cfg["trainable_parameters"],
            "total_parameters": cfg["total_parameters"],
            "lora": cfg.get("lora"),
            "lr": cfg["lr"],
            "best_epoch": history["best_epoch"],
            "test_accuracy": metrics["test"]["accuracy"],
            "test_n": metrics["test"]["n"],
            "data_source": common.load_json(out / "data_report.json").get("source"),
        }
    export = work / "sms_demo_lora_export"
    flags = [str(work / "sms_demo_lora"), "--out", str(export), "--quantize", "--overwrite"]
    print(f"sms-demo: clf-export {' '.join(flags)}")
    wall = run_cli("clf_export.cli", flags, work / "sms_demo_lora_export.log")
    report = common.load_json(export / "report.json")
    results["lora_export"] = {
        "command": "clf-export " + " ".join(flags),
        "wall_seconds": round(wall, 2),
        "merge": {k: report["lora"][k] for k in ("max_abs_logit_diff", "tolerance")},
        "evaluation": report["evaluation"],
    }
    return results


def measure_lora(args: argparse.Namespace, work: Path, init: Path) -> dict[str, Any]:
    """The LoRA rows (see the module docstring), printed; the payload part."""
    out: dict[str, Any] = {}
    if args.lora_steps > 0:
        out["step_timing"] = run_lora_steps(work, init, args)
        common.print_table(
            [{**r, "5_epochs_s": r["five_epoch_seconds"]} for r in out["step_timing"]],
            ["run", "trainable_parameters", "median_step_seconds", "mean_step_seconds",
             "setup_seconds", "5_epochs_s"],
            title=f"step time ({args.preset}), {args.lora_steps} steps after 2 warm-up, "
            "interleaved; 5 epochs extrapolated",
        )  # fmt: skip
    if not args.skip_sms_demo:
        out["sms_demo"] = demo = run_sms_demo(work, args)
        common.print_table(
            [{"run": f"sms-demo --trainable {k}", **demo[k]} for k in ("lora", "all")],
            ["run", "trainable_parameters", "wall_seconds", "test_accuracy"],
            title="from scratch: clf-train --preset sms-demo (gpt2-mini, random init)",
        )
        ev, merge = demo["lora_export"]["evaluation"], demo["lora_export"]["merge"]
        print(
            f"LoRA export: merge max |logit diff| {merge['max_abs_logit_diff']:.2e}"
            f"; int8 vs fp32 argmax agreement {ev['int8_vs_fp32']['argmax_agreement']:.4f} "
            f"on {ev['n']} test texts"
        )
    return out


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = common.arg_parser(
        __doc__,
        "training[_smoke]",
        preset_help="architecture of the shared random init (gpt2 = GPT-2 small)",
        work_dir_help="keep runs here (default: temp)",
        seed_default=123,
        seed_help="split seed and our training seed",
    )
    ap.add_argument("--epochs", type=int, default=5, help="epochs of our trainer")
    ap.add_argument(
        "--ref-epochs", type=int, default=None, help="epochs of the reference (default: --epochs)"
    )
    ap.add_argument("--limit", type=int, help="smoke test: N train texts, N/4 (>= 8) val/test")
    ap.add_argument("--skip-reference", action="store_true", help="only run our trainer")
    ap.add_argument("--no-bf16", action="store_true", help="skip the --frozen-dtype bf16 run")
    ap.add_argument("--init-seed", type=int, default=123, help="seed of the shared random init")
    ap.add_argument("--threads", type=int, help="torch threads of both sides (default: torch's)")
    ap.add_argument(
        "--lora-steps", type=int, default=20, help="timed steps per LoRA-row strategy (0: none)"
    )
    ap.add_argument("--skip-sms-demo", action="store_true", help="no sms-demo lora vs all runs")
    ap.add_argument(
        "--sms-demo-epochs", type=int, help="epochs of the sms-demo runs (default: the preset's)"
    )
    ap.add_argument("--lora-only", action="store_true", help="only the LoRA rows")
    args = ap.parse_args(argv)
    if args.ref_epochs is None:
        args.ref_epochs = args.epochs
    return args


def measure(args: argparse.Namespace, work: Path) -> tuple[str, dict[str, Any]]:
    """Ours (fp32, bf16) and the reference on one split; (default result name, payload)."""
    smoke = args.limit is not None or args.epochs < 5 or args.preset != "gpt2"
    sizes = make_split(work, args.limit, args.seed)
    init = work / "init.pth"
    make_init_weights(init, args.preset, args.init_seed)
    print(f"split sizes {sizes}; init weights {init}")
    settings = dict(
        preset=args.preset, limit=args.limit, threads=args.threads, init_seed=args.init_seed,
        seed=args.seed, batch_size=8, lr=5e-5, weight_decay=0.1,
    )  # fmt: skip
    if args.lora_only:
        payload = {
            "benchmark": "training_lora",
            "smoke": smoke,
            "environment": common.environment(**settings, lora_steps=args.lora_steps),
            "split_sizes": sizes,
            "lora": measure_lora(args, work, init),
        }
        return ("training_lora_smoke" if smoke else "training_lora"), payload
    results: dict[str, Any] = {"ours_fp32": run_ours(work, init, args, "fp32")}
    if not args.no_bf16:
        try:
            results["ours_bf16"] = run_ours(work, init, args, "bf16")
        except RuntimeError as e:  # bf16 may be unsupported on this CPU/torch build
            results["ours_bf16"] = {"error": str(e)[-2000:]}
    if not args.skip_reference:
        print(f"reference: chapter-6 recipe, {args.ref_epochs} epochs ...")
        results["reference"] = run_reference(work, init, args)

    ref = results.get("reference", {})
    ratios = {}
    for key in ("ours_fp32", "ours_bf16"):
        ours = results.get(key, {})
        if "wall_seconds" in ours and ref:
            # Per epoch, so that --epochs and --ref-epochs may differ in smoke runs.
            ratios[f"reference train s/epoch / {key} wall s/epoch"] = common.ratio(
                ref["seconds_per_epoch"], ours["wall_seconds"] / args.epochs
            )
            ratios[f"reference train s/epoch / {key} epoch s"] = common.ratio(
                ref["seconds_per_epoch"], ours["sum_epoch_seconds"] / args.epochs
            )
    rows = []
    for key, r in results.items():
        if "error" in r:
            rows.append({"run": key, "test_accuracy": "failed"})
            continue
        if key == "reference":
            rows.append(
                {
                    "run": key,
                    "epochs": args.ref_epochs,
                    "s_per_epoch": r["seconds_per_epoch"],
                    "total_s": r["train_seconds"],
                    "test_accuracy": r["test_accuracy"],
                }
            )
        else:
            rows.append(
                {
                    "run": key,
                    "epochs": args.epochs,
                    "s_per_epoch": round(r["sum_epoch_seconds"] / args.epochs, 2),
                    "total_s": r["wall_seconds"],
                    "test_accuracy": r["test_accuracy"],
                }
            )
    common.print_table(
        rows,
        ["run", "epochs", "s_per_epoch", "total_s", "test_accuracy"],
        title="training (ours total_s = whole clf-train process; reference "
        "total_s = train_classifier_simple)",
    )
    common.print_values(ratios, "ratio", title="speedup (within this run)")
    lora = measure_lora(args, work, init)
    payload = {
        "benchmark": "training",
        "smoke": smoke,
        "environment": common.environment(
            preset=args.preset,
            epochs=args.epochs,
            ref_epochs=args.ref_epochs,
            limit=args.limit,
            threads=args.threads,
            init_seed=args.init_seed,
            seed=args.seed,
            batch_size=8,
            lr=5e-5,
            weight_decay=0.1,
            trainable="last block + final norm + head",
        ),
        "split_sizes": sizes,
        "results": results,
        "speedup": ratios,
        "lora": lora,
    }
    return ("training_smoke" if smoke else "training"), payload


def main(argv: Sequence[str] | None = None) -> int:
    return common.run_program(parse_args(argv), measure, prefix="bench_training_")


if __name__ == "__main__":
    sys.exit(main())
