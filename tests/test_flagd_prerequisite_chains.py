"""flagd has no prerequisites, so the export writes a prerequisite's logic into every
flag that needs it. Long chains must neither crash the exporter (a recursion deep enough
to overflow Python's stack was an internal error) nor make the export grow with the
square of the chain: each link is translated once, and chains deeper than
``MAX_PREREQUISITE_DEPTH`` are refused with a reason, naming the cause once."""

from __future__ import annotations

import json
from typing import Any

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from flagstone.engine import Snapshot
from flagstone.flagd_export import export_flagd
from flagstone.flagd_export.translate import MAX_PREREQUISITE_DEPTH
from sdk_support import make_payload


def chain(length: int, *, root_rule: dict[str, Any] | None = None) -> dict[str, Any]:
    """``link-0000`` serves on to users in ``team`` = core; each next link needs the one
    before it to serve ``on``, and then serves on."""
    flags = {}
    for index in range(length):
        spec: dict[str, Any] = {
            "type": "boolean",
            "enabled": True,
            "variations": {"on": True, "off": False},
            "off_variation": "off",
            "prerequisites": [],
            "targets": [],
            "rules": [],
            "default": {"variation": "on"},
        }
        if index == 0:
            spec["default"] = {"variation": "off"}
            spec["rules"] = [
                root_rule
                or {
                    "name": "core",
                    "condition": {"attribute": "team", "op": "eq", "values": ["core"]},
                    "serve": {"variation": "on"},
                }
            ]
        else:
            spec["prerequisites"] = [{"flag": f"link-{index - 1:04d}", "variation": "on"}]
        flags[f"link-{index:04d}"] = spec
    return make_payload(1, flags)


def test_a_chain_within_the_bound_exports_and_flagd_agrees_with_the_engine() -> None:
    # The last flag writes in the MAX_PREREQUISITE_DEPTH links below it; one more is refused.
    longer = export_flagd(chain(MAX_PREREQUISITE_DEPTH + 2), skip_unsupported=True)
    assert [r.flag for r in longer.refused] == [f"link-{MAX_PREREQUISITE_DEPTH + 1:04d}"]
    payload = chain(MAX_PREREQUISITE_DEPTH + 1)
    export = export_flagd(payload)
    assert export.refused == ()
    core = FlagdCore()
    core.set_flags(json.loads(json.dumps(export.document)))
    snapshot = Snapshot.from_payload(payload)
    last = f"link-{MAX_PREREQUISITE_DEPTH:04d}"
    for team in ("core", "edge"):
        context = EvaluationContext("user-1", {"team": team})
        flagd = core.resolve_boolean_value(last, False, context)
        ours = snapshot.evaluate(last, {"key": "user-1", "team": team})
        assert (flagd.variant, flagd.value) == (ours.variation, ours.value)
        assert ours.value is (team == "core")


def test_a_long_chain_is_refused_past_the_bound_in_linear_time() -> None:
    payload = chain(3000)
    export = export_flagd(payload, skip_unsupported=True)
    exported = set(export.document["flags"])
    assert f"link-{MAX_PREREQUISITE_DEPTH:04d}" in exported
    refused = {r.flag: r for r in export.refused}
    assert set(refused) | exported == set(payload["flags"])
    deep = refused["link-2999"]
    assert f"chain longer than {MAX_PREREQUISITE_DEPTH} flags" in deep.reason
    assert len(deep.reason) < 400  # the cause once, not every link of the chain
    # The size of what is written stays linear: no flag carries more than the bound.
    sizes = [len(json.dumps(flag)) for flag in export.document["flags"].values()]
    assert max(sizes) < 40 * sizes[1] + 2000


def test_a_refused_root_is_named_once_by_every_dependent() -> None:
    payload = chain(
        200,
        root_rule={
            "name": "internal",
            "condition": {"attribute": "email", "op": "matches", "values": ["^[a-z]+@(a|b)c$"]},
            "serve": {"variation": "on"},
        },
    )
    export = export_flagd(payload, skip_unsupported=True)
    reasons = {r.flag: r.reason for r in export.refused}
    assert "link-0000" in reasons
    assert reasons["link-0150"].startswith("prerequisite 'link-0149': rule 'internal'")
    assert reasons["link-0150"].count("prerequisite") == 1
