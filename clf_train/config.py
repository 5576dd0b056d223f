"""``TrainConfig``: every knob of ``clf-train``, one field per CLI flag, validated at once.

Validation collects *all* problems into one :class:`ConfigError` whose lines name the flag
(``--lr must be > 0, got -1``), so a user fixes a command line in one go.

Defaults that depend on ``--init`` (``trainable``, ``lr``, ``epochs``) are ``None`` here and
resolved by :meth:`TrainConfig.resolved`:

* ``--init pretrained``: ``--trainable last-block``, lr 5e-5, 5 epochs (the published
  chapter-6 recipe).
* ``--init random``: ``--trainable all``, lr 5e-4, 5 epochs. Frozen random blocks are noise
  that never improves, so a model trained from scratch trains every weight (the numbers:
  :data:`RANDOM_FROZEN_NOTE`), and it needs a much larger step than a finetune. 5e-4 was
  picked by trying values on the ``sms-demo`` preset (balanced SMS spam, ``gpt2-mini``,
  ``--trainable all``; its measured accuracy is in the README): 1e-3 was less stable, and
  dropout 0.1 did not help.

``--trainable lora`` has its own flags (``--lora-rank`` ...), ``None`` here and filled with
:data:`LORA_DEFAULTS` by :meth:`TrainConfig.resolved`; given without ``--trainable lora`` they
are refused, so a LoRA flag is never silently ignored.

Torch-free: the model names and shapes come from :mod:`clf_train.presets`, the pooling names
from :mod:`clf_runtime.contract`, so ``import clf_train.config`` does not load torch.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

from clf_runtime.contract import POOLINGS

from ._records import from_known_keys
from .errors import ConfigError
from .presets import MODELS, PRESETS, RANDOM_ONLY_MODELS

__all__ = [
    "DEVICES",
    "FROZEN_DTYPES",
    "INITS",
    "LORA",
    "LORA_DEFAULTS",
    "LORA_TARGETS",
    "MODELS",
    "PRESET_ARGS",
    "RANDOM_ONLY_MODELS",
    "ConfigError",
    "TrainConfig",
    "one_of",
    "parse_lora_blocks",
    "parse_lora_targets",
    "parse_trainable",
]

INITS = ("pretrained", "random")
DEVICES = ("auto", "cpu", "cuda")
FROZEN_DTYPES = ("fp32", "bf16")

PRETRAINED_TRAINABLE = "last-block"
PRETRAINED_LR = 5e-5
PRETRAINED_EPOCHS = 5
RANDOM_TRAINABLE = "all"
RANDOM_LR = 5e-4
RANDOM_EPOCHS = 5
RANDOM_FROZEN_NOTE = (
    "clf-train --preset sms-demo --trainable last-block: 86.4 % test accuracy vs 92.6 % with all, "
    "on the offline SMS copy"
)
"""What training only the top of a random network costs, measured (quoted by the warning)."""
# --dist-timeout: long enough for a rank that caches a bigger share of the texts (or rank 0
# preparing the data) to catch up, short enough that a hung job stops the same day.
DIST_TIMEOUT_S = 1800.0

# Named bundles of flags. Explicit flags always win over a preset's values.
PRESET_ARGS: dict[str, dict[str, Any]] = {
    # Offline demo: SMS spam (balanced) on a small GPT trained from scratch, on CPU in minutes.
    "sms-demo": {
        "data": "sms-spam",
        "balance": True,
        "model": "gpt2-mini",
        "init": "random",
        "trainable": "all",
        "lr": 5e-4,
        "epochs": 5,
        "batch_size": 8,
    },
}

_LAST_N = re.compile(r"last-(\d+)-blocks")
_LORA_LAST_N = re.compile(r"last-(\d+)")

LORA: Final = "lora"
"""The ``--trainable`` value that trains low-rank adapters instead of unfreezing weights."""
LORA_TARGETS: Final = ("q", "k", "v", "attn-out", "mlp-in", "mlp-out", "head")
"""``--lora-targets`` names: query, key and value (each its own adapter on the fused qkv
projection), the attention output projection, the MLP's two layers, the classification head."""
LORA_DEFAULTS: Final[dict[str, Any]] = {
    "lora_rank": 16,
    "lora_alpha": 16.0,
    "lora_targets": "all",
    "lora_dropout": 0.0,
    "lora_blocks": "all",
}
"""Values of the LoRA flags a ``--trainable lora`` run does not give: the rank and targets of
the chapter-6 recipe's appendix E (alpha: see ``--lora-alpha``)."""
_LORA_FLAGS = {
    "lora_rank": "--lora-rank",
    "lora_alpha": "--lora-alpha",
    "lora_targets": "--lora-targets",
    "lora_dropout": "--lora-dropout",
    "lora_blocks": "--lora-blocks",
}


