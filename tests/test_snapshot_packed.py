"""Packed snapshots (``Snapshot.from_payload(..., packed=True)``, what the SDK loads):
checked whole at load, specs kept packed, each flag compiled on its first evaluation.

They must answer exactly as the precompiled form does, refuse at load whatever it
refuses (a bad flag deep in a large snapshot included, naming its place), stay
immutable, and stay correct when many threads compile their flags at once.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from flagstone.engine import PackedSpecs, Snapshot, parse_timestamp
from flagstone.errors import SnapshotFormatError
from flagstone.sdk import Client, Status
from flagstone.sdk.changes import changed_flags
from sdk_support import ENVIRONMENT, PROJECT, make_payload, new_key, sign, targeted_flag

CONFORMANCE = sorted((Path(__file__).parent / "conformance").glob("*.json"))


def _mixed_payload(count: int) -> dict[str, Any]:
    """``count`` flags of several shapes (targets, rules, segments, a split, a
    progression, a prerequisite) and the segments they use."""
    segments = {f"seg-{i}": {"include": [f"u{i}"], "exclude": [], "rules": []} for i in range(5)}
    flags: dict[str, Any] = {}
    for i in range(count):
        flag = targeted_flag([f"u{i}"], segment=f"seg-{i % 5}")
        if i % 3 == 1:
            flag["rules"].append(
                {
                    "name": "pro",
                    "condition": {"attribute": "plan", "op": "eq", "values": ["pro"]},
                    "serve": {"variation": "on"},
                }
            )
        if i % 4 == 2:
            flag["default"] = {
                "split": {
                    "bucket_by": "key",
                    "seed": f"f{i}",
                    "weights": [
                        {"variation": "on", "weight": 30000},
                        {"variation": "off", "weight": 70000},
                    ],
                }
            }
        if i % 7 == 3 and i > 0:
            flag["prerequisites"] = [{"flag": f"f{i - 1}", "variation": "on"}]
        flags[f"f{i}"] = flag
    return make_payload(1, flags, segments)


CONTEXTS: list[dict[str, Any]] = [
    {},
    {"key": "u1"},
    {"key": "u2", "plan": "pro"},
    {"key": "someone", "plan": "free"},
    {"key": "u4", "plan": "pro", "email": "a@b"},
    *({"key": f"user-{n}", "plan": "pro" if n % 2 else "free"} for n in range(20)),
]


@pytest.mark.parametrize("path", CONFORMANCE, ids=lambda p: p.stem)
def test_packed_answers_every_conformance_vector_as_the_precompiled_form(path: Path) -> None:
    vectors = json.loads(path.read_text(encoding="utf-8"))
    eager = Snapshot.from_payload(vectors["snapshot"])
    packed = Snapshot.from_payload(vectors["snapshot"], packed=True)
    assert isinstance(packed.flags, PackedSpecs)
    for case in vectors["cases"]:
        at = parse_timestamp(case["at"]) if case["at"] is not None else None
        arguments = (case["flag"], case["context"], case.get("default"))
        assert packed.evaluate(*arguments, at=at) == eager.evaluate(*arguments, at=at)
        assert packed.flag_type(case["flag"]) == eager.flag_type(case["flag"])
        if isinstance(case["context"], dict):
            rule = packed.matching_rule(case["flag"], case["context"])
            assert rule == eager.matching_rule(case["flag"], case["context"])


def test_a_bad_flag_deep_in_a_large_snapshot_is_refused_at_load_naming_its_place() -> None:
    payload = _mixed_payload(3000)
    payload["flags"]["f2998"]["default"]["split"]["weights"][1]["variation"] = "nope"
    with pytest.raises(SnapshotFormatError, match=r"flags\.f2998\.default\.split\.weights\[1\]"):
        Snapshot.from_payload(payload, owned=True, packed=True)
    payload = _mixed_payload(3000)
    payload["flags"]["f2999"]["prerequisites"] = [{"flag": "f2999", "variation": "on"}]
    with pytest.raises(SnapshotFormatError, match="prerequisite cycle"):
        Snapshot.from_payload(payload, packed=True)


def test_the_client_keeps_its_last_good_snapshot_when_a_large_one_has_a_bad_flag(
    tmp_path: Path,
) -> None:
    key = new_key()
    good = _mixed_payload(2000)
    path = tmp_path / "latest.json"
    path.write_bytes(sign(good, key))
    client = Client.from_file(
        path, environment=ENVIRONMENT, trusted_keys=[key.trusted], project=PROJECT
    )
    assert client.version == 1
    bad = _mixed_payload(2000)
    bad["version"] = 2
    bad["flags"]["f1999"]["rules"][0]["condition"] = {"segment": "no-such-segment"}
    bad["digest"] = make_payload(2, bad["flags"], bad["segments"])["digest"]
    path.write_bytes(sign(bad, key))
    assert client.refresh() is False
    assert client.version == 1
    assert client.status == Status.ERROR
    assert "flags.f1999.rules[0].condition" in (client.last_error or "")
    assert client.bool_value("f1999", {"key": "u1999"}) is True


def test_packed_specs_are_fresh_copies_the_caller_cannot_change() -> None:
    snapshot = Snapshot.from_payload(_mixed_payload(10), packed=True)
    spec = snapshot.flags["f1"]
    assert spec["variations"] == {"on": True, "off": False}
    spec["variations"]["on"] = "changed"  # type: ignore[index]
    assert snapshot.flags["f1"]["variations"]["on"] is True
    assert snapshot.evaluate("f1", {"key": "u1"}).value is True
    assert len(snapshot.flags) == 10 and "f9" in snapshot.flags and "f10" not in snapshot.flags
    assert list(snapshot.segments) == [f"seg-{i}" for i in range(5)]


def test_specs_that_are_not_plain_json_stay_unpacked() -> None:
    class Spec(dict[str, Any]):
        pass

    payload = _mixed_payload(3)
    payload["flags"]["f0"] = Spec(payload["flags"]["f0"])
    snapshot = Snapshot.from_payload(payload, packed=True)
    assert not isinstance(snapshot.flags, PackedSpecs)
    assert snapshot.evaluate("f0", {"key": "u0"}).value is True


def test_threads_compiling_the_same_flags_at_once_agree_with_the_precompiled_form() -> None:
    payload = _mixed_payload(300)
    eager = Snapshot.from_payload(payload)
    expected = {
        (k, i): eager.evaluate(k, c) for k in payload["flags"] for i, c in enumerate(CONTEXTS)
    }
    packed = Snapshot.from_payload(payload, packed=True)
    barrier = threading.Barrier(6)
    mismatches: list[Any] = []

    def evaluate_everything(offset: int) -> None:
        barrier.wait()
        keys = list(payload["flags"])
        for n in range(len(keys)):
            key = keys[(n * 7 + offset) % len(keys)]
            for i, context in enumerate(CONTEXTS):
                if packed.evaluate(key, context) != expected[key, i]:
                    mismatches.append((key, i))

    threads = [threading.Thread(target=evaluate_everything, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert mismatches == []


def test_changes_between_packed_snapshots_are_the_changes_between_their_specs() -> None:
    old_payload = _mixed_payload(40)
    new_payload = _mixed_payload(40)
    new_payload["flags"]["f5"]["targets"][0]["keys"].append("extra")
    new_payload["segments"]["seg-2"]["include"].append("extra")
    new_payload["flags"]["f40"] = targeted_flag(["x"])
    del new_payload["flags"]["f0"]
    expected = changed_flags(
        old_payload["flags"], old_payload["segments"], new_payload["flags"], new_payload["segments"]
    )
    old, new = (Snapshot.from_payload(p, packed=True) for p in (old_payload, new_payload))
    assert changed_flags(old.flags, old.segments, new.flags, new.segments) == expected
    assert {"f0", "f5", "f40", "f2", "f7"} <= expected
    assert changed_flags(old.flags, old.segments, old.flags, old.segments) == frozenset()


def test_copies_of_a_flag_pass_and_one_differing_only_in_a_value_type_is_refused() -> None:
    # Equal specs are checked once (engine._check_flags); `1` equals `true` in Python, but
    # the copy serving it is another spec, checked in full and refused with its place.
    flags = {f"c{i}": targeted_flag([], segment="seg-0") for i in range(3000)}
    segments = {"seg-0": {"include": ["u0"], "exclude": [], "rules": []}}
    payload = make_payload(1, flags, segments)
    snapshot = Snapshot.from_payload(payload, packed=True)
    assert snapshot.evaluate("c2999", {"key": "u0"}).value is True
    payload["flags"]["c2999"]["variations"]["on"] = 1
    assert payload["flags"]["c2999"] == payload["flags"]["c0"]
    with pytest.raises(SnapshotFormatError, match=r"flags\.c2999\.variations\.on"):
        Snapshot.from_payload(payload, owned=True, packed=True)
