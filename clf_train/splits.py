"""Balancing and splitting training data: ``prepare_data`` (stratified, seeded).

Splitting (``prepare_data``): with ``balance`` every class is first undersampled to the size of
the smallest (seeded). Split sizes follow the reference recipe: train = floor(N * train_frac),
val = floor(N * val_frac), test = the rest (1,494 -> 1,045 / 149 / 300). Each split is then
shared out over the classes in proportion to what is left of each class (largest remainder),
with at least one example of every class in every non-empty split; a class with fewer examples
than non-empty splits is a ``DataError``. With ``val_data`` and ``test_data`` the main file is all
training data; with only one of them, the main file is split into train and the other split,
the two fractions rescaled to sum to 1 (70/10/20 with a test file: 87.5 % / 12.5 %). Val/test
labels must occur in the training data (case-insensitive match to the training spelling).
With ``balance`` and val/test files, only the main file is balanced.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from clf_runtime.contract import SPLITS

from .data import N_EXAMPLES, LabeledData, PreparedData, load_labeled_file
from .errors import DataError
from .sms_spam import PACKAGE_NAME, PACKAGE_ROWS, SMS_SPAM_NAME, SMS_SPAM_ROWS, find_sms_spam

__all__ = ["prepare_data"]

# ----------------------------------------------------------------------------- splitting


def _check_split(split: Any) -> tuple[float, float, float]:
    # A Python-API argument only (clf-train always splits 70/10/20), so the messages name
    # the keyword argument, not a flag.
    expected = (
        "expected three non-negative fractions (train, val, test) that sum to 1, with "
        "train > 0, e.g. split=(0.7, 0.1, 0.2)"
    )
    try:
        fr = tuple(float(x) for x in split)
    except (TypeError, ValueError) as e:
        raise DataError(f"prepare_data(split={split!r}): {expected}.") from e
    if (
        len(fr) != 3
        or not all(math.isfinite(x) and x >= 0 for x in fr)
        or fr[0] <= 0
        or abs(sum(fr) - 1) > 1e-6
    ):
        raise DataError(f"prepare_data(split={split!r}): {expected}.")
    return fr[0], fr[1], fr[2]


def _apportion(
    total: int, weights: dict[str, int], lo: dict[str, int], hi: dict[str, int]
) -> dict[str, int]:
    """Share ``total`` over classes in proportion to ``weights`` (largest remainder), within
    [lo, hi] per class; ties go to the larger weight, then the smaller label."""
    wsum = sum(weights.values())
    ideal = {c: total * w / wsum if wsum else 0.0 for c, w in weights.items()}
    out = {c: min(max(math.floor(ideal[c] + 1e-9), lo[c]), hi[c]) for c in weights}
    step_order = sorted(
        weights, key=lambda c: (-(ideal[c] - math.floor(ideal[c] + 1e-9)), -weights[c], c)
    )
    while (rest := total - sum(out.values())) != 0:
        step = 1 if rest > 0 else -1
        order = step_order if step > 0 else step_order[::-1]
        movable = [c for c in order if (out[c] < hi[c] if step > 0 else out[c] > lo[c])]
        if not movable:
            break  # bounds win over the total (tiny classes)
        for c in movable[: abs(rest)]:
            out[c] += step
    return out


def _split_counts(
    counts: dict[str, int], fractions: tuple[float, float, float], source: str
) -> dict[str, list[int]]:
    """Per class, how many examples go to (train, val, test)."""
    active = [i for i, f in enumerate(fractions) if f > 0]
    short = {c: n for c, n in counts.items() if n < len(active)}
    if short:
        need = len(active)
        raise DataError(
            f"{source}: too few examples for a stratified split: "
            f"{', '.join(f'{c!r} has {n}' for c, n in sorted(short.items()))}, but each label "
            f"needs at least {need} (one per split: {'/'.join(SPLITS[i] for i in active)}). "
            f"Add examples of these labels, remove them from the file, or give --val-data and "
            f"--test-data files."
        )
    n = sum(counts.values())
    # Reference recipe: floor for every split but the last non-empty one, which takes the rest.
    totals = [math.floor(n * f + 1e-9) for f in fractions]
    totals[active[-1]] = n - sum(totals[i] for i in active[:-1])
    left = dict(counts)
    out = {c: [0, 0, 0] for c in counts}
    for k, i in enumerate(active):
        later = len(active) - k - 1  # each later split still needs one of every class
        if later == 0:
            got = dict(left)
        else:
            got = _apportion(
                totals[i],
                left,
                dict.fromkeys(left, 1),
                {c: m - later for c, m in left.items()},
            )
        for c in counts:
            out[c][i] = got[c]
            left[c] -= got[c]
    return out


def _subset(data: LabeledData, idx: list[int]) -> LabeledData:
    return LabeledData([data.texts[i] for i in idx], [data.labels[i] for i in idx])


def _stratified(
    data: LabeledData, fractions: tuple[float, float, float], rng: random.Random, source: str
) -> tuple[list[int], list[int], list[int]]:
    order = list(range(len(data)))
    rng.shuffle(order)
    by_class: dict[str, list[int]] = defaultdict(list)
    for i in order:
        by_class[data.labels[i]].append(i)
    sizes = _split_counts({c: len(v) for c, v in by_class.items()}, fractions, source)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for c in sorted(by_class):
        idx, (a, b, _) = by_class[c], sizes[c]
        parts[0].extend(idx[:a])
        parts[1].extend(idx[a : a + b])
        parts[2].extend(idx[a + b :])
    pos = {i: p for p, i in enumerate(order)}
    for part in parts:  # classes interleaved, in shuffled order
        part.sort(key=pos.__getitem__)
    return parts


def _balance(data: LabeledData, rng: random.Random) -> tuple[LabeledData, dict[str, Any]]:
    """Undersample every class to the smallest class's size (seeded), keeping file order."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, y in enumerate(data.labels):
        by_class[y].append(i)
    m = min(len(v) for v in by_class.values())
    keep = sorted(i for c in sorted(by_class) for i in rng.sample(by_class[c], m))
    before = {c: len(by_class[c]) for c in sorted(by_class)}
    return _subset(data, keep), {
        "enabled": True,
        "before": before,
        "after": dict.fromkeys(before, m),
    }


