"""How long scans take: a log-normal model of scan durations, learned as scans finish.

Pure (no I/O, no clock): the poll scheduler feeds it what its reads saw and asks it when a
scan is likely done. Its state is plain JSON (``state()`` / ``restore()``), so what one run
learned can start the next one warm (see ``_modelstore``).

The model: ``log(duration) ~ Normal(a + b . (x - mean x), sigma^2)`` where ``x`` is what the
SDK knows of a scan before sending it (``ScanFeatures``: log pages or images, log bytes). With
scans that all look alike the slopes ``b`` stay 0 and this is the plain log-normal. Every
observation is an interval (the scan was running at one read and done at the next), fitted by
expectation-maximisation for interval-censored data; the sums the fit needs are updated per
observation in O(1), and all E-steps are refreshed by a few full EM rounds every
``refit_every`` observations (amortised O(window * rounds / refit_every)).
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable, Mapping
from statistics import NormalDist
from typing import Any, Final, Protocol

import attrs

__all__ = ["DEFAULT_PRIOR", "DurationModel", "Prior", "ScanFeatures"]

_MIN_SIGMA: Final = 0.05
_MAX_SIGMA: Final = 5.0
_SLOPE_RIDGE: Final = 1.0  # shrinks the feature slopes to 0 until the data show a spread
_STATE_VERSION: Final = 1
_MIB: Final = float(2**20)
_STANDARD: Final = NormalDist()
_SQRT2: Final = math.sqrt(2.0)


class _Part(Protocol):
    @property
    def pages(self) -> int | None: ...

    @property
    def size(self) -> int: ...


@attrs.frozen
class ScanFeatures:
    """What the SDK knows of a scan before sending it, for the duration model.

        >>> ScanFeatures.of_parts(upload.parts)   # from a prepared ``Upload``
        ScanFeatures(pages=12, images=0, size=1048576)

    ``pages``: the document's page count (None: unknown or images); ``images``: how many
    images; ``size``: bytes sent.
    """

    pages: int | None = None
    images: int = 0
    size: int = 0

    @classmethod
    def of_parts(cls, parts: Iterable[_Part]) -> ScanFeatures:
        parts = list(parts)
        pages = [p.pages for p in parts if p.pages is not None]
        images = sum(1 for p in parts if p.pages is None)
        return cls(sum(pages) if pages else None, images, sum(p.size for p in parts))

    def vector(self) -> tuple[float, float]:
        """(log of pages or images, log MiB): the regressors."""
        units = self.pages if self.pages is not None else self.images
        return math.log(max(units, 1)), math.log(max(self.size, 1) / _MIB)


_NO_FEATURES: Final = (0.0, 0.0)


@attrs.frozen
class Prior:
    """What the model assumes before it has seen a scan finish.

    ``median`` / ``sigma`` of a log-normal, worth ``weight`` observations: it only steadies
    the first fits, and a handful of real durations outweigh it.
    """

    median: float = 60.0
    sigma: float = 1.0
    weight: float = 0.5


# Imagetwin publishes no processing times. Scans of the real service were measured at
# log-normal, median about a minute, sigma about 0.5 (issue 15's trial); the prior takes that
# median with twice the spread and the weight of half an observation.
DEFAULT_PRIOR: Final = Prior()


def _truncated_moments(mu: float, sigma: float, low: float, high: float) -> tuple[float, float]:
    """Mean and variance of N(mu, sigma^2) restricted to [low, high]."""
    if low == high:
        return low, 0.0
    alpha, beta = (low - mu) / sigma, (high - mu) / sigma
    cdf_a = 0.0 if low == -math.inf else 0.5 * math.erfc(-alpha / _SQRT2)
    cdf_b = 1.0 if high == math.inf else 0.5 * math.erfc(-beta / _SQRT2)
    mass = cdf_b - cdf_a
    if mass < 1e-12:  # all the mass beyond one end: take that end
        return (high if beta < 0 else low if low != -math.inf else high), 0.0
    pdf_a = 0.0 if low == -math.inf else math.exp(-0.5 * alpha * alpha) / 2.5066282746310002
    pdf_b = 0.0 if high == math.inf else math.exp(-0.5 * beta * beta) / 2.5066282746310002
    tail_a = 0.0 if low == -math.inf else alpha * pdf_a
    tail_b = 0.0 if high == math.inf else beta * pdf_b
    ratio = (pdf_a - pdf_b) / mass
    variance = sigma * sigma * max(1.0 + (tail_a - tail_b) / mass - ratio * ratio, 0.0)
    return mu + sigma * ratio, variance


class _Sums:
    """Weighted sums of (1, x1, x2, y) products: all a least-squares solve needs."""

    __slots__ = ("w", "x1", "x1x1", "x1x2", "x1y", "x2", "x2x2", "x2y", "y", "yy")

    def __init__(self) -> None:
        self.w = self.x1 = self.x2 = self.y = 0.0
        self.x1x1 = self.x1x2 = self.x2x2 = self.x1y = self.x2y = self.yy = 0.0

    def add(self, w: float, x1: float, x2: float, ey: float, var: float) -> None:
        self.w += w
        self.x1 += w * x1
        self.x2 += w * x2
        self.y += w * ey
        self.x1x1 += w * x1 * x1
        self.x1x2 += w * x1 * x2
        self.x2x2 += w * x2 * x2
        self.x1y += w * x1 * ey
        self.x2y += w * x2 * ey
        self.yy += w * (ey * ey + var)


class DurationModel:
    """Learns how long scans take: a log-normal (per scan features) fitted to recent durations.

    >>> model = DurationModel()
    >>> for seconds in (50, 60, 70, 55, 65): model.observe(seconds)
    >>> round(model.cdf(60.0), 1)
    0.5

    A poller never sees a scan end: it sees it still running at one read and finished at the
    next, so most observations are intervals, ``observe(low, high)``. Fitting their midpoints
    (or the finishing read) biases the fit: every scan found done at its first read collapses
    onto that read's age, the fitted median creeps later, the first read with it, and so on.
    The fit is the maximum-a-posteriori log-normal for interval-censored data (``prior``
    weighs ``prior.weight`` observations), by expectation-maximisation. Pass ``features`` (a
    ``ScanFeatures``) to condition on pages / images / bytes.
    """

    def __init__(
        self,
        *,
        window: int = 200,
        min_samples: int = 5,
        prior: Prior = DEFAULT_PRIOR,
        refit_every: int | None = None,
    ) -> None:
        # Each observation: [log low, log high, x1, x2, weight, E[y], Var[y]]; E-step cached.
        self._obs: deque[list[float]] = deque()
        self._window = window
        self._min_samples = min_samples
        self._prior = prior
        self._refit_every = refit_every or max(8, window // 8)
        self._since_refit = 0
        self._sums = _Sums()
        self._mu0 = math.log(prior.median)
        self._params = (self._mu0, 0.0, 0.0, 0.0, 0.0, prior.sigma)  # a, b1, b2, m1, m2, sigma
        self._ready = False
        # Bumped at every change of the fit: lets callers cache derived values.
        self.version: int = 0

    # ---- what callers read ----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether ``min_samples`` observations (or a restored state) back the fit."""
        return self._ready

    @property
    def fit(self) -> tuple[float, float] | None:
        """(mu, sigma) of log-seconds for a typical scan, or None before ``ready``."""
        if not self._ready:
            return None
        return self._params[0], self._params[5]

    @property
    def sigma(self) -> float:
        return self._params[5]

    @property
    def observations(self) -> int:
        return len(self._obs)

    def location(self, features: ScanFeatures | None = None) -> float:
        """mu (mean log-seconds) for a scan with these features (the typical one if None)."""
        a, b1, b2, m1, m2, _ = self._params
        if features is None or (b1 == 0.0 and b2 == 0.0):
            return a
        x1, x2 = features.vector()
        return a + b1 * (x1 - m1) + b2 * (x2 - m2)

    def cdf(self, seconds: float, features: ScanFeatures | None = None) -> float:
        """P(duration <= seconds) under the fitted model (0.0 before it is ``ready``)."""
        if not self._ready or seconds <= 0:
            return 0.0
        return lognormal_cdf(seconds, self.location(features), self._params[5])

    def quantile_after(
        self, seconds: float, probability: float, features: ScanFeatures | None = None
    ) -> float:
        """The age by which a scan still running at ``seconds`` has finished with
        ``probability`` (the conditional quantile; closed form)."""
        assert self._ready
        return conditional_quantile(self.location(features), self._params[5], seconds, probability)

    # ---- learning -----------------------------------------------------------------------

    def observe(
        self, low: float, high: float | None = None, features: ScanFeatures | None = None
    ) -> None:
        """A scan took between ``low`` and ``high`` seconds (exactly ``low`` if no ``high``).

        ``low`` is its age at the last read that found it running (0: none did), ``high``
        its age when the read that found it finished was answered.
        """
        high = low if high is None else high
        log_low = math.log(low) if low > 0 else -math.inf
        log_high = max(math.log(max(high, 1e-6)), log_low)
        x1, x2 = features.vector() if features is not None else _NO_FEATURES
        self._add([log_low, log_high, x1, x2, 1.0, 0.0, 0.0])
        if len(self._obs) >= self._min_samples:
            self._ready = True

    def _add(self, obs: list[float]) -> None:
        a, b1, b2, m1, m2, sigma = self._params
        mu = a + b1 * (obs[2] - m1) + b2 * (obs[3] - m2)
        obs[5], obs[6] = _truncated_moments(mu, sigma, obs[0], obs[1])
        self._obs.append(obs)
        self._sums.add(obs[4], obs[2], obs[3], obs[5], obs[6])
        if len(self._obs) > self._window:
            old = self._obs.popleft()
            self._sums.add(-old[4], old[2], old[3], old[5], old[6])
        self._since_refit += 1
        # Few observations: a full refit costs little and each one moves the fit a lot.
        if len(self._obs) <= 2 * self._refit_every or self._since_refit >= self._refit_every:
            self._refit()
        else:
            self._solve()

    def _solve(self) -> None:
        s, prior = self._sums, self._prior
        k0 = prior.weight
        w = s.w
        if w <= 1e-9:
            self._params = (self._mu0, 0.0, 0.0, 0.0, 0.0, prior.sigma)
            self.version += 1
            return
        m1, m2, ybar = s.x1 / w, s.x2 / w, s.y / w
        c11 = max(s.x1x1 - w * m1 * m1, 0.0)
        c22 = max(s.x2x2 - w * m2 * m2, 0.0)
        c12 = s.x1x2 - w * m1 * m2
        c1y = s.x1y - w * m1 * ybar
        c2y = s.x2y - w * m2 * ybar
        # Ridge on the slopes: with no spread in a feature its slope stays 0 (plain log-normal).
        r11, r22 = c11 + _SLOPE_RIDGE, c22 + _SLOPE_RIDGE
        det = r11 * r22 - c12 * c12
        if (c11 < 1e-9 and c22 < 1e-9) or det <= 1e-12:
            b1 = b2 = 0.0
        else:
            b1 = (r22 * c1y - c12 * c2y) / det
            b2 = (r11 * c2y - c12 * c1y) / det
        a = (w * ybar + k0 * self._mu0) / (w + k0)
        explained = 2 * (b1 * c1y + b2 * c2y) - (b1 * b1 * c11 + 2 * b1 * b2 * c12 + b2 * b2 * c22)
        residual = max(s.yy - w * ybar * ybar - explained, 0.0)
        spread = residual + w * (ybar - a) ** 2 + k0 * (prior.sigma**2 + (self._mu0 - a) ** 2)
        sigma = min(max(math.sqrt(spread / (w + k0)), _MIN_SIGMA), _MAX_SIGMA)
        self._params = (a, b1, b2, m1, m2, sigma)
        self.version += 1

    def _refit(self, rounds: int = 30) -> None:
        """Full EM: recompute every E-step under the current fit until it settles."""
        self._since_refit = 0
        for _ in range(rounds):
            a, b1, b2, m1, m2, sigma = before = self._params
            sums = _Sums()
            for obs in self._obs:
                mu = a + b1 * (obs[2] - m1) + b2 * (obs[3] - m2)
                obs[5], obs[6] = _truncated_moments(mu, sigma, obs[0], obs[1])
                sums.add(obs[4], obs[2], obs[3], obs[5], obs[6])
            self._sums = sums
            self._solve()
            after = self._params
            if abs(after[0] - before[0]) < 1e-4 and abs(after[5] - before[5]) < 1e-4:
                break

    # ---- state across runs --------------------------------------------------------------

    def state(self, *, limit: int = 50) -> str:
        """The last ``limit`` observations as JSON, to start another model warm."""
        recent = list(self._obs)[-limit:]
        rows = [
            [_finite(o[0]), _finite(o[1]), round(o[2], 6), round(o[3], 6), round(o[4], 6)]
            for o in recent
        ]
        return json.dumps({"version": _STATE_VERSION, "observations": rows})

    def restore(self, state: str | Mapping[str, Any], *, weight: float = 0.5) -> int:
        """Start from another model's ``state()``: each observation counts ``weight`` of a
        new one, so what this run sees soon outweighs it. Returns how many were taken.

        Anything malformed raises ``ValueError`` and leaves the model as it was.
        """
        try:
            parsed = self._parse_state(state, weight)
        except ValueError as exc:
            raise ValueError(f"not a usable duration model state: {exc}") from None
        for obs in parsed:
            self._obs.append(obs)
            if len(self._obs) > self._window:
                self._obs.popleft()
        if parsed:
            self._refit()
            self._ready = self._ready or len(self._obs) >= self._min_samples
        return len(parsed)

    def _parse_state(self, state: str | Mapping[str, Any], weight: float) -> list[list[float]]:
        data = json.loads(state) if isinstance(state, str) else state
        if not isinstance(data, Mapping) or data.get("version") != _STATE_VERSION:
            raise ValueError("not a duration model state of a known version")
        rows = data.get("observations")
        if not isinstance(rows, list):
            # One error type for any bad state, whatever is wrong with it.
            raise ValueError("a state needs a list of observations")  # noqa: TRY004
        return [_parse_row(row, weight) for row in rows[-self._window :]]


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 6)


