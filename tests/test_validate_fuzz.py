"""Property tests: whatever a file holds, validation answers with findings and never
raises; the compiled fast path and the explaining validator agree."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator

from flagstone.loader import Document
from flagstone.model import Flag, Project, ProjectConfig, ReleaseConfig, Segment, read_project
from flagstone.problems import Problem
from flagstone.validate import _fast_validator, load_schema, validate_project

BASE = read_project(Path(__file__).parent / "examples" / "valid" / "full-features")

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 200),
    st.floats(-1, 150, allow_nan=False),
    st.sampled_from(
        ["on", "off", "v1", "staff", "core", "eq", "matches", "24h", "x y", "", "(", "1.0.0"]
    ),
)
_value = st.recursive(
    _leaf,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["name", "op", "value", "values", "segment", "all", "split", "percent", "zz"]
            ),
            children,
            max_size=3,
        )
    ),
    max_leaves=8,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


def _mutate(data: Any, draw: Any) -> Any:
    """Replace one random subtree (or the root) with a random value, or delete a key."""
    data = copy.deepcopy(data)
    path = draw(st.sampled_from(_paths(data)))
    replacement = draw(_value)
    if not path:
        return replacement
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return data


def _with(doc: Document, data: Any) -> Document:
    return Document(doc.path, doc.rel, data, dict(doc.marks), dict(doc.key_marks))


def _mutated_project(draw: Any) -> Project:
    assert BASE.config is not None
    docs = [BASE.config.doc]
    for flag in BASE.flags.values():
        docs += [flag.doc, *(r.doc for r in flag.releases.values())]
    docs += [s.doc for s in BASE.segments.values()]
    victims = set(draw(st.lists(st.sampled_from([d.rel for d in docs]), min_size=1, max_size=3)))
    new: dict[str, Document] = {
        d.rel: _with(d, _mutate(d.data, draw) if d.rel in victims else copy.deepcopy(d.data))
        for d in docs
    }
    flags = {}
    for key, flag in BASE.flags.items():
        copy_flag = Flag(key, new[flag.doc.rel])
        for env, release in flag.releases.items():
            copy_flag.releases[env] = ReleaseConfig(key, env, new[release.doc.rel])
        flags[key] = copy_flag
    segments = {key: Segment(key, new[s.doc.rel]) for key, s in BASE.segments.items()}
    return Project(BASE.root, ProjectConfig(new[BASE.config.doc.rel]), flags, segments)


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_mutated_repositories_give_findings_never_exceptions(data: st.DataObject) -> None:
    project = _mutated_project(data.draw)
    problems = validate_project(project)
    for problem in problems:
        assert isinstance(problem, Problem)
        assert problem.line >= 0 and problem.col >= 0
        assert problem.message and "\n" not in problem.message
        # the generic fallback means the two validators disagreed
        assert "does not match its schema" not in problem.message


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(["project", "flag", "release", "segment"]), st.data())
def test_fast_and_explaining_validators_agree(kind: str, data: st.DataObject) -> None:
    sample = {
        "project": BASE.config.doc.data if BASE.config else {},
        "flag": BASE.flags["payments"].doc.data,
        "release": BASE.flags["checkout"].releases["production"].doc.data,
        "segment": BASE.segments["insiders"].doc.data,
    }[kind]
    value = _mutate(sample, data.draw)
    try:
        _fast_validator(kind)(value)
        fast_ok = True
    except Exception:
        fast_ok = False
    assert fast_ok == Draft7Validator(load_schema(kind)).is_valid(value)