def one_of(values: tuple[str, ...]) -> str:
    """``("a", "b", "c")`` -> ``"a, b or c"``: how messages and help list a flag's choices."""
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def parse_trainable(spec: str) -> int | None:
    """Number of top blocks to train for a ``--trainable`` value.

    ``"head"`` -> 0, ``"last-block"`` -> 1, ``"last-N-blocks"`` -> N, ``"all"`` -> None
    (everything, embeddings included). Raises ``ValueError`` for anything else.
    """
    if spec == "head":
        return 0
    if spec == "last-block":
        return 1
    if spec == "all":
        return None
    m = _LAST_N.fullmatch(spec)
    if m and int(m.group(1)) >= 1:
        return int(m.group(1))
    if spec == LORA:
        # Not a number of blocks: the LoRA flags say what trains (clf_train.lora).
        raise ValueError("--trainable lora trains adapters, not blocks: read the --lora-* flags")
    raise ValueError(
        f"--trainable must be head, last-block, last-N-blocks (N >= 1, e.g. last-2-blocks), "
        f"all or lora, got {spec!r}"
    )


def parse_lora_targets(spec: str) -> tuple[str, ...]:
    """``--lora-targets`` -> the adapted layer kinds, in :data:`LORA_TARGETS` order.

    ``"all"`` -> every target; ``"q,v"`` -> ``("q", "v")``. Raises ``ValueError`` naming the
    unknown names and the known ones.
    """
    names = [x.strip() for x in spec.split(",") if x.strip()]
    if names == ["all"]:
        return LORA_TARGETS
    unknown = [x for x in names if x not in LORA_TARGETS]
    if unknown or not names:
        got = (
            f"unknown target{'s' * (len(unknown) > 1)} {', '.join(unknown)}" if unknown else "none"
        )
        raise ValueError(
            f"--lora-targets takes a comma-separated list of {', '.join(LORA_TARGETS)} (or all), "
            f"got {spec!r}: {got}"
        )
    return tuple(t for t in LORA_TARGETS if t in names)


