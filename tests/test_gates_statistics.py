"""The statistics of metric gates (flagstone.gates.statistics): the mSPRT's promise under
repeated looks, checked by simulation, its power against a stated regression, and the
threshold rule of value metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flagstone.gates.statistics import (
    Tolerance,
    msprt_ratio,
    split_alpha,
    value_threshold,
)

ALPHA = 0.05


def _rollout(
    rng: np.random.Generator,
    p_treatment: float,
    p_baseline: float,
    *,
    stages: int,
    looks: int,
    per_look: int,
) -> bool:
    """One simulated rollout: ``stages`` stages, each judged afresh at every one of
    ``looks`` runs as traffic accumulates; True when any look declares a regression."""
    alpha = split_alpha(ALPHA, stages, 1)
    for _ in range(stages):
        events_t = events_b = trials = 0
        for _ in range(looks):
            events_t += int(rng.binomial(per_look, p_treatment))
            events_b += int(rng.binomial(per_look, p_baseline))
            trials += per_look
            verdict = msprt_ratio(
                (events_t, trials),
                (events_b, trials),
                higher_is_better=False,
                tolerance=Tolerance(),
                alpha=alpha,
            )
            if verdict.significant:
                return True
    return False


def test_false_rollback_rate_stays_below_alpha_when_looking_at_every_run() -> None:
    # 1,000 rollouts of 5 stages, each looked at on 12 runs (60 looks a rollout), with
    # no true difference: the share that ever rolls back stays at or below α, within
    # three binomial standard errors.
    rng = np.random.default_rng(20261204)
    rollouts = 1000
    false = sum(
        _rollout(rng, 0.01, 0.01, stages=5, looks=12, per_look=1500) for _ in range(rollouts)
    )
    tolerance = 3 * math.sqrt(ALPHA * (1 - ALPHA) / rollouts)
    assert false / rollouts <= ALPHA + tolerance


def test_a_fixed_sample_test_looked_at_as_often_would_not_keep_that_promise() -> None:
    # The control: a plain one-sided z-test at the same α, applied at every look,
    # declares false regressions far more often. This is why the gate is sequential.
    rng = np.random.default_rng(7)
    rollouts, hits = 300, 0
    z = 1.6449  # one-sided 5%
    for _ in range(rollouts):
        events_t = events_b = trials = 0
        for _ in range(60):
            events_t += int(rng.binomial(1500, 0.01))
            events_b += int(rng.binomial(1500, 0.01))
            trials += 1500
            p_t, p_b = events_t / trials, events_b / trials
            se = math.sqrt((p_t * (1 - p_t) + p_b * (1 - p_b)) / trials) or 1.0
            if (p_t - p_b) / se > z:
                hits += 1
                break
    assert hits / rollouts > 2 * ALPHA


def test_a_doubled_error_rate_is_caught_within_a_stated_number_of_samples() -> None:
    # 1% -> 2% errors, looked at every 500 requests per arm, α split over 5 stages:
    # caught in at least 95% of 200 runs within 10,000 requests per arm.
    rng = np.random.default_rng(11)
    alpha = split_alpha(ALPHA, 5, 1)
    caught = []
    for _ in range(200):
        events_t = events_b = trials = 0
        found = None
        while trials < 10_000:
            events_t += int(rng.binomial(500, 0.02))
            events_b += int(rng.binomial(500, 0.01))
            trials += 500
            verdict = msprt_ratio(
                (events_t, trials),
                (events_b, trials),
                higher_is_better=False,
                tolerance=Tolerance(),
                alpha=alpha,
            )
            if verdict.significant:
                found = trials
                break
        caught.append(found)
    assert sum(found is not None for found in caught) >= 190


def test_tolerance_absorbs_a_regression_within_it() -> None:
    # 1.0% vs 1.1% on a lot of traffic: a significant difference, but within 20% relative.
    within = msprt_ratio(
        (11_000, 1_000_000),
        (10_000, 1_000_000),
        higher_is_better=False,
        tolerance=Tolerance(relative=0.2),
    )
    assert not within.significant and within.excess < 0
    strict = msprt_ratio(
        (11_000, 1_000_000), (10_000, 1_000_000), higher_is_better=False, tolerance=Tolerance()
    )
    assert strict.significant and strict.lower > 0
    assert within.regression == pytest.approx(0.001)


def test_direction_higher_is_better_flips_what_counts_as_a_regression() -> None:
    fewer_conversions = msprt_ratio(
        (800, 10_000), (1_000, 10_000), higher_is_better=True, tolerance=Tolerance()
    )
    assert fewer_conversions.significant and fewer_conversions.regression == pytest.approx(0.02)
    more_conversions = msprt_ratio(
        (1_200, 10_000), (1_000, 10_000), higher_is_better=True, tolerance=Tolerance()
    )
    assert not more_conversions.significant and more_conversions.regression < 0


def test_zero_events_on_both_arms_is_no_regression_and_no_crash() -> None:
    verdict = msprt_ratio((0, 5_000), (0, 5_000), higher_is_better=False, tolerance=Tolerance())
    assert not verdict.significant and verdict.regression == 0


@pytest.mark.parametrize("arm", [(5, 0), (-1, 10), (11, 10), (float("nan"), 10)])
def test_impossible_counts_are_refused(arm: tuple[float, float]) -> None:
    with pytest.raises(ValueError):
        msprt_ratio(arm, (1, 10), higher_is_better=False, tolerance=Tolerance())


def test_value_threshold_is_a_plain_comparison_beyond_the_tolerance() -> None:
    slower = value_threshold(
        0.330, 0.300, higher_is_better=False, tolerance=Tolerance(relative=0.05)
    )
    assert slower.significant and slower.regression == pytest.approx(0.03)
    near = value_threshold(0.310, 0.300, higher_is_better=False, tolerance=Tolerance(relative=0.05))
    assert not near.significant
    absolute = value_threshold(
        0.36, 0.30, higher_is_better=False, tolerance=Tolerance(absolute=0.05)
    )
    assert absolute.significant and absolute.excess == pytest.approx(0.01)


def test_a_tolerance_is_absolute_or_relative_and_never_negative() -> None:
    with pytest.raises(ValueError):
        Tolerance(absolute=0.1, relative=0.1)
    with pytest.raises(ValueError):
        Tolerance(relative=-0.1)


def test_alpha_is_split_across_stages_and_gates() -> None:
    assert split_alpha(0.05, 5, 2) == pytest.approx(0.005)
    assert split_alpha(0.05, 0, 0) == pytest.approx(0.05)