def _parse_row(row: object, weight: float) -> list[float]:
    if not isinstance(row, list) or len(row) != 5:
        raise ValueError("an observation is [log low, log high, x1, x2, weight]")
    low, high, x1, x2, w = row
    if low is None:
        low = -math.inf
    values = (low, high, x1, x2, w)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise ValueError("observation fields must be numbers")
    if not all(math.isfinite(v) for v in (high, x1, x2, w)) or low > high or not 0 < w <= 1:
        raise ValueError("observation out of range")
    # A restored model must not be stretched to absurd scales by a tampered file.
    if not -20.0 < high < 20.0 or abs(x1) > 50 or abs(x2) > 50:
        raise ValueError("observation out of range")
    return [float(low), float(high), float(x1), float(x2), float(w) * weight, 0.0, 0.0]


def lognormal_cdf(seconds: float, mu: float, sigma: float) -> float:
    """P(D <= seconds) for log D ~ N(mu, sigma^2)."""
    if seconds <= 0:
        return 0.0
    return 0.5 * math.erfc(-(math.log(seconds) - mu) / (sigma * _SQRT2))


def conditional_quantile(mu: float, sigma: float, age: float, probability: float) -> float:
    """The age by which a log-normal scan still running at ``age`` has finished with
    ``probability``."""
    start = lognormal_cdf(age, mu, sigma)
    goal = start + probability * (1.0 - start)
    if goal >= 1.0 - 1e-15:
        return math.inf
    if goal <= 0.0:
        return max(age, 0.0)
    return max(math.exp(mu + sigma * _STANDARD.inv_cdf(goal)), age)
