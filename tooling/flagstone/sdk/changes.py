"""Which flags a new snapshot changes, for ``Client.on_change`` and the OpenFeature
``PROVIDER_CONFIGURATION_CHANGED`` event's ``flags_changed``.

A flag changed when its own compiled content differs, or when something it depends on
changed: a segment its rules or progression stages use (segments can use segments), or
a prerequisite flag. Flags added or removed count as changed. Content is compared as
canonical JSON text per flag (sorted keys; ``true`` and ``1`` differ), so two snapshots
with the same ``digest`` change nothing and the comparison is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.engine import PackedSpecs, readable_spec

Specs = Mapping[str, Mapping[str, Any]]


def changed_flags(
    old_flags: Specs, old_segments: Specs, new_flags: Specs, new_segments: Specs
) -> frozenset[str]:
    """Keys of the flags that may evaluate differently under the new snapshot. A spec
    that cannot be read (a snapshot checked on first use may hold one: see
    engine.Snapshot) counts as changed and as using nothing."""
    changed_segments = _changed_keys(old_segments, new_segments)
    if changed_segments:
        changed_segments = _close_over(
            changed_segments,
            {
                key: set(_segments_used_by_segment(spec))
                for key, spec in _readable_items(new_segments)
            },
        )
    changed = _changed_keys(old_flags, new_flags)
    if changed_segments:
        for key in new_flags:
            if key not in changed and _may_use(new_flags, key, b'"segment'):
                spec = readable_spec(new_flags, key)
                if spec is not None and not changed_segments.isdisjoint(
                    _segments_used_by_flag(spec)
                ):
                    changed.add(key)
    if not changed:
        return frozenset()
    dependencies = {}
    for key in new_flags:
        if _may_use(new_flags, key, b'"prerequisites"', b'"prerequisites":[]'):
            spec = readable_spec(new_flags, key)
            if spec is not None:
                dependencies[key] = set(_prerequisites(spec))
    return frozenset(_close_over(changed, dependencies))


def _may_use(specs: Specs, key: str, name: bytes, empty: bytes | None = None) -> bool:
    """Whether ``key``'s spec may use something named by its member ``name`` (see
    ``PackedSpecs.may_hold``: specs kept as text are read only when they may)."""
    return specs.may_hold(key, name, empty) if isinstance(specs, PackedSpecs) else True


def _readable_items(specs: Specs) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for key in specs:
        spec = readable_spec(specs, key)
        if spec is not None:
            yield key, spec


def _prerequisites(spec: Mapping[str, Any]) -> Iterator[str]:
    items = spec.get("prerequisites", ())
    for item in items if isinstance(items, list) else ():
        if isinstance(item, Mapping) and isinstance(item.get("flag"), str):
            yield item["flag"]


def _changed_keys(old: Specs, new: Specs) -> set[str]:
    changed = set(old.keys() ^ new.keys())
    packed = (
        (old, new)
        if isinstance(old, PackedSpecs) and isinstance(new, PackedSpecs) and old.form == new.form
        else None
    )
    for key in old.keys() & new.keys():
        if packed is not None and packed[0].packed(key) == packed[1].packed(key):
            continue  # the same bytes: the same spec, without reading it
        old_spec, new_spec = readable_spec(old, key), readable_spec(new, key)
        if (
            old_spec is None
            or new_spec is None
            or (old_spec is not new_spec and _text(old_spec) != _text(new_spec))
        ):
            changed.add(key)
    return changed


def _text(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _close_over(changed: set[str], uses: Mapping[str, set[str]]) -> set[str]:
    """``changed`` plus everything that uses something in it, transitively."""
    result = set(changed)
    grew = True
    while grew:
        grew = False
        for key, used in uses.items():
            if key not in result and not result.isdisjoint(used):
                result.add(key)
                grew = True
    return result


def _segments_used_by_flag(spec: Mapping[str, Any]) -> Iterator[str]:
    for rule in spec.get("rules", ()):
        if isinstance(rule, Mapping):
            yield from _segments_in_condition(rule.get("condition"))
    default = spec.get("default")
    progression = default.get("progression") if isinstance(default, Mapping) else None
    if isinstance(progression, Mapping):
        for stage in progression.get("stages", ()):
            if isinstance(stage, Mapping):
                yield from (s for s in stage.get("segments", ()) if isinstance(s, str))


def _segments_used_by_segment(spec: Mapping[str, Any]) -> Iterator[str]:
    for condition in spec.get("rules", ()):
        yield from _segments_in_condition(condition)


def _segments_in_condition(condition: Any) -> Iterator[str]:
    if not isinstance(condition, Mapping):
        return
    segment = condition.get("segment")
    if isinstance(segment, str):
        yield segment
    for group in ("all", "any"):
        for part in condition.get(group, ()):
            yield from _segments_in_condition(part)
    if "not" in condition:
        yield from _segments_in_condition(condition["not"])