def _align_labels(
    data: LabeledData, train_labels: list[str], path: Path, flag: str
) -> tuple[LabeledData, list[dict[str, Any]]]:
    """Map a val/test file's labels onto the training spellings; refuse unknown labels."""
    known = set(train_labels)
    fold = {y.casefold(): y for y in train_labels}
    unknown: dict[str, list[int]] = defaultdict(list)
    mapped, changes = [], Counter()
    for y, line in zip(data.labels, data.lines or [], strict=True):
        target = y if y in known else fold.get(y.casefold())
        if target is None:
            unknown[y].append(line)
        else:
            if target != y:
                changes[(y, target)] += 1
            mapped.append(target)
    if unknown:
        listed = "; ".join(
            f"{y!r} ({len(ls)} rows, first at line {ls[0]})" for y, ls in sorted(unknown.items())
        )
        raise DataError(
            f"{path} ({flag}) has labels that the training data lacks: {listed}. The training "
            f"labels are {sorted(known)}. A model cannot predict a label it never saw: fix those "
            f"rows, or add examples of these labels to the training data."
        )
    norms = [{"from": a, "to": b, "count": n} for (a, b), n in sorted(changes.items())]
    return LabeledData(data.texts, mapped, data.lines), norms


def _duplicates(splits: dict[str, LabeledData]) -> dict[str, Any]:
    seen: dict[str, set[str]] = defaultdict(set)
    for name, part in splits.items():
        for t in part.texts:
            seen[t].add(name)
    dups = [t for t, names in seen.items() if len(names) > 1]
    return {
        "count": len(dups),
        "examples": [
            {"text": t[:200], "splits": [s for s in SPLITS if s in seen[t]]}
            for t in dups[:N_EXAMPLES]
        ],
    }


