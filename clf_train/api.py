"""``train(config) -> TrainResult``: the Python API behind ``clf-train``.

Order of work, chosen so that a refusal never leaves a directory behind:

1. validate the config (all problems at once), check ``--out`` and the device;
2. load and split the data, build the model (pretrained or seeded random init);
3. only then create the run directory: ``split/*.jsonl``, ``data_report.json`` and
   ``checkpoint/setup.json`` (enough to restart from scratch if killed before any step);
4. train (see :mod:`clf_train.trainer`), checkpointing as it goes;
5. reload the best weights, compute metrics on every split, write ``model.safetensors``
   (with ``--trainable lora``: the base weights, and the adapters in ``adapter.safetensors``),
   ``metrics.json``, ``history.json``, the plots and ``config.json``; then delete
   ``checkpoint/``. A kill during step 5 is fine: ``--resume`` redoes it.

Under ``torchrun`` (or ``clf-train --devices N``) every process calls :func:`train`; it joins
the job from the environment (:mod:`clf_train.distributed`). Rank 0 alone does step 3 and
writes every file; the other ranks wait for it, then read the split files and ``setup.json``
it wrote (so ``--out`` must be visible to every rank: a shared filesystem across machines).
Each rank caches and trains on its own texts; evaluation is sharded and summed.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from clf_runtime.atomic import atomic_write_json
from clf_runtime.contract import (
    ACCURACY_PNG,
    CHECKPOINT_DIR,
    DATA_REPORT_FILE,
    HISTORY_FILE,
    LOSS_PNG,
    METRICS_FILE,
    RUN_ADAPTER_FILE,
    RUN_CONFIG_FILE,
    RUN_WEIGHTS_FILE,
    SPLIT_DIR,
    SPLITS,
)
from clf_runtime.paths import OutputPathError, check_output_path
from clf_runtime.tokenizer import encode_batch

from .checkpoint import has_setup, load_checkpoint, read_setup, remove_checkpoint, write_setup
from .config import LORA, TrainConfig, parse_trainable
from .distributed import World, check_world_size, init_world
from .errors import ConfigError, TrainError, TrainingError
from .frozen_cache import CACHE_BUDGET_BYTES, TopSpec, apply_trainable, build_store
from .lengths import token_length_report
from .lora import LoraSettings, adapters_from_appendix_e, add_adapters, make_trainable, save_adapter
from .metrics import metrics_from_confusion
from .model import PRESETS, GPTClassifier, GPTConfig, init_weights
from .plots import plot_history
from .run_dir import RunConfig, read_split, save_weights, write_split
from .trainer import evaluate, fit, label_targets, load_trainable

__all__ = ["TrainResult", "TrainingError", "train"]

logger = logging.getLogger(__name__)

# Everything a run writes into --out: what --overwrite replaces (and nothing else).
RUN_ENTRIES = (
    RUN_CONFIG_FILE,
    RUN_WEIGHTS_FILE,
    RUN_ADAPTER_FILE,
    METRICS_FILE,
    HISTORY_FILE,
    LOSS_PNG,
    ACCURACY_PNG,
    DATA_REPORT_FILE,
    SPLIT_DIR,
    CHECKPOINT_DIR,
)


@dataclass
class TrainResult:
    """What a finished run produced (everything is also on disk in ``run_dir``)."""

    run_dir: Path
    metrics: dict[str, Any]
    """``metrics.json``: per split n, accuracy, loss, per_class, macro_f1, confusion_matrix."""
    history: list[dict[str, Any]]
    labels: list[str]
    config: TrainConfig
    """The resolved config actually used (lr and epochs filled in)."""
    best_epoch: int | None
    warnings: list[str]


@dataclass
class _Prepared:
    """A run ready to train: what :func:`_prepare_new` and :func:`_prepare_resume` produce."""

    run_dir: Path
    config: TrainConfig
    """Resolved (lr and epochs set): the saved config, for a resumed run."""
    setup: dict[str, Any]
    """The content of ``checkpoint/setup.json``."""
    texts: dict[str, tuple[list[str], list[str]]]
    """Per split: (texts, label names)."""
    model: GPTClassifier
    device: torch.device


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was requested but torch sees no CUDA device (CPU-only torch build, "
            "or no GPU visible); use --device cpu or --device auto"
        )
    return torch.device(name)


def _check_out_dir(out: Path, *, overwrite: bool) -> None:
    # The shared check of every CLI's output path (a file in the way, a parent that is a file,
    # no write permission); a non-empty directory is this command's own case (--resume).
    try:
        check_output_path(out, flag="--out", kind="dir")
    except OutputPathError as e:
        raise ConfigError(str(e)) from e
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            f"--out {out} already exists and is not empty; pass --overwrite to replace its run "
            f"files, --resume {out} to continue an interrupted run, or choose a new directory"
        )


def _clear_run_files(out: Path) -> None:
    # Only the files a run writes: --overwrite never deletes anything else the user keeps there.
    for name in RUN_ENTRIES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _build_model(cfg: TrainConfig, num_labels: int) -> tuple[GPTClassifier, str]:
    """(model, init source) per ``--init``; deterministic, so a resume rebuilds the same one.

    With ``--trainable lora`` the model carries its adapters: seeded, or the appendix-E
    adapters of a ``--weights`` file.
    """
    if cfg.init == "random":
        mcfg = replace(PRESETS[cfg.model], dropout=cfg.dropout)
        model = GPTClassifier(mcfg, num_labels, pooling=cfg.pooling)
        init_weights(model, seed=cfg.seed, n_layer=mcfg.n_layer)
        if cfg.trainable == LORA:
            add_adapters(model, LoraSettings.from_config(cfg), seed=cfg.seed)
        return model, f"random:{cfg.model}:seed={cfg.seed}"
    from .pretrained import build_classifier, load_pretrained

    # With --weights the file's shape wins over --model (whose default is gpt2).
    pre = load_pretrained(model=None if cfg.weights else cfg.model, weights=cfg.weights)
    pre = replace(pre, config=replace(pre.config, dropout=cfg.dropout))
    model = build_classifier(pre, num_labels, pooling=cfg.pooling, seed=cfg.seed)
    initial = None
    if pre.lora is not None:
        initial, rank = adapters_from_appendix_e(pre.lora)
        if cfg.trainable != LORA or cfg.lora_rank != rank:
            raise ConfigError(
                f"--weights {cfg.weights} holds rank-{rank} LoRA adapters (appendix E); continue "
                f"from them with --trainable lora --lora-rank {rank} and --lora-alpha = the "
                f"appendix's alpha x {rank} (the file does not record alpha; its rank {rank}, "
                f"alpha 16 is --lora-alpha {16 * rank})"
            )
    if cfg.trainable == LORA:
        add_adapters(model, LoraSettings.from_config(cfg), seed=cfg.seed, initial=initial)
    return model, pre.source


def _max_length(cfg: TrainConfig, model_cfg: GPTConfig) -> int:
    if cfg.max_length is None:
        return min(256, model_cfg.context_length)
    if cfg.max_length > model_cfg.context_length:
        raise ConfigError(
            f"--max-length {cfg.max_length} exceeds the model's context length "
            f"{model_cfg.context_length}; pass at most {model_cfg.context_length}"
        )
    return cfg.max_length


def _check_trainable(cfg: TrainConfig, model: GPTClassifier) -> int | None:
    if cfg.trainable == LORA:
        return None  # checked when the adapters were added (_build_model)
    n_top = parse_trainable(cfg.trainable)
    n_layer = model.cfg.n_layer
    if n_top is not None and n_top > n_layer:
        raise ConfigError(f"--trainable {cfg.trainable}: the model has only {n_layer} blocks")
    return n_top


def train(
    config: TrainConfig,
    *,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    cache_budget_bytes: int = CACHE_BUDGET_BYTES,
) -> TrainResult:
    """Train a classifier per ``config`` into ``config.out`` (or continue ``config.resume``).

    ``on_start`` is called once the model is built, before the frozen part is cached, with
    :func:`describe_trainable`'s record (trainable and total parameter counts, strategy, frozen
    part); ``on_epoch`` with each epoch's history record. Every failure is a
    :class:`~clf_train.errors.TrainError`: :class:`ConfigError` (the config or the device),
    ``DataError``, ``PretrainedError``, :class:`TrainingError`, ``CheckpointError`` or
    ``RunDirError``; all refusals before training starts leave no run directory behind.

    In a multi-process job (``WORLD_SIZE > 1`` in the environment) every rank calls this and
    gets the same result; a collective that fails or times out raises
    :class:`~clf_train.errors.DistributedError`.
    """
    config.validate()
    world = init_world(_device(_requested_device(config)), timeout_s=config.dist_timeout)
    prepared = _prepare(config, world)
    result = _run(
        prepared,
        world,
        on_epoch=on_epoch,
        on_start=on_start if world.is_main else None,
        cache_budget_bytes=cache_budget_bytes,
    )
    # Only on success: after a failure the process is about to exit, and tearing down a group
    # whose peers are gone can block (NCCL).
    world.close()
    return result


def _requested_device(config: TrainConfig) -> str:
    """The --device this process will use; a resumed run keeps its saved one unless given."""
    if config.resume is None or config.device != "auto" or not has_setup(Path(config.resume)):
        return config.device  # (a resume without setup.json fails with its reason later)
    saved = TrainConfig.from_dict(read_setup(Path(config.resume))["config"])
    return saved.device


def _prepare(config: TrainConfig, world: World) -> _Prepared:
    """Steps 1-3 on this rank: a new run, a resumed one, or (rank > 0) joining rank 0's."""
    if config.resume is not None:
        return _prepare_resume(config, world)
    if world.size == 1:
        return _prepare_new(config, world)
    if world.is_main:
        try:
            prepared = _prepare_new(config, world)
        except Exception as e:
            # Tell the waiting ranks at once instead of letting them run into the timeout.
            with contextlib.suppress(TrainError):
                world.share_outcome(str(e) or type(e).__name__, "to set up the run")
            raise
        world.share_outcome(None, "to set up the run")
        return prepared
    world.share_outcome(None, "to set up the run")
    return _join_new_run(config, world)


