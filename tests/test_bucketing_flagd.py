"""Bucketing is bit-compatible with openfeature-flagd-core's ``fractional`` (cat form).

Each configuration is evaluated for thousands of distinct values through ``FlagdCore``
(the reference) and through a Flagstone snapshot with the equivalent split; any
difference fails. Seeds, attributes (the targeting key, a nested string, an integer) and
weight sets (even, uneven, thin slices at the boundaries) vary across configurations.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from flagstone.bucketing import BUCKETS, bucket_text, cbor_text
from flagstone.engine import Snapshot

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-_.@äöüßéñ東京🚀"

CONFIGS = [
    # (seed, bucket_by, weights)
    ("new-checkout", "key", [("on", 25000), ("off", 75000)]),
    ("exp-2026-q4", "key", [("a", 33333), ("b", 33334), ("c", 33333)]),
    ("größe🚀", "org.name", [("x", 1), ("y", 49999), ("z", 1), ("w", 49999)]),
    ("", "key", [("p", 10000), ("q", 20000), ("r", 30000), ("s", 40000)]),
]


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 40)))


def _flagd(seed: str, bucket_by: str, weights: list[tuple[str, int]]) -> FlagdCore:
    variable = "targetingKey" if bucket_by == "key" else bucket_by
    core = FlagdCore()
    core.set_flags(
        {
            "flags": {
                "f": {
                    "state": "ENABLED",
                    "variants": {v: v for v, _ in weights},
                    "defaultVariant": weights[0][0],
                    "targeting": {
                        "fractional": [
                            {"cat": [seed, {"var": variable}]},
                            *[[v, w] for v, w in weights],
                        ]
                    },
                }
            }
        }
    )
    return core


def _flagstone(seed: str, bucket_by: str, weights: list[tuple[str, int]]) -> Snapshot:
    split = {
        "bucket_by": bucket_by,
        "seed": seed,
        "weights": [{"variation": v, "weight": w} for v, w in weights],
    }
    flag = {
        "type": "string",
        "kind": "experiment",
        "variations": {v: v for v, _ in weights},
        "off_variation": weights[0][0],
        "enabled": True,
        "prerequisites": [],
        "targets": [],
        "rules": [],
        "default": {"split": split},
    }
    return Snapshot.from_payload(
        {"format": "flagstone.snapshot/1", "version": 1, "flags": {"f": flag}, "segments": {}}
    )


def _context_pair(bucket_by: str, value: Any) -> tuple[EvaluationContext, dict[str, Any]]:
    if bucket_by == "key":
        return EvaluationContext(value, {}), {"key": value}
    outer, inner = bucket_by.split(".")
    return EvaluationContext("someone", {outer: {inner: value}}), {
        "key": "someone",
        outer: {inner: value},
    }


@pytest.mark.parametrize(("seed", "bucket_by", "weights"), CONFIGS)
def test_split_matches_flagd_fractional(
    seed: str, bucket_by: str, weights: list[tuple[str, int]]
) -> None:
    rng = random.Random(f"{seed}/{bucket_by}")
    values = {_random_text(rng) for _ in range(2600)} | {f"user-{i}" for i in range(400)}
    # Long values cross the 1-, 2- and 4-byte CBOR length headers.
    values |= {"long-" + "é" * n for n in (115, 125, 200, 33000)}
    core, snapshot = _flagd(seed, bucket_by, weights), _flagstone(seed, bucket_by, weights)
    differences = []
    for value in sorted(values):
        flagd_context, context = _context_pair(bucket_by, value)
        expected = core.resolve_string_value("f", "?", flagd_context).value
        got = snapshot.evaluate("f", context).variation
        if got != expected:
            differences.append((value, expected, got))
    assert len(values) >= 2500
    assert differences == []


def test_integer_attributes_match_flagd_decimal_text() -> None:
    weights = [("low", 30000), ("high", 70000)]
    core, snapshot = (
        _flagd("org-rollout", "org.id", weights),
        _flagstone("org-rollout", "org.id", weights),
    )
    rng = random.Random(7)
    numbers = [rng.randint(-(2**62), 2**62) for _ in range(1500)] + list(range(500))
    differences = []
    for number in numbers:
        flagd_context, context = _context_pair("org.id", number)
        expected = core.resolve_string_value("f", "?", flagd_context).value
        if snapshot.evaluate("f", context).variation != expected:
            differences.append(number)
    assert differences == []


def test_reported_bucket_is_flagds_hash_of_the_cbor_text() -> None:
    # flagd-core computes (mmh3(cbor2.dumps(text, canonical=True)) * total) >> 32; the
    # same formula with those libraries must give the bucket Details report.
    import cbor2
    import mmh3

    snapshot = _flagstone("s", "key", [("below", 42000), ("rest", 58000)])
    for key in ("user-1", "user-2", "zoë", "x" * 300, "東京" * 50):
        details = snapshot.evaluate("f", {"key": key})
        expected = (mmh3.hash(cbor2.dumps("s" + key, canonical=True), signed=False) * BUCKETS) >> 32
        assert details.bucket == expected == bucket_text("s" + key)
        assert details.variation == ("below" if expected < 42000 else "rest")


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x60"),
        (23, b"\x77"),
        (24, b"\x78\x18"),
        (255, b"\x78\xff"),
        (256, b"\x79\x01\x00"),
        (65536, b"\x7a\x00\x01\x00\x00"),
    ],
)
def test_cbor_text_headers_follow_rfc_8949(size: int, header: bytes) -> None:
    import cbor2

    text = "a" * size
    assert cbor_text(text.encode()) == header + text.encode()
    assert cbor_text(text.encode()) == cbor2.dumps(text, canonical=True)
