"""The SDK path's value classes without @dataclass (issue 18.2) behave as the frozen
dataclasses they replaced: same constructor, equality, hashing, repr, immutability."""

from __future__ import annotations

import dataclasses

import pytest

from flagstone.engine import Details
from flagstone.rollout import Progression, Stage
from flagstone.sdk.client import CachedDetails
from flagstone.sdk.telemetry import SourceStats


def test_details_compare_hash_print_and_refuse_assignment_like_a_frozen_dataclass() -> None:
    details = Details(True, "on", "TARGETING_MATCH", rule="r1", version=3)
    same = Details(value=True, variation="on", reason="TARGETING_MATCH", rule="r1", version=3)
    assert details == same and hash(details) == hash(same)
    assert details != Details(True, "on", "TARGETING_MATCH", rule="r2", version=3)
    assert repr(details) == (
        "Details(value=True, variation='on', reason='TARGETING_MATCH', error_code=None, "
        "error_message=None, rule='r1', version=3, bucket=None)"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        details.rule = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        del details.rule
    with pytest.raises(TypeError):
        hash(Details({"a": 1}, "on", "STATIC"))  # a dict value: unhashable, as before


def test_a_subclass_is_never_equal_to_its_base_and_replaced_keeps_its_fields() -> None:
    cached = CachedDetails(1, "one", "CACHED", engine_reason="SPLIT", bucket=7)
    plain = Details(1, "one", "CACHED", bucket=7)
    assert cached != plain and plain != cached
    copy = cached.replaced(value=2)
    assert type(copy) is CachedDetails
    assert (copy.value, copy.engine_reason, copy.bucket) == (2, "SPLIT", 7)
    assert cached.value == 1


def test_progression_computes_its_schedule_and_leaves_it_out_of_equality() -> None:
    stages = (
        Stage("a", 0, 1000, (), (), None, None, None),
        Stage("b", 1, 5000, (), (), 100.0, "1970-01-01T00:01:40Z", None),
    )
    progression = Progression("on", "off", 0, stages)
    assert progression.schedule == ((100.0, 1),)
    assert progression.active_index(99.0) == 0 and progression.active_index(100.0) == 1
    assert progression == Progression("on", "off", 0, stages, None, None)
    assert "schedule" not in repr(progression)


def test_source_stats_change_in_place_and_compare_by_value() -> None:
    stats = SourceStats()
    stats.fetches += 2
    assert stats == SourceStats(fetches=2) and stats.copy() == stats
    assert stats.copy() is not stats
    assert repr(stats) == (
        "SourceStats(fetches=2, fetch_failures=0, not_modified=0, rejections=0, accepted=0)"
    )
    with pytest.raises(TypeError):
        hash(stats)
