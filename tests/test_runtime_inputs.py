"""Property tests: random unicode text lists never crash the runtime, and results are stable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clf_runtime import Classifier

# Any code point, lone surrogates included (category Cs), plus a few adversarial fragments.
_text = st.one_of(
    st.text(alphabet=st.characters(codec=None), max_size=80),
    st.lists(
        st.sampled_from([" ", "\n", "\x00", "<|endoftext|>", "é", "😀", "\ud800"]), max_size=20
    ).map("".join),
)


@pytest.fixture(scope="module", params=["model.onnx", "model.int8.onnx", "static/model.int8.onnx"])
def clf(
    request: pytest.FixtureRequest, tiny_export_dir: Path, tiny_static_export_dir: Path
) -> Classifier:
    """fp32, int8 with per-row activation scales, int8 with calibrated (static) scales."""
    folder, name = (
        (tiny_static_export_dir, "model.int8.onnx")
        if request.param.startswith("static/")
        else (tiny_export_dir, request.param)
    )
    return Classifier.load(folder / name, providers="cpu", threads=1)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(_text, min_size=1, max_size=6))
def test_random_texts_alone_equal_batched(clf: Classifier, texts: list[str]) -> None:
    batched = clf.predict_proba(texts, batch_size=len(texts))
    assert batched.shape == (len(texts), len(clf.labels))
    assert np.isfinite(batched).all()
    np.testing.assert_allclose(batched.astype(np.float64).sum(axis=1), 1.0, atol=1e-6, rtol=0)
    alone = np.concatenate([clf.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(batched, alone, atol=1e-5, rtol=0)