def parse_lora_blocks(spec: str) -> int | None:
    """``--lora-blocks`` -> the number of top blocks with adapters: ``"all"`` -> None,
    ``"last-N"`` -> N (N >= 1). Raises ``ValueError`` for anything else."""
    if spec == "all":
        return None
    m = _LORA_LAST_N.fullmatch(spec)
    if m and int(m.group(1)) >= 1:
        return int(m.group(1))
    raise ValueError(f"--lora-blocks must be all or last-N (N >= 1, e.g. last-2), got {spec!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Configuration of one training run; mirrors the ``clf-train`` flags one to one."""

    # --- data ---
    data: str | None = None
    """--data: a CSV/TSV/JSONL file, or the named source "sms-spam"."""
    text_col: str | None = None
    """--text-col: column holding the text (default: detected)."""
    label_col: str | None = None
    """--label-col: column holding the label (default: detected)."""
    val_data: str | None = None
    """--val-data: a separate validation file (default: split off --data)."""
    test_data: str | None = None
    """--test-data: a separate test file (default: split off --data)."""
    balance: bool = False
    """--balance: undersample every label to the size of the rarest one."""
    # --- model ---
    model: str = "gpt2"
    """--model: architecture / pretrained size (a name of :data:`clf_train.presets.MODELS`)."""
    weights: str | None = None
    """--weights: a local pretrained checkpoint (HF safetensors dir/file or a torch state dict)."""
    init: str = "pretrained"
    """--init: start from pretrained weights or from a seeded random initialisation."""
    trainable: str | None = None
    """--trainable: head | last-block | last-N-blocks | all | lora (the head always learns);
    default last-block with --init pretrained, all with --init random."""
    lora_rank: int | None = None
    """--lora-rank: rank r of every adapter (default 16; --trainable lora only)."""
    lora_alpha: float | None = None
    """--lora-alpha: the update is (alpha / rank) * B A, as in the LoRA paper and peft
    (default 16; the appendix-E layer's own alpha a is --lora-alpha a * rank)."""
    lora_targets: str | None = None
    """--lora-targets: comma-separated layers to adapt, of q, k, v, attn-out, mlp-in, mlp-out,
    head (default all)."""
    lora_dropout: float | None = None
    """--lora-dropout: dropout on each adapter's input while training (default 0.0)."""
    lora_blocks: str | None = None
    """--lora-blocks: adapters in every block ("all", the default) or the top N ("last-N")."""
    pooling: str = "last"
    """--pooling: read the last real token ("last") or average the real tokens ("mean")."""
    max_length: int | None = None
    """--max-length: tokens kept per text, head kept (default min(256, context_length))."""
    dropout: float = 0.0
    """--dropout: dropout rate inside the trainable blocks."""
    # --- training ---
    lr: float | None = None
    """--lr: AdamW learning rate (default 5e-5 pretrained, 5e-4 random init)."""
    weight_decay: float = 0.1
    """--weight-decay: AdamW decoupled weight decay."""
    epochs: int | None = None
    """--epochs: passes over the training set (default 5, with either --init)."""
    batch_size: int = 8
    """--batch-size: texts per forward pass."""
    grad_accum: int = 1
    """--grad-accum: batches accumulated per optimizer step."""
    seed: int = 123
    """--seed: seeds the split, the initialisation, the batch order and dropout."""
    early_stopping: int | None = None
    """--early-stopping: stop after N epochs without a lower validation loss (off: None)."""
    device: str = "auto"
    """--device: auto (CUDA when available), cpu or cuda."""
    threads: int | None = None
    """--threads: torch CPU threads (default: torch's choice)."""
    frozen_dtype: str = "fp32"
    """--frozen-dtype: dtype for computing and caching the frozen blocks (fp32 or bf16)."""
    checkpoint_every: int = 200
    """--checkpoint-every: optimizer steps between mid-epoch checkpoints (0: epoch ends only)."""
    dist_timeout: float = DIST_TIMEOUT_S
    """--dist-timeout: seconds a multi-process run waits in any collective (gradient all-reduce,
    barrier, start-up) before it stops with an error naming the rank; so no rank hangs forever."""
    # --- output ---
    out: str | None = None
    """--out: the run directory to create."""
    overwrite: bool = False
    """--overwrite: replace the run files of an existing --out directory."""
    resume: str | None = None
    """--resume: continue the interrupted run in this directory (its saved config is used)."""
    progress: bool = True
    """--no-progress turns this off: tqdm progress bars on stderr."""

    def problems(self) -> list[str]:
        """Every problem of this config, one line each naming the flag; empty when valid."""
        p: list[str] = []
        if self.resume is None:
            if not self.data:
                p.append('--data is required: a CSV/TSV/JSONL file or "sms-spam"')
            if not self.out:
                p.append("--out is required (the run directory to create), unless --resume DIR")
        elif self.out and self.out != self.resume:
            p.append(f"--out ({self.out}) and --resume ({self.resume}) name different directories")
        if self.model not in MODELS:
            p.append(f"--model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.init not in INITS:
            p.append(f"--init must be {one_of(INITS)}, got {self.init!r}")
        elif self.init == "pretrained" and self.model in RANDOM_ONLY_MODELS:
            p.append(
                f"--model {self.model} has no pretrained weights: add --init random "
                "(or pick gpt2 ... gpt2-xl to finetune)"
            )
        if self.init == "random" and self.weights is not None:
            p.append("--weights only makes sense with --init pretrained; drop one of them")
        try:
            n = None if self.trainable in (None, LORA) else parse_trainable(self.trainable)
        except ValueError as e:
            p.append(str(e))
        else:
            cfg = PRESETS.get(self.model)
            if n is not None and cfg is not None and self.weights is None and n > cfg.n_layer:
                p.append(
                    f"--trainable {self.trainable}: {self.model} has only {cfg.n_layer} blocks"
                )
        p += self._lora_problems()
        if self.pooling not in POOLINGS:
            p.append(f"--pooling must be {one_of(POOLINGS)}, got {self.pooling!r}")
        if self.max_length is not None:
            ctx = PRESETS[self.model].context_length if self.model in PRESETS else None
            if self.max_length < 1:
                p.append(f"--max-length must be >= 1, got {self.max_length}")
            elif ctx is not None and self.max_length > ctx and self.weights is None:
                p.append(
                    f"--max-length {self.max_length} exceeds {self.model}'s context length {ctx}"
                )
        if not 0.0 <= self.dropout < 1.0:
            p.append(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.lr is not None and not self.lr > 0:
            p.append(f"--lr must be > 0, got {self.lr}")
        if not self.weight_decay >= 0:
            p.append(f"--weight-decay must be >= 0, got {self.weight_decay}")
        for flag, value in (
            ("--epochs", self.epochs),
            ("--batch-size", self.batch_size),
            ("--grad-accum", self.grad_accum),
            ("--early-stopping", self.early_stopping),
            ("--threads", self.threads),
        ):
            if value is not None and value < 1:
                p.append(f"{flag} must be >= 1, got {value}")
        if not self.dist_timeout > 0:
            p.append(f"--dist-timeout must be > 0 seconds, got {self.dist_timeout}")
        if self.checkpoint_every < 0:
            p.append(f"--checkpoint-every must be >= 0, got {self.checkpoint_every}")
        if self.seed < 0:
            p.append(f"--seed must be >= 0, got {self.seed}")
        if self.device not in DEVICES:
            p.append(f"--device must be {one_of(DEVICES)}, got {self.device!r}")
        if self.frozen_dtype not in FROZEN_DTYPES:
            p.append(f"--frozen-dtype must be {one_of(FROZEN_DTYPES)}, got {self.frozen_dtype!r}")
        return p

    def _trainable_or_default(self) -> str:
        """``--trainable`` as given, or the default that :meth:`resolved` fills in."""
        if self.trainable is not None:
            return self.trainable
        return RANDOM_TRAINABLE if self.init == "random" else PRETRAINED_TRAINABLE

    def _lora_problems(self) -> list[str]:
        """The LoRA flags' problems: given without ``--trainable lora``, or bad values."""
        given = [flag for name, flag in _LORA_FLAGS.items() if getattr(self, name) is not None]
        if self.trainable != LORA:
            if not given:
                return []
            return [
                f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} with "
                f"--trainable lora (got --trainable {self._trainable_or_default()}); add "
                "--trainable lora or "
                f"drop {'it' if len(given) == 1 else 'them'}"
            ]
        p: list[str] = []
        rank, alpha, dropout = self.lora_rank, self.lora_alpha, self.lora_dropout
        if rank is not None and not (isinstance(rank, int) and rank >= 1):
            p.append(f"--lora-rank must be an integer >= 1, got {rank!r}")
        if alpha is not None and not (isinstance(alpha, (int, float)) and 0 < alpha < float("inf")):
            p.append(f"--lora-alpha must be a finite number > 0, got {alpha!r}")
        if dropout is not None and not 0.0 <= dropout < 1.0:
            p.append(f"--lora-dropout must be in [0, 1), got {dropout}")
        if self.lora_targets is not None:
            try:
                parse_lora_targets(self.lora_targets)
            except ValueError as e:
                p.append(str(e))
        if self.lora_blocks is not None:
            try:
                n = parse_lora_blocks(self.lora_blocks)
            except ValueError as e:
                p.append(str(e))
            else:
                cfg = PRESETS.get(self.model)
                if n is not None and cfg is not None and self.weights is None and n > cfg.n_layer:
                    p.append(
                        f"--lora-blocks {self.lora_blocks}: {self.model} has only "
                        f"{cfg.n_layer} blocks"
                    )
        return p

    def validate(self) -> TrainConfig:
        """Return ``self`` if valid, else raise one :class:`ConfigError` listing every problem."""
        p = self.problems()
        if p:
            raise ConfigError(
                f"invalid training configuration ({len(p)} problem{'s' * (len(p) > 1)}):\n"
                + "\n".join(f"  {line}" for line in p)
            )
        return self

    def resolved(self) -> TrainConfig:
        """A copy with the ``--init``-dependent defaults (trainable, lr, epochs) filled in, and
        with ``--trainable lora`` the LoRA flags not given (:data:`LORA_DEFAULTS`)."""
        random_init = self.init == "random"
        trainable = self._trainable_or_default()
        lr = self.lr if self.lr is not None else (RANDOM_LR if random_init else PRETRAINED_LR)
        epochs = self.epochs
        if epochs is None:
            epochs = RANDOM_EPOCHS if random_init else PRETRAINED_EPOCHS
        lora = {}
        if trainable == LORA:
            lora = {
                k: v if getattr(self, k) is None else getattr(self, k)
                for k, v in LORA_DEFAULTS.items()
            }
        return replace(self, trainable=trainable, lr=lr, epochs=epochs, **lora)

    def advice(self) -> list[str]:
        """Warnings about a valid but probably unintended combination of flags."""
        tips: list[str] = []
        if self.init == "random" and self.trainable not in (None, RANDOM_TRAINABLE):
            tips.append(
                f"--init random with --trainable {self.trainable} keeps part of a randomly "
                "initialised network frozen: those weights stay random noise and accuracy "
                f"suffers ({RANDOM_FROZEN_NOTE}). Pass "
                f"--trainable {RANDOM_TRAINABLE} (the default with --init random), or start from "
                "pretrained weights"
            )
        return tips

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; raises :class:`ConfigError` on a key that is not a field."""
        return from_known_keys(cls, data, what="training config", error=ConfigError)
