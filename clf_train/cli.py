"""``clf-train``: finetune GPT-2 (or train a small GPT from scratch) into a text classifier.

Thin by design: parse flags into :class:`~clf_train.config.TrainConfig`, call
:func:`clf_train.api.train`, print progress and a summary, map failures to exit codes
(0 ok, 1 data/model/training failure, 2 invalid configuration, 3 stopped because another rank
of a multi-process run failed, 130 interrupted).

``--devices N`` (N > 1) makes this process a launcher (:mod:`clf_train.launch`): it starts N
copies of itself as the ranks of one job and watches them. Under ``torchrun`` each process is
one rank already; only rank 0 prints progress and the summary.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import signal
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clf_runtime.contract import POOLINGS

# Torch-free (a test proves it): the parser needs no torch, so a runtime-only install can
# still print --help and the hint below.
from .config import (
    DEVICES,
    DIST_TIMEOUT_S,
    FROZEN_DTYPES,
    INITS,
    LORA_DEFAULTS,
    LORA_TARGETS,
    PRESET_ARGS,
    PRETRAINED_EPOCHS,
    PRETRAINED_LR,
    PRETRAINED_TRAINABLE,
    RANDOM_LR,
    RANDOM_TRAINABLE,
    ConfigError,
    TrainConfig,
    one_of,
)
from .launch import EXIT_PEER_FAILED, DistEnv, LaunchConfig, dist_env, launch, resume_command
from .presets import MODELS, PRETRAINED_NAMES, RANDOM_ONLY_MODELS

__all__ = ["build_parser", "main"]

# What the epilog says about each --preset; the flags it stands for come from PRESET_ARGS.
_PRESET_HELP = {
    "sms-demo": "Offline demo: trains a small GPT from scratch on the balanced SMS Spam "
    "Collection. Measured (README): test accuracy 0.9533 (n=300) with the full UCI file "
    "($CLF_DATA_DIR, the cache or the download), 0.9264 (n=258) with the offline 4,862-message "
    "copy; 45-48 s on 2 quiet CPU cores.",
}

# The flags that may be given again with --resume, by argparse dest: they change how, not
# what, is computed. --out is accepted when it names the same directory as --resume;
# --devices must match the run's number of processes (checked when the run is read).
RESUME_OK = ("device", "threads", "progress", "out", "devices", "dist_timeout")
# Flags of the launcher, not of the run: not TrainConfig fields.
LAUNCH_ONLY = ("devices",)

_DEFAULTS = TrainConfig()


def _sci(x: float) -> str:
    return f"{x:.0e}".replace("e-0", "e-")  # 5e-05 -> 5e-5


# The --help line of every flag; the defaults quoted are read from the code that applies them.
_HELP = {
    "--preset": "a named bundle of flags (see below)",
    "--data": 'CSV/TSV/JSONL file with text and label columns, or "sms-spam"',
    "--text-col": "name of the text column (default: detected)",
    "--label-col": "name of the label column (default: detected)",
    "--val-data": "separate validation file (default: 10 %% of --data)",
    "--test-data": "separate test file (default: 20 %% of --data)",
    "--balance": "undersample every label to the rarest one's count",
    "--model": f"{', '.join(PRETRAINED_NAMES)} (default {_DEFAULTS.model}); small shapes for "
    f"--init random only: {', '.join(RANDOM_ONLY_MODELS)}",
    "--weights": "local pretrained weights (HF dir/safetensors or a torch state dict); their "
    "shape wins over --model",
    "--init": f"start from pretrained weights or a seeded random init (default {_DEFAULTS.init})",
    "--trainable": "head | last-block | last-N-blocks (e.g. last-2-blocks) | all | lora (default "
    f"{PRETRAINED_TRAINABLE}; {RANDOM_TRAINABLE} with --init random). Training blocks also trains "
    "the final norm; the head always learns (with lora: through its adapter, or in full when it "
    "has none)",
    "--lora-rank": f"rank r of every LoRA adapter (default {LORA_DEFAULTS['lora_rank']})",
    "--lora-alpha": "LoRA scale: the update is (alpha / rank) * B A, as in the LoRA paper and "
    f"peft (default {LORA_DEFAULTS['lora_alpha']:g}). The chapter-6 appendix E multiplies by "
    "alpha alone: its rank 16, alpha 16 is --lora-rank 16 --lora-alpha 256",
    "--lora-targets": f"comma-separated layers to adapt: {', '.join(LORA_TARGETS)} (q, k, v: "
    f"one adapter each on the fused projection), or all (default {LORA_DEFAULTS['lora_targets']})",
    "--lora-dropout": "dropout on the adapters' input while training "
    f"(default {LORA_DEFAULTS['lora_dropout']})",
    "--lora-blocks": "adapters in every block (all) or only the top N (last-N, e.g. last-2: the "
    f"frozen blocks below are cached) (default {LORA_DEFAULTS['lora_blocks']})",
    "--pooling": f"last real token or mean (default {_DEFAULTS.pooling})",
    "--max-length": "tokens kept per text, from its start (default: min(256, context length))",
    "--dropout": f"dropout in the trainable blocks (default {_DEFAULTS.dropout})",
    "--lr": f"AdamW learning rate (default {_sci(PRETRAINED_LR)}; {_sci(RANDOM_LR)} with --init "
    "random)",
    "--weight-decay": f"AdamW weight decay (default {_DEFAULTS.weight_decay})",
    "--epochs": f"epochs (default {PRETRAINED_EPOCHS})",
    "--batch-size": f"texts per batch, all processes together (default {_DEFAULTS.batch_size})",
    "--grad-accum": f"batches per optimizer step (default {_DEFAULTS.grad_accum})",
    "--seed": f"seed of split, init, batch order, dropout (default {_DEFAULTS.seed})",
    "--early-stopping": "stop after N epochs without a lower validation loss (default: off)",
    "--device": f"default {_DEFAULTS.device} (CUDA if any)",
    "--threads": "torch CPU threads (default: torch's choice)",
    "--frozen-dtype": "dtype for computing and caching the frozen blocks "
    f"(default {_DEFAULTS.frozen_dtype})",
    "--checkpoint-every": "optimizer steps between mid-epoch checkpoints "
    f"(default {_DEFAULTS.checkpoint_every}; 0: epoch ends only)",
    "--devices": "start N training processes on this machine (DDP: one per GPU with "
    "--device cuda, else CPU processes) and watch them (default 1; under torchrun leave it out)",
    "--dist-timeout": "seconds a multi-process run waits in any collective before it stops "
    f"with an error (default {DIST_TIMEOUT_S:g})",
    "--out": "run directory to create (required unless --resume)",
    "--overwrite": "replace the run files of an existing --out",
    "--resume": "continue the interrupted run in DIR",
    "--no-progress": "no progress bars",
}


def _flag(dest: str) -> str:
    """The command-line flag of an argparse dest."""
    return "--no-progress" if dest == "progress" else "--" + dest.replace("_", "-")


def _as_flags(values: dict[str, Any]) -> str:
    """A preset's values as the command-line flags they stand for."""
    return " ".join(_flag(k) if v is True else f"{_flag(k)} {v}" for k, v in values.items())


