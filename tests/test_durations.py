"""The duration model: incremental fits, features, and state carried across runs.

The adversaries: a poller that only sees intervals, a cache file someone tampered with, a
service whose durations changed since the state was saved.
"""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagetwin_async._durations import DurationModel, Prior, ScanFeatures


def lognormal_intervals(
    rng: random.Random, n: int, median: float = 60.0, sigma: float = 0.5
) -> list[tuple[float, float]]:
    out = []
    for _ in range(n):
        d = rng.lognormvariate(math.log(median), sigma)
        reads = [40.0 + 15.0 * k for k in range(200)]
        done = next(t for t in reads if t >= d)
        out.append((max((t for t in reads if t < d), default=0.0), done))
    return out


def test_incremental_fit_matches_a_full_refit() -> None:
    rng = random.Random(5)
    incremental = DurationModel(window=200)
    for low, high in lognormal_intervals(rng, 500):
        incremental.observe(low, high)
    full = DurationModel(window=200)
    full._obs = incremental._obs.copy()
    full._ready = True
    full._refit()
    assert incremental.fit is not None and full.fit is not None
    assert incremental.fit == pytest.approx(full.fit, abs=0.02)
    mu, sigma = incremental.fit
    assert math.exp(mu) == pytest.approx(60.0, rel=0.08)
    assert sigma == pytest.approx(0.5, abs=0.07)


def test_features_predict_durations_that_depend_on_pages() -> None:
    # Scans take ~20 s a page (median): a model told the pages tells them apart.
    rng = random.Random(9)
    model = DurationModel()
    plain = DurationModel()
    for _ in range(300):
        pages = rng.choice([1, 2, 5, 10, 20, 40])
        d = rng.lognormvariate(math.log(20.0 * pages), 0.3)
        model.observe(d * 0.9, d * 1.05, ScanFeatures(pages=pages, size=pages * 100_000))
        plain.observe(d * 0.9, d * 1.05)
    for pages in (1, 10, 40):
        median = math.exp(model.location(ScanFeatures(pages=pages, size=pages * 100_000)))
        assert median == pytest.approx(20.0 * pages, rel=0.2)
    assert model.sigma < 0.45 < plain.sigma  # the conditioned model is far more certain


def test_features_that_never_vary_change_nothing() -> None:
    rng = random.Random(2)
    with_features, without = DurationModel(), DurationModel()
    for low, high in lognormal_intervals(rng, 100):
        with_features.observe(low, high, ScanFeatures(pages=3, size=50_000))
        without.observe(low, high)
    assert with_features.fit == pytest.approx(without.fit, abs=1e-9)
    other = ScanFeatures(pages=30, size=5_000_000)
    assert with_features.location(other) == pytest.approx(without.location(other))


def test_state_round_trips_and_starts_a_new_model_warm() -> None:
    rng = random.Random(3)
    old = DurationModel()
    for low, high in lognormal_intervals(rng, 150, median=90.0):
        old.observe(low, high)
    new = DurationModel()
    assert not new.ready
    assert new.restore(old.state()) == 50
    assert new.ready
    assert new.fit is not None and old.fit is not None
    assert math.exp(new.fit[0]) == pytest.approx(math.exp(old.fit[0]), rel=0.1)


def test_a_restored_state_is_soon_outweighed_when_the_service_changed() -> None:
    rng = random.Random(4)
    old = DurationModel()
    for low, high in lognormal_intervals(rng, 200, median=60.0):
        old.observe(low, high)
    model = DurationModel()
    model.restore(old.state())
    for _ in range(60):  # the service got 3x slower
        d = rng.lognormvariate(math.log(180.0), 0.5)
        model.observe(d * 0.9, d * 1.05)
    assert model.fit is not None
    assert math.exp(model.fit[0]) > 120.0  # twice the old median after 60 scans


@pytest.mark.parametrize(
    "state",
    [
        "not json at all",
        "[]",
        '{"version": 99, "observations": []}',
        '{"version": 1, "observations": "x"}',
        '{"version": 1, "observations": [[1, 2]]}',
        '{"version": 1, "observations": [[5, 1, 0, 0, 1]]}',  # low > high
        '{"version": 1, "observations": [[0, 1e9, 0, 0, 1]]}',  # absurd scale
        '{"version": 1, "observations": [[0, 1, 0, 0, 7]]}',  # weight above one
        '{"version": 1, "observations": [[0, "1", 0, 0, 1]]}',
    ],
)
def test_a_tampered_state_raises_and_leaves_the_model_alone(state: str) -> None:
    model = DurationModel()
    model.observe(10.0, 12.0)
    before = (model.observations, model.fit, model.location())
    with pytest.raises(ValueError, match="not a usable duration model state"):
        model.restore(state)
    assert (model.observations, model.fit, model.location()) == before


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.one_of(st.none(), st.floats(allow_nan=True), st.integers()), max_size=6),
        max_size=20,
    )
)
def test_any_state_is_either_taken_or_refused(rows: list[list[object]]) -> None:
    model = DurationModel()
    try:
        model.restore(json.dumps({"version": 1, "observations": rows}))
    except ValueError:
        return
    mu, sigma = model.location(), model.sigma
    assert math.isfinite(mu) and 0 < sigma < 10


def test_the_prior_steadies_the_first_fits_and_then_fades() -> None:
    model = DurationModel(min_samples=1, prior=Prior(median=60.0, sigma=1.0, weight=0.5))
    model.observe(10.0)
    assert model.fit is not None
    assert 10.0 < math.exp(model.fit[0]) < 60.0  # between the one duration and the prior
    for _ in range(50):
        model.observe(10.0)
    assert math.exp(model.fit[0]) == pytest.approx(10.0, rel=0.05)
