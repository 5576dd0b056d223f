"""clf_runtime.batch_plan: the cheapest cut of a round into model calls, and the cost model."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from clf_runtime.batch_plan import CallCostModel, plan_min_cost


def cost_of(calls: list[np.ndarray], lengths: np.ndarray, overhead: float) -> float:
    return sum(overhead + len(c) * int(lengths[c].max()) for c in calls)


def brute_force(lengths: np.ndarray, max_rows: int, max_tokens: int, overhead: float) -> float:
    """Cheapest cost over every split of the sorted order into runs (independent reference)."""
    sorted_len = np.sort(lengths)
    n = len(sorted_len)
    best = float("inf")
    for cuts in itertools.product([False, True], repeat=n - 1):
        bounds = [0, *(i + 1 for i, cut in enumerate(cuts) if cut), n]
        total = 0.0
        for lo, hi in itertools.pairwise(bounds):
            rows, longest = hi - lo, int(sorted_len[hi - 1])
            if rows > max_rows or (rows > 1 and rows * longest > max_tokens):
                break
            total += overhead + rows * longest
        else:
            best = min(best, total)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_the_plan_is_the_cheapest_split_within_the_limits(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    lengths = rng.integers(1, 60, size=n)
    max_rows = int(rng.integers(1, 6))
    max_tokens = int(rng.integers(20, 200))
    overhead = float(rng.choice([0.0, 3.0, 30.0, 1000.0]))
    calls = plan_min_cost(
        lengths, max_rows=max_rows, max_tokens=max_tokens, overhead_tokens=overhead
    )
    assert sorted(np.concatenate(calls).tolist()) == list(range(n))  # every row exactly once
    for c in calls:
        assert len(c) <= max_rows
        assert len(c) == 1 or len(c) * lengths[c].max() <= max_tokens
        assert list(lengths[c]) == sorted(lengths[c])
    assert cost_of(calls, lengths, overhead) == pytest.approx(
        brute_force(lengths, max_rows, max_tokens, overhead)
    )


def test_no_overhead_means_no_padding_and_a_large_one_means_full_calls() -> None:
    lengths = np.array([5, 9, 5, 9, 9, 30, 5])
    no_pad = plan_min_cost(lengths, max_rows=8, max_tokens=1000, overhead_tokens=0.0)
    assert [sorted(lengths[c].tolist()) for c in no_pad] == [[5, 5, 5], [9, 9, 9], [30]]
    full = plan_min_cost(lengths, max_rows=4, max_tokens=1000, overhead_tokens=1e6)
    assert [len(c) for c in full] == [3, 4] or [len(c) for c in full] == [4, 3]
    # A text longer than the token budget still runs, alone.
    assert [
        c.tolist()
        for c in plan_min_cost(np.array([50]), max_rows=4, max_tokens=10, overhead_tokens=5.0)
    ] == [[0]]
    assert (
        plan_min_cost(np.array([], dtype=np.int64), max_rows=4, max_tokens=10, overhead_tokens=5.0)
        == []
    )


def test_sms_like_round_pads_far_less_than_filling_calls() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 92, size=64)
    calls = plan_min_cost(lengths, max_rows=32, max_tokens=8192, overhead_tokens=30.0)
    padded = sum(len(c) * int(lengths[c].max()) for c in calls)
    order = np.sort(lengths)
    filled = 32 * int(order[31]) + 32 * int(order[63])  # two calls of 32, as plan_batches
    assert padded < 0.8 * filled
    assert padded + 30 * len(calls) < filled + 30 * 2


def test_the_cost_model_learns_the_per_call_overhead() -> None:
    model = CallCostModel(prior_overhead_tokens=16.0, refit_every=1)
    assert model.overhead_tokens() == 16.0  # nothing seen yet
    for tokens in (100, 200, 400, 800, 1600, 100, 300, 900):
        model.observe(tokens, 0.006 + 0.0002 * tokens)  # 6 ms per call, 0.2 ms per token
    assert model.overhead_tokens() == pytest.approx(30.0)
    floor = CallCostModel(prior_overhead_tokens=64.0, refit_every=1)
    for tokens in (100, 200, 400, 800, 1600, 100, 300, 900):
        floor.observe(tokens, 0.006 + 0.0002 * tokens)
    assert floor.overhead_tokens() == 64.0  # a fit below the prior is not trusted
    same_size = CallCostModel(prior_overhead_tokens=50.0, refit_every=1)
    for _ in range(10):
        same_size.observe(512, 0.1)
    assert same_size.overhead_tokens() == 50.0  # an intercept from one size is a guess
    implausible = CallCostModel(prior_overhead_tokens=50.0, refit_every=1)
    for tokens in (100, 200, 400, 800, 1600, 100, 300, 900):
        implausible.observe(tokens, max(1e-4, -0.01 + 0.0002 * tokens))  # negative intercept
    assert implausible.overhead_tokens() == 50.0


def test_the_estimate_is_refitted_every_few_calls() -> None:
    model = CallCostModel(prior_overhead_tokens=16.0, refit_every=8)
    for tokens in (100, 200, 400, 800, 1600, 100, 300):
        model.observe(tokens, 0.006 + 0.0002 * tokens)
    assert model.overhead_tokens() == 16.0  # 7 calls: not refitted yet
    model.observe(900, 0.006 + 0.0002 * 900)
    assert model.overhead_tokens() == pytest.approx(30.0)
