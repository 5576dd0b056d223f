"""Inputs several test files share: short SMS-like texts and a small labelled CSV."""

from __future__ import annotations

import csv
import random
from pathlib import Path

SHORT_TEXTS = [
    "Free entry in 2 a wkly comp to win FA Cup final tkts",
    "ok",
    "I'll call you later, the meeting ran long and I am still at the office with Sam",
    "",
    "WINNER!! As a valued network customer you have been selected to receive a prize reward",
]
"""Five texts of very different lengths, the empty one included."""

TOPIC_WORDS = {
    "sport": ["goal", "match", "team", "score", "ball", "coach"],
    "tech": ["code", "chip", "data", "cloud", "robot", "laptop"],
    "food": ["pizza", "bread", "soup", "apple", "cheese", "pasta"],
}


def write_topic_csv(path: Path, n: int) -> Path:
    """A seeded CSV (``message``, ``topic``) of ``n`` rows, the 3 topics in turn; returns it."""
    rng = random.Random(0)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["message", "topic"])
        for i in range(n):
            label = ("sport", "tech", "food")[i % 3]
            words = " and ".join(rng.choice(TOPIC_WORDS[label]) for _ in range(1 + i % 5))
            w.writerow([f"today I saw the {words}, number {i}", label])
    return path