def _paragraph(text: str, first: str = "  ", rest: str = "  ") -> str:
    return textwrap.fill(text, width=92, initial_indent=first, subsequent_indent=rest)


def _epilog() -> str:
    presets = [
        _paragraph(
            f"= {_as_flags(values)}. {_PRESET_HELP.get(name, '')}",
            first=f"  --preset {name}".ljust(22),
            rest=" " * 22,
        )
        for name, values in PRESET_ARGS.items()
    ]
    resume = _paragraph(
        "Checkpoints go to OUT/checkpoint/ at every epoch end and every --checkpoint-every "
        "optimizer steps. `clf-train --resume OUT` continues a killed run (even SIGKILL) with "
        "the saved configuration and ends with the same metrics as an uninterrupted run; only "
        f"{one_of(tuple(map(_flag, RESUME_OK)))} (naming OUT again) may be given with it."
    )
    distributed = _paragraph(
        "`clf-train --devices N ...` or `torchrun --nproc-per-node N -m clf_train ...` trains "
        "with N processes (PyTorch DistributedDataParallel; NCCL on CUDA with one GPU per "
        "process, gloo on CPU). --batch-size is the global batch of all processes together, "
        "each process caches and trains on its own share of the texts, and the result equals "
        "a one-process run to float rounding (with dropout 0). Rank 0 writes every file, so "
        "the run directory must be visible to all processes. A failed process stops the job "
        "with its rank named; continue it with the same number of processes."
    )
    return f"""\
presets (explicit flags override a preset's values):
{chr(10).join(presets)}

speed:
  Batches are bucketed by token length (each padded only to its own longest text). With
  --trainable head or last-N-blocks the frozen lower blocks run once per text and are cached
  (the cache is recomputed per step instead if it would exceed 4 GiB); only the trainable top
  runs every step. Dropout acts only inside trainable blocks.

distributed:
{distributed}

LoRA (--trainable lora):
  Every base weight is frozen and rank-r adapters on the --lora-targets layers train; a head
  without an adapter trains in full. With --lora-blocks last-N the blocks below the top N
  are cached as above, so a step runs only the top N blocks (about the cost of
  last-N-blocks; measured times in the README); with all, every block runs every step. The
  run keeps the adapter in OUT/adapter.safetensors beside the base weights
  (OUT/model.safetensors); clf-export merges it into the weights, so the exported model is
  as fast as any other. A chapter-6 state dict saved after appendix E's
  replace_linear_with_lora can be given to --weights: its adapters are the starting point
  (pass its rank, and --lora-alpha = its alpha x rank).

resume:
{resume}

examples:
  clf-train --preset sms-demo --out runs/demo
  clf-train --data sms.csv --text-col message --label-col category --model gpt2 --out runs/a
  clf-train --data sms.csv --init random --model gpt2-mini --out runs/c   # no weights needed
  clf-train --data sms.csv --trainable lora --lora-rank 16 --lora-alpha 256 --out runs/lora
  clf-train --resume runs/a
  torchrun --nproc-per-node 2 -m clf_train --data sms.csv --device cuda --out runs/b
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``clf-train`` argument parser (every default is SUPPRESS: explicit flags only)."""
    p = argparse.ArgumentParser(
        prog="clf-train",
        description="Finetune GPT-2 into a text classifier; writes a run directory that "
        "clf-export turns into ONNX.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )

    def add(group: Any, flag: str, **kwargs: Any) -> None:
        group.add_argument(flag, help=_HELP[flag], **kwargs)

    add(p, "--preset", choices=list(PRESET_ARGS))
    d = p.add_argument_group("data")
    for flag in ("--data", "--text-col", "--label-col", "--val-data", "--test-data"):
        add(d, flag)
    add(d, "--balance", action="store_true")
    m = p.add_argument_group("model")
    add(m, "--model", choices=MODELS, metavar="NAME")
    add(m, "--weights")
    add(m, "--init", choices=INITS)
    add(m, "--trainable")
    add(m, "--lora-rank", type=int, metavar="R")
    add(m, "--lora-alpha", type=float, metavar="A")
    add(m, "--lora-targets", metavar="LIST")
    add(m, "--lora-dropout", type=float, metavar="P")
    add(m, "--lora-blocks", metavar="all|last-N")
    add(m, "--pooling", choices=POOLINGS)
    add(m, "--max-length", type=int)
    add(m, "--dropout", type=float)
    t = p.add_argument_group("training")
    add(t, "--lr", type=float)
    add(t, "--weight-decay", type=float)
    for flag in ("--epochs", "--batch-size", "--grad-accum", "--seed"):
        add(t, flag, type=int)
    add(t, "--early-stopping", type=int, metavar="N")
    add(t, "--device", choices=DEVICES)
    add(t, "--threads", type=int)
    add(t, "--frozen-dtype", choices=FROZEN_DTYPES)
    add(t, "--checkpoint-every", type=int, metavar="N")
    add(t, "--devices", type=int, metavar="N")
    add(t, "--dist-timeout", type=float, metavar="SECONDS")
    o = p.add_argument_group("output")
    add(o, "--out")
    add(o, "--overwrite", action="store_true")
    add(o, "--resume", metavar="DIR")
    add(o, "--no-progress", dest="progress", action="store_false")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merge TrainConfig defaults < preset values < explicit flags into a TrainConfig.

    With ``--resume`` the run's saved configuration is used, so any flag outside
    :data:`RESUME_OK` (``--preset`` included) is refused with a :class:`ConfigError`.
    """
    given = {k: v for k, v in vars(args).items() if k not in LAUNCH_ONLY}
    if "resume" in given:
        extra = sorted(set(given) - {"resume", *RESUME_OK})
        if extra:
            flags = ", ".join(_flag(k) for k in extra)
            raise ConfigError(
                f"--resume continues a run with the configuration it saved when it started; "
                f"drop {flags} (only {one_of(tuple(map(_flag, RESUME_OK)))} may be given with "
                "--resume)"
            )
        return TrainConfig(**given)
    preset = given.pop("preset", None)
    values = {**(PRESET_ARGS[preset] if preset else {}), **given}
    return TrainConfig(**values)


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _print_epoch(record: dict[str, Any]) -> None:
    print(
        f"epoch {record['epoch']}: train loss {_fmt(record['train_loss'])} "
        f"acc {_fmt(record['train_accuracy'])} | val loss {_fmt(record['val_loss'])} "
        f"acc {_fmt(record['val_accuracy'])} | {record['seconds']:.1f}s",
        flush=True,
    )


def _print_start(info: dict[str, Any]) -> None:
    """The trainable-parameter count, printed before the frozen part is cached."""
    n, total = info["trainable_parameters"], info["total_parameters"]
    line = f"trainable parameters: {n:,} of {total:,} ({100 * n / total:.3g} %), --trainable "
    line += info["trainable"]
    lora = info.get("lora")
    if lora is not None:
        line += (
            f" (rank {lora['rank']}, alpha {lora['alpha']:g}, scaling {lora['scaling']:g}, "
            f"targets {','.join(lora['targets'])}, blocks {lora['blocks']})"
        )
    print(line, flush=True)


def _print_summary(result: Any) -> None:
    test = result.metrics["test"]
    print(f"best epoch: {result.best_epoch}")
    print(
        f"test: n={test['n']} accuracy {_fmt(test['accuracy'])} macro-F1 "
        f"{_fmt(test['macro_f1'])} loss {_fmt(test['loss'])}"
    )
    for label, c in test["per_class"].items():
        print(
            f"  {label}: precision {_fmt(c['precision'])} recall {_fmt(c['recall'])} "
            f"f1 {_fmt(c['f1'])} support {c['support']}"
        )
    print(f"run directory: {result.run_dir}")


def _interrupted_hint(args: argparse.Namespace, world_size: int = 1) -> str:
    """What to do after Ctrl-C: resume if the run got as far as its setup checkpoint."""
    from .checkpoint import has_setup

    where = getattr(args, "resume", None) or getattr(args, "out", None)
    if where is None or has_setup(Path(where)):
        return f"interrupted; continue with: {resume_command(str(where), world_size)}"
    again = " with --overwrite" if Path(where).exists() else ""
    return (
        "interrupted during setup, before the run's first checkpoint: there is nothing to "
        f"resume; run the same command again{again}"
    )


def _failure_hint(args: argparse.Namespace, devices: int) -> str:
    """After a failed multi-process run: how to continue it, if there is anything to continue."""
    from .checkpoint import has_setup

    where = getattr(args, "resume", None) or getattr(args, "out", None)
    if where is None:
        return ""
    if has_setup(Path(where)):
        return (
            f" The last checkpoint in {where} is kept; continue with: "
            f"{resume_command(str(where), devices)}"
        )
    again = " with --overwrite" if Path(where).exists() else ""
    return (
        " The run never reached its first checkpoint, so there is nothing to resume: once the "
        f"cause is fixed, run the same command again{again}"
    )


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _launch(argv: list[str], args: argparse.Namespace, devices: int) -> int:
    """``--devices N``: check what can be checked here, then run and watch N ranks."""
    from .errors import TrainError

    try:
        config = config_from_args(args).validate()
        if config.resume is not None:
            # Refuse a wrong number of processes before starting any of them.
            from .checkpoint import read_setup
            from .distributed import check_world_size

            setup = read_setup(Path(config.resume))
            check_world_size(int(setup.get("world_size", 1)), devices, config.resume)
    except ConfigError as e:
        print(f"clf-train: error: {e}", file=sys.stderr)
        return 2
    except TrainError as e:
        print(f"clf-train: error: {e}", file=sys.stderr)
        return 1
    # A SIGTERM to the launcher (a job scheduler) must stop the ranks too: launch() stops
    # every child on the way out of a KeyboardInterrupt.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        outcome = launch(argv, LaunchConfig(devices=devices))
    except KeyboardInterrupt:
        print(f"clf-train: {_interrupted_hint(args, devices)}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    failed = outcome.failed
    if failed is None:
        return 0
    stopped = ", ".join(map(str, outcome.stopped))
    stopped = f"; the launcher stopped rank(s) {stopped}" if stopped else ""
    hint = _failure_hint(args, devices) if failed.returncode != 2 else ""
    what = f"failed ({failed.describe()})"
    if failed.returncode == EXIT_PEER_FAILED:  # no rank failed on its own: one hung
        what = "lost contact with the others (a collective failed or timed out; a rank it "
        what += "waited for is probably hung)"
    print(f"clf-train: rank {failed.rank} of {devices} {what}{stopped}.{hint}", file=sys.stderr)
    return outcome.returncode


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``clf-train``; returns the exit status."""
    if importlib.util.find_spec("torch") is None:  # a runtime-only install
        print(
            "clf-train: error: torch is not installed. Training needs the extra: "
            "pip install 'gpt-clf[train]'",
            file=sys.stderr,
        )
        return 2
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    devices = getattr(args, "devices", 1)
    try:
        env = dist_env()
        if devices < 1:
            raise ConfigError(f"--devices must be >= 1, got {devices}")
        if env is not None and devices not in (1, env.world_size):
            raise ConfigError(
                f"--devices {devices}, but this process is already rank {env.rank} of a job of "
                f"{env.world_size} (WORLD_SIZE, set by torchrun): drop --devices, torchrun's "
                "--nproc-per-node sets the number of processes"
            )
    except ConfigError as e:
        print(f"clf-train: error: {e}", file=sys.stderr)
        return 2
    if env is None and devices > 1:
        return _launch(argv, args, devices)
    return _train(args, env)


def _train(args: argparse.Namespace, env: DistEnv | None) -> int:
    """One process (alone, or one rank of a job): train, print, map failures to exit codes."""
    rank, world_size = (env.rank, env.world_size) if env else (0, 1)
    prog = "clf-train" if env is None else f"clf-train (rank {rank} of {world_size})"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    pkg_logger = logging.getLogger("clf_train")
    pkg_logger.addHandler(handler)
    # Warnings about the data and the model are the same on every rank: rank 0 says them.
    pkg_logger.setLevel(logging.WARNING if rank == 0 else logging.ERROR)
    try:
        from .api import train
        from .errors import DistributedError, TrainError

        try:
            config = config_from_args(args)
            main_rank = rank == 0
            result = train(
                config,
                on_epoch=_print_epoch if main_rank else None,
                on_start=_print_start if main_rank else None,
            )
        except ConfigError as e:  # before TrainError: it is one
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 2
        except DistributedError as e:  # before TrainError: it is one; it names the rank
            print(f"clf-train: error: {e}", file=sys.stderr)
            return EXIT_PEER_FAILED
        except TrainError as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            if rank == 0:
                print(f"{prog}: {_interrupted_hint(args, world_size)}", file=sys.stderr)
            return 130
        if rank == 0:
            _print_summary(result)
        return 0
    finally:
        pkg_logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