def _prepare_new(config: TrainConfig, world: World) -> _Prepared:
    """Steps 1-3 of a new run: load and split the data, build the model, create the run dir."""
    cfg = config.resolved()
    out = Path(cfg.out or "")
    _check_out_dir(out, overwrite=cfg.overwrite)
    device = world.device
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)

    from .splits import prepare_data

    data = prepare_data(
        cfg.data or "",
        text_col=cfg.text_col,
        label_col=cfg.label_col,
        val_data=cfg.val_data,
        test_data=cfg.test_data,
        balance=cfg.balance,
        seed=cfg.seed,
    )
    model, source = _build_model(cfg, len(data.label_names))
    _check_trainable(cfg, model)
    max_length = _max_length(cfg, model.cfg)
    splits = {name: getattr(data, name) for name in SPLITS}
    tokens, token_warnings = token_length_report(
        {name: part.texts for name, part in splits.items()},
        max_length=max_length,
        context_length=model.cfg.context_length,
    )
    data_report = {**data.report, "tokens": tokens}
    data_warnings = [*data.warnings, *token_warnings]
    warnings = [*data_warnings, *cfg.advice()]
    for w in warnings:
        logger.warning("%s", w)

    # Everything that can refuse has run: now the run directory may exist.
    if out.is_dir():
        _clear_run_files(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in splits.items():
        write_split(out, name, part.texts, part.labels)
    atomic_write_json(out / DATA_REPORT_FILE, {**data_report, "warnings": data_warnings})
    setup = {
        "config": cfg.to_dict(),
        "labels": list(data.label_names),
        "max_length": max_length,
        "init_source": source,
        "model_config": model.cfg.to_dict(),
        "data_report": data_report,
        "warnings": warnings,
        # Resuming needs the same number of processes (clf_train.distributed.check_world_size).
        "world_size": world.size,
    }
    write_setup(out, setup)
    texts = {name: (part.texts, part.labels) for name, part in splits.items()}
    return _Prepared(out, cfg, setup, texts, model, device)


def _prepare_resume(config: TrainConfig, world: World) -> _Prepared:
    """An interrupted run, rebuilt from its ``setup.json`` and split files."""
    run_dir = Path(config.resume or "")
    if not run_dir.is_dir():
        raise ConfigError(f"--resume {run_dir}: no such directory")
    setup = read_setup(run_dir)
    check_world_size(int(setup.get("world_size", 1)), world.size, str(run_dir))
    logger.info("resuming the run in %s", run_dir)
    return _from_run_dir(run_dir, setup, config, world)


def _join_new_run(config: TrainConfig, world: World) -> _Prepared:
    """Rank > 0 of a new run: what rank 0 prepared, read back from the run directory."""
    run_dir = Path(config.out or "")
    if not has_setup(run_dir):
        raise ConfigError(
            f"{world.where} cannot see {run_dir}/{CHECKPOINT_DIR}/setup.json, which rank 0 has "
            f"just written: --out must be a directory every rank can read (on several "
            "machines, a shared filesystem), and the same path on each of them"
        )
    return _from_run_dir(run_dir, read_setup(run_dir), config, world)


def _from_run_dir(
    run_dir: Path, setup: dict[str, Any], config: TrainConfig, world: World
) -> _Prepared:
    """The run described by ``setup.json`` and the split files of ``run_dir``."""
    saved = TrainConfig.from_dict(setup["config"])
    # Only how the run executes may change on resume; what it computes comes from setup.json.
    cfg = replace(
        saved,
        device=config.device if config.device != "auto" else saved.device,
        threads=config.threads if config.threads is not None else saved.threads,
        progress=config.progress,
        dist_timeout=config.dist_timeout,
    )
    device = world.device
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    model, source = _build_model(cfg, len(setup["labels"]))
    if model.cfg.to_dict() != setup["model_config"] or source != setup["init_source"]:
        raise TrainingError(
            f"the model rebuilt for {run_dir} ({source}) differs from the one the run started "
            f"with ({setup['init_source']}); the pretrained weights changed since, so the run "
            "cannot be resumed exactly. Start a new run."
        )
    texts = {name: read_split(run_dir, name) for name in SPLITS}
    return _Prepared(run_dir, cfg, setup, texts, model, device)


def describe_trainable(model: GPTClassifier, spec: TopSpec, cfg: TrainConfig) -> dict[str, Any]:
    """What trains: the strategy, trainable / total parameter counts, the LoRA settings (or
    None) and where the frozen part ends. Stored in config.json and passed to ``on_start``."""
    return {
        "trainable": cfg.trainable,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "lora": LoraSettings.from_config(cfg).to_dict() if cfg.trainable == LORA else None,
        "frozen_part": {"mode": spec.mode, "start_block": spec.start},
    }


def _run(
    prepared: _Prepared,
    world: World,
    *,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    cache_budget_bytes: int,
) -> TrainResult:
    """Cache the frozen part, train, then write the final run files (steps 4-5 above)."""
    t0 = time.perf_counter()
    run_dir, cfg, model, device = prepared.run_dir, prepared.config, prepared.model, prepared.device
    setup, texts = prepared.setup, prepared.texts
    labels: list[str] = setup["labels"]
    max_length: int = setup["max_length"]
    if cfg.trainable == LORA:
        spec = make_trainable(model)
    else:
        spec = apply_trainable(model, parse_trainable(cfg.trainable))
    trainable = describe_trainable(model, spec, cfg)
    logger.info("trainable parameters: %s", trainable)
    if on_start is not None:
        on_start(trainable)
    model.to(device)
    ids = {name: encode_batch(t, max_length=max_length) for name, (t, _) in texts.items()}
    targets = {name: label_targets(y, labels, device) for name, (_, y) in texts.items()}
    frozen_dtype = torch.bfloat16 if cfg.frozen_dtype == "bf16" else torch.float32
    # Each rank caches and evaluates the texts it owns (all of them for one process).
    held = {name: world.held([len(x) for x in split_ids]) for name, split_ids in ids.items()}
    stores = build_store(
        model,
        spec,
        ids,
        device=device,
        frozen_dtype=frozen_dtype,
        budget_bytes=cache_budget_bytes,
        held=held,
    )
    logger.info("caches ready in %.1fs", time.perf_counter() - t0)

    resume_from = load_checkpoint(run_dir, device=device)
    # Every rank has read the checkpoint before rank 0 may replace it with a newer generation.
    world.barrier("loading the checkpoint")
    state, best = fit(
        model,
        spec,
        stores,
        targets,
        cfg,
        run_dir=run_dir,
        resume_from=resume_from,
        on_epoch=on_epoch if world.is_main else None,
        world=world,
    )
    if best is not None:
        load_trainable(model, best, what="best weights")

    metrics = {}
    for name in SPLITS:
        ev = evaluate(model, spec, stores[name], targets[name], world=world)
        metrics[name] = metrics_from_confusion(ev.matrix, labels, loss=ev.loss)
    run_config = RunConfig(
        model=model.cfg,
        labels=labels,
        pooling=model.pooling,
        max_length=max_length,
        train={
            **cfg.to_dict(),
            "init_source": setup["init_source"],
            "trainable_parameters": trainable["trainable_parameters"],
            "total_parameters": trainable["total_parameters"],
            **({"lora": trainable["lora"]} if trainable["lora"] is not None else {}),
            "data_report": setup["data_report"],
            "world_size": world.size,
        },
    )
    history = {
        "epochs": state.history,
        "best_epoch": state.best_epoch,
        "best_val_loss": state.best_val_loss,
        "stop_reason": state.stop_reason,
        "optimizer_steps": state.global_step,
        "seconds": sum(h["seconds"] for h in state.history),
        # This process only (a resumed run counts from its resume); includes caching and eval.
        "wall_seconds": time.perf_counter() - t0,
        "device": str(device),
        "world_size": world.size,
        "backend": world.backend,
        "frozen_part": {
            "mode": spec.mode,
            "start_block": spec.start,
            "cached": all(s.cached for s in stores.values()),
        },
    }
    model.eval()
    # The evaluation's all-reduces above are the barrier: every rank is done with the run.
    if world.is_main:
        save_weights(run_dir / RUN_WEIGHTS_FILE, model, run_config=run_config)  # LoRA: the base
        if cfg.trainable == LORA:
            save_adapter(
                run_dir / RUN_ADAPTER_FILE,
                model,
                LoraSettings.from_config(cfg),
                base_file=run_dir / RUN_WEIGHTS_FILE,
                run_config=run_config.to_dict(),
            )
        atomic_write_json(run_dir / METRICS_FILE, metrics)
        atomic_write_json(run_dir / HISTORY_FILE, history)
        plot_history(run_dir, state.history, best_epoch=state.best_epoch)
        run_config.write(run_dir)  # last: config.json + model.safetensors mark a finished run
        remove_checkpoint(run_dir)
    # No rank reports success before the run directory is complete.
    world.barrier("writing the final run files")
    return TrainResult(
        run_dir=run_dir,
        metrics=metrics,
        history=state.history,
        labels=labels,
        config=cfg,
        best_epoch=state.best_epoch,
        warnings=list(setup.get("warnings", [])),
    )