def prepare_data(
    data: str,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    val_data: str | None = None,
    test_data: str | None = None,
    balance: bool = False,
    seed: int = 123,
    split: tuple[float, float, float] = (0.7, 0.1, 0.2),
) -> PreparedData:
    """Load, clean, optionally balance and split the training data (see the module docstring).

    ``data`` is a file path or ``"sms-spam"``. ``val_data`` / ``test_data`` replace the split of
    that name. Deterministic for a given input and ``seed``. Raises ``DataError``.
    """
    fractions = _check_split(split)
    rng = random.Random(seed)
    report: dict[str, Any] = {
        "seed": seed,
        "split_fractions": dict(zip(SPLITS, fractions, strict=True)),
    }
    warnings: list[str] = []

    if data == SMS_SPAM_NAME:
        if text_col is not None or label_col is not None:
            raise DataError(
                "--text-col/--label-col do not apply to --data sms-spam (a headerless "
                "label<TAB>text file). Drop those flags, or pass a file path to --data."
            )
        path, origin = find_sms_spam()
        pool, file_report = load_labeled_file(path, label_tab_text=True)
        subset = origin == PACKAGE_NAME
        report["source"] = {
            "name": SMS_SPAM_NAME,
            "origin": origin,
            "path": str(path),
            "subset": subset,
        }
        if subset:
            note = (
                f"Using the {PACKAGE_ROWS:,}-message subset of the SMS Spam Collection shipped by "
                f"{PACKAGE_NAME} (the full set has {SMS_SPAM_ROWS:,}); set CLF_DATA_DIR to use the "
                "full file."
            )
            report["source"]["note"] = note
            warnings.append(note)
    else:
        path = Path(data)
        pool, file_report = load_labeled_file(path, text_col=text_col, label_col=label_col)
        report["source"] = {"name": None, "origin": "file", "path": str(path), "subset": False}
    report["files"] = {"data": file_report}
    warnings.extend(file_report["warnings"])

    distinct = sorted(set(pool.labels))
    if len(distinct) < 2:
        raise DataError(
            f"{path}: need at least 2 labels, found only {distinct[0]!r} ({len(pool)} usable "
            f"rows). Check that the label column ({file_report['label_column']!r}) is the right "
            f"one, or add examples of the other labels."
        )
    where = str(path)
    lines = pool.lines or []
    if not file_report["header"] and lines[:1] == [1] and pool.labels.count(pool.labels[0]) == 1:
        where += (
            f" (is line 1, label {pool.labels[0]!r}, a header? then pass --text-col/--label-col)"
        )
    report["class_counts"] = dict(Counter(pool.labels).most_common())
    report["balance"] = {"enabled": False}
    if balance:
        pool, report["balance"] = _balance(pool, rng)

    # Which splits come from the main file, and with which (rescaled) fractions.
    frac = list(fractions)
    for i, given in ((1, val_data), (2, test_data)):
        if given is not None:
            frac[i] = 0.0
    total = sum(frac)
    frac = [f / total for f in frac]
    parts = _stratified(pool, (frac[0], frac[1], frac[2]), rng, where)
    splits = {name: _subset(pool, idx) for name, idx in zip(SPLITS, parts, strict=True)}
    label_names = sorted(set(splits["train"].labels))
    report["split_method"] = {
        name: ("file" if given is not None else "stratified")
        for name, given in zip(SPLITS, (None, val_data, test_data), strict=True)
    }
    report["split_fractions_used"] = dict(zip(SPLITS, frac, strict=True))

    for name, given, flag in (("val", val_data, "--val-data"), ("test", test_data, "--test-data")):
        if given is None:
            continue
        extra_path = Path(given)
        part, extra_report = load_labeled_file(extra_path, text_col=text_col, label_col=label_col)
        part, norms = _align_labels(part, label_names, extra_path, flag)
        extra_report["aligned_to_training_labels"] = norms
        report["files"][f"{name}_data"] = extra_report
        warnings.extend(extra_report["warnings"])
        if norms:
            warnings.append(
                f"{extra_path}: renamed labels to the training spelling: "
                + ", ".join(f"{n['from']!r} -> {n['to']!r} ({n['count']})" for n in norms)
                + "."
            )
        missing = sorted(set(label_names) - set(part.labels))
        if missing:
            warnings.append(f"{extra_path} ({flag}) has no examples of {missing}.")
        splits[name] = part

    report["label_names"] = label_names
    report["splits"] = {
        name: {
            "n": len(part),
            "per_label": {y: c for y, c in sorted(Counter(part.labels).items())},
        }
        for name, part in splits.items()
    }
    dup = _duplicates(splits)
    report["duplicates_across_splits"] = dup
    if dup["count"]:
        shown = "; ".join(
            f"{e['text'][:60]!r} ({'/'.join(e['splits'])})" for e in dup["examples"][:3]
        )
        warnings.append(
            f"{dup['count']} distinct texts occur in more than one split (e.g. {shown}); "
            f"scores on val/test are slightly optimistic for them."
        )
    report["warnings"] = warnings
    return PreparedData(
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        label_names=label_names,
        report=report,
        warnings=warnings,
    )
