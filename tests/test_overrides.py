"""The kill-only override layer (flagstone.overrides): its payload form, verification,
and the property that an override can only ever serve a flag's off variation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flagstone.canonical import canonical_json
from flagstone.engine import DISABLED, PREREQUISITE_FAILED, Snapshot
from flagstone.envelope import TrustedKey, public_key_raw, sign_payload
from flagstone.errors import EnvelopeError
from flagstone.overrides import (
    OVERRIDE_RULE,
    OVERRIDES_PAYLOAD_TYPE,
    OverriddenDetails,
    apply_overrides,
    overridden_runner,
    parse_overrides,
    verify_overrides,
)
from publish_helpers import fixed_key
from test_engine import flag_spec, snapshot_payload

CONFORMANCE = Path(__file__).parent / "conformance"
EMERGENCY = fixed_key(21)
EMERGENCY_TRUSTED = [TrustedKey.from_public(public_key_raw(EMERGENCY))]


def entry(reason: str = "errors", expires: str = "2099-01-01T00:00:00Z") -> dict[str, Any]:
    return {"reason": reason, "by": "alice", "at": "2026-12-01T00:00:00Z", "expires": expires}


def overrides_payload(flags: dict[str, Any], version: int = 1, **top: Any) -> dict[str, Any]:
    expires = max((e.get("expires", "2099-01-01T00:00:00Z") for e in flags.values()), default=None)
    return {
        "format": "flagstone.overrides/1",
        "project": "p",
        "environment": "production",
        "version": version,
        "published_at": "2026-12-01T00:00:00Z",
        "expires": expires,
        "change": {"action": "kill", "flag": next(iter(flags), ""), "by": "alice"},
        "overrides": flags,
    } | top


def signed(
    payload: dict[str, Any], key: Any = EMERGENCY, payload_type: str = OVERRIDES_PAYLOAD_TYPE
) -> bytes:
    return sign_payload(canonical_json(payload), key, payload_type=payload_type)


def verify(envelope: bytes, now: float | None = 0.0) -> Any:
    return verify_overrides(
        envelope, EMERGENCY_TRUSTED, 1, project="p", environment="production", now=now
    )


def test_a_signed_override_set_verifies_and_parses() -> None:
    found = verify(signed(overrides_payload({"checkout": entry()})))
    assert found.version == 1
    assert found.entries["checkout"].reason == "errors"
    assert set(found.live(0.0)) == {"checkout"}


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        (signed(overrides_payload({"checkout": entry()}), key=fixed_key(7)), "valid signature"),
        (
            signed(
                overrides_payload({"checkout": entry()}),
                payload_type="application/vnd.flagstone.snapshot+json",
            ),
            "payloadType",
        ),
        (
            signed(overrides_payload({"checkout": entry()}, environment="staging")),
            "environment 'staging'",
        ),
        (signed(overrides_payload({"checkout": entry()}, project="other")), "project 'other'"),
        (signed(overrides_payload({"checkout": entry(expires="2020-01-01T00:00:00Z")})), "expired"),
        (signed(overrides_payload({"Not A Flag": entry()})), "not a flag key"),
        (signed(overrides_payload({"checkout": entry()}, version=0)), "version"),
        (signed(overrides_payload({"checkout": {"by": "x"}})), "expires"),
    ],
    ids=[
        "wrong-key",
        "snapshot-type",
        "environment",
        "project",
        "expired",
        "key",
        "version",
        "entry",
    ],
)
def test_refused_override_objects(envelope: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        verify(envelope, now=1.9e9)


def test_a_tampered_override_object_is_refused() -> None:
    envelope = json.loads(signed(overrides_payload({"checkout": entry()})))
    forged = overrides_payload({"checkout": entry(), "search": entry()})
    import base64

    envelope["payload"] = base64.standard_b64encode(canonical_json(forged)).decode()
    with pytest.raises(EnvelopeError, match="valid signature"):
        verify(json.dumps(envelope).encode())


def test_an_entry_carrying_a_variation_cannot_choose_it() -> None:
    # There is no field an entry could use to serve anything but the off variation: a
    # "variation" smuggled into an entry is ignored, the off variation is served.
    spec = flag_spec(variations={"on": True, "off": False}, off_variation="off")
    snapshot = Snapshot.from_payload(snapshot_payload({"f": spec}))
    overrides = parse_overrides(overrides_payload({"f": entry() | {"variation": "on"}}))
    applied = apply_overrides(snapshot, overrides.live(0.0), overrides.version)
    run = overridden_runner(applied.snapshot.evaluate, applied, snapshot.evaluate)
    details = run("f", {"key": "u"}, None)
    assert isinstance(details, OverriddenDetails)
    assert (details.value, details.variation, details.reason) == (False, "off", DISABLED)
    assert details.rule == OVERRIDE_RULE and details.override_reason == "errors"


def test_no_override_changes_nothing_and_costs_nothing() -> None:
    snapshot = Snapshot.from_payload(snapshot_payload({"f": flag_spec()}))
    applied = apply_overrides(snapshot, {}, 1)
    assert applied.snapshot is snapshot and not applied.killed
    run = snapshot.evaluate
    assert overridden_runner(run, applied, run) is run


# --- the property: an override never raises exposure --------------------------------


def _conformance_payloads() -> list[dict[str, Any]]:
    return [
        json.loads(path.read_text(encoding="utf-8"))["snapshot"]
        for path in sorted(CONFORMANCE.glob("*.json"))
    ]


PAYLOADS = _conformance_payloads()


@st.composite
def random_payloads(draw: st.DrawFn) -> dict[str, Any]:
    """Small snapshots with prerequisite chains, targets, rules and splits."""
    count = draw(st.integers(min_value=1, max_value=6))
    flags: dict[str, Any] = {}
    for index in range(count):
        key = f"f{index}"
        variations = {"on": f"on-{index}", "off": f"off-{index}", "mid": f"mid-{index}"}
        prerequisites = (
            [
                {"flag": f"f{other}", "variation": draw(st.sampled_from(["on", "off", "mid"]))}
                for other in draw(st.lists(st.integers(0, index - 1), max_size=2, unique=True))
            ]
            if index
            else []
        )
        targets = [
            {
                "variation": draw(st.sampled_from(list(variations))),
                "keys": draw(st.lists(st.sampled_from(["a", "b", "c"]), max_size=2, unique=True)),
            }
        ]
        rules = [
            {
                "name": "plan",
                "condition": {
                    "attribute": "plan",
                    "op": "eq",
                    "values": [draw(st.sampled_from(["pro", "free"]))],
                },
                "serve": {"variation": draw(st.sampled_from(list(variations)))},
            }
        ]
        default = draw(
            st.sampled_from(
                [
                    {"variation": "on"},
                    {"variation": "mid"},
                    {
                        "split": {
                            "bucket_by": "key",
                            "seed": key,
                            "weights": [
                                {"variation": "on", "weight": 50_000},
                                {"variation": "mid", "weight": 50_000},
                            ],
                        }
                    },
                ]
            )
        )
        flags[key] = flag_spec(
            type="string",
            variations=variations,
            off_variation=draw(st.sampled_from(["off", "mid"])),
            enabled=draw(st.booleans()),
            prerequisites=prerequisites,
            targets=targets,
            rules=rules,
            default=default,
        )
    return snapshot_payload(flags)


contexts = st.fixed_dictionaries(
    {"key": st.sampled_from(["a", "b", "c", "d", "e"])},
    optional={"plan": st.sampled_from(["pro", "free", 3])},
)


@settings(max_examples=60, deadline=None)
@given(
    payload=random_payloads() | st.sampled_from(PAYLOADS),
    data=st.data(),
    sample=st.lists(contexts, min_size=1, max_size=6),
)
def test_every_evaluation_is_unchanged_or_the_flags_off_variation(
    payload: dict[str, Any], data: st.DataObject, sample: list[dict[str, Any]]
) -> None:
    snapshot = Snapshot.from_payload(payload)
    keys = sorted(snapshot.flags)
    killed = data.draw(st.lists(st.sampled_from([*keys, "not-in-snapshot"]), unique=True))
    overrides = parse_overrides(overrides_payload({key: entry() for key in killed}, version=3))
    applied = apply_overrides(snapshot, overrides.live(0.0), overrides.version)
    run = overridden_runner(
        lambda k, c, d: applied.snapshot.evaluate(k, c, d, at=1.8e9),
        applied,
        lambda k, c, d: snapshot.evaluate(k, c, d, at=1.8e9),
    )
    for context in sample:
        for key in keys:
            before = snapshot.evaluate(key, context, None, at=1.8e9)
            after = run(key, context, None)
            spec = snapshot.flags[key]
            off = spec["off_variation"]
            if key in killed:
                assert isinstance(after, OverriddenDetails)
                assert (after.variation, after.reason) == (off, DISABLED)
                assert after.value == spec["variations"][off]
            elif after != before:
                # A flag requiring a killed flag's variation: its own off variation.
                assert after.variation == off and after.value == spec["variations"][off]
                assert after.reason == PREREQUISITE_FAILED


def test_killing_a_flag_never_switches_on_a_flag_requiring_its_off_variation() -> None:
    # Found by the property test: "upsell" requires checkout's OFF variation, so a plain
    # kill of checkout would satisfy the prerequisite and expose upsell.
    checkout = flag_spec()
    upsell = flag_spec(prerequisites=[{"flag": "checkout", "variation": "off"}])
    snapshot = Snapshot.from_payload(snapshot_payload({"checkout": checkout, "upsell": upsell}))
    assert snapshot.evaluate("upsell", {"key": "u"}).value is False  # prerequisite fails
    overrides = parse_overrides(overrides_payload({"checkout": entry()}))
    applied = apply_overrides(snapshot, overrides.live(0.0), overrides.version)
    run = overridden_runner(applied.snapshot.evaluate, applied, snapshot.evaluate)
    details = run("upsell", {"key": "u"}, None)
    assert (details.value, details.reason, details.rule) == (False, PREREQUISITE_FAILED, "checkout")
    # The flagd export, which cannot compare, disables the dependent outright.
    from flagstone.overrides import killed_payload

    exported = killed_payload(
        snapshot_payload({"checkout": checkout, "upsell": upsell}),
        {"checkout": 1},
        with_dependents=True,
    )
    assert exported["flags"]["upsell"]["enabled"] is False
