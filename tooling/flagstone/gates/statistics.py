"""The statistics behind a gate's verdict.

**Ratio metrics** (errors over requests, conversions over visits) are judged by a
mixture sequential probability ratio test (mSPRT; Johari, Pekelis and Walsh, *Always
Valid Inference*, 2017/2022), the test behind Optimizely's stats engine. It stays valid
however often it is looked at: ``flagstone progress`` runs every 15 minutes and may look
at one stage hundreds of times, and the chance that it *ever* declares a regression
that is not there stays at most α. A fixed-sample test looked at that often would
declare false regressions most of the time.

For a gate the tested quantity is the *excess regression*

    D = s · (p_T − c · p_B) − a

where ``p_T`` and ``p_B`` are the treatment's and the baseline's rates, ``s`` is +1 when
lower is better (errors) and −1 when higher is better (conversions), and the tolerance
is either absolute (``a`` > 0, ``c`` = 1) or relative (``a`` = 0, ``c`` = 1 ± r). ``D > 0``
means the treatment is worse than the baseline by more than the gate tolerates. The
estimate ``D̂`` has variance ``V = p̃_T(1−p̃_T)/n_T + c²·p̃_B(1−p̃_B)/n_B`` (rates with
half an event added, so that zero events do not make ``V`` zero), and with a normal
mixing distribution N(0, τ²) the statistic is

    Λ = sqrt(V / (V + τ²)) · exp(τ² · D̂² / (2 · V · (V + τ²))).

A regression is significant when ``D̂ > 0`` and ``Λ ≥ 1/α``: equivalently when the lower
end of the always-valid confidence sequence ``D̂ ± w``, with

    w = sqrt(V · (V + τ²) / τ² · (2·ln(1/α) + ln((V + τ²) / V))),

lies above zero. Under the null (``D ≤ 0``) ``Λ`` is a non-negative supermartingale with
mean at most 1, so by Ville's inequality P(ever Λ ≥ 1/α) ≤ α: repeated looks do not
inflate the error. Only one direction (regression) can trigger, so the two-sided bound
is conservative. The test relies on the normal approximation of the rates, which is
why each arm needs ``min_samples`` before any verdict. ``τ`` (``mixing_sd``, default
0.01, one percentage point) is where the test is most powerful: the size of regression
one most wants to catch quickly.

One rollout looks at several stages and several gates; ``split_alpha`` divides α among
them (Bonferroni), so the chance of a false roll-back over a whole rollout is at most α.

**Value metrics** (p95 latency) have no such test here: the verdict is a threshold on
the two values, given only once each arm has ``min_samples`` samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_ALPHA = 0.05
DEFAULT_MIXING_SD = 0.01


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How much worse the treatment may be: ``absolute`` (in the metric's unit: a rate
    for ratio metrics) or ``relative`` (a fraction of the baseline's value)."""

    absolute: float = 0.0
    relative: float = 0.0

    def __post_init__(self) -> None:
        if self.absolute < 0 or self.relative < 0:
            raise ValueError("a tolerance is not negative")
        if self.absolute and self.relative:
            raise ValueError("a tolerance is absolute or relative, not both")

    def describe(self) -> str:
        if self.relative:
            return f"{self.relative * 100:g}% relative"
        return f"{self.absolute:g} absolute"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one gate says about one comparison.

    ``regression`` is the estimate of how much worse the treatment is than the baseline
    (positive: worse; in the metric's unit, before the tolerance); ``excess`` is the
    regression beyond the tolerance (``D̂``) and ``lower``/``upper`` bound it (ratio
    metrics: the always-valid confidence sequence; value metrics: equal to it);
    ``significant`` says the excess is above zero with the confidence asked for."""

    regression: float
    lower: float
    upper: float
    excess: float
    significant: bool
    statistic: float | None


def _coefficients(higher_is_better: bool, tolerance: Tolerance) -> tuple[float, float, float]:
    sign = -1.0 if higher_is_better else 1.0
    scale = 1.0 - tolerance.relative if higher_is_better else 1.0 + tolerance.relative
    return sign, scale, tolerance.absolute


def _smoothed_rate(events: float, trials: float) -> float:
    return (events + 0.5) / (trials + 1.0)


def msprt_ratio(
    treatment: tuple[float, float],
    baseline: tuple[float, float],
    *,
    higher_is_better: bool,
    tolerance: Tolerance,
    alpha: float = DEFAULT_ALPHA,
    mixing_sd: float = DEFAULT_MIXING_SD,
) -> Verdict:
    """The mSPRT verdict for two arms given as ``(events, trials)`` each."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    if mixing_sd <= 0:
        raise ValueError(f"mixing_sd must be positive, not {mixing_sd}")
    (events_t, trials_t), (events_b, trials_b) = treatment, baseline
    for events, trials in (treatment, baseline):
        if trials <= 0 or events < 0 or events > trials or not math.isfinite(events + trials):
            raise ValueError(
                f"an arm needs 0 <= events <= trials and trials > 0: {events}/{trials}"
            )
    sign, scale, absolute = _coefficients(higher_is_better, tolerance)
    rate_t, rate_b = events_t / trials_t, events_b / trials_b
    regression = sign * (rate_t - rate_b)
    excess = sign * (rate_t - scale * rate_b) - absolute
    smooth_t, smooth_b = _smoothed_rate(events_t, trials_t), _smoothed_rate(events_b, trials_b)
    variance = (
        smooth_t * (1 - smooth_t) / trials_t + scale**2 * smooth_b * (1 - smooth_b) / trials_b
    )
    tau2 = mixing_sd**2
    log_statistic = 0.5 * math.log(variance / (variance + tau2)) + tau2 * excess**2 / (
        2 * variance * (variance + tau2)
    )
    half_width = math.sqrt(
        variance
        * (variance + tau2)
        / tau2
        * (2 * math.log(1 / alpha) + math.log((variance + tau2) / variance))
    )
    significant = excess > 0 and log_statistic >= math.log(1 / alpha)
    return Verdict(
        regression=regression,
        lower=excess - half_width,
        upper=excess + half_width,
        excess=excess,
        significant=significant,
        statistic=math.exp(min(log_statistic, 700.0)),
    )


def value_threshold(
    treatment: float,
    baseline: float,
    *,
    higher_is_better: bool,
    tolerance: Tolerance,
) -> Verdict:
    """The threshold verdict for a value metric (no statistical claim: see the module)."""
    sign, scale, absolute = _coefficients(higher_is_better, tolerance)
    regression = sign * (treatment - baseline)
    excess = sign * (treatment - scale * baseline) - absolute
    return Verdict(
        regression=regression,
        lower=regression,
        upper=regression,
        excess=excess,
        significant=excess > 0,
        statistic=None,
    )


def split_alpha(alpha: float, stages: int, gates: int) -> float:
    """α for one gate in one stage, so that a whole rollout's false roll-back chance is at
    most ``alpha`` (Bonferroni over the stages still to judge and the gates)."""
    return alpha / max(1, stages) / max(1, gates)
