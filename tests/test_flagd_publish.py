"""``publish.flagd: true``: ``flagstone publish`` also writes the unsigned flagd export
to ``<env>/flagd.json`` next to the signed snapshot — on the local file store and on a
real S3 API server (moto on loopback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from flagstone.errors import ExportError
from flagstone.publish import publish_project
from flagstone.validate import load_valid_project
from publish_helpers import commit, envelope_payload, make_repo, set_default, signing
from s3server import S3Bucket
from test_flagd_export import check_schema

pytest_plugins = ["s3server"]

NOW = 1_795_000_000.0


def publish(root: Path) -> list[str]:
    results = publish_project(load_valid_project(root), signing(), now=lambda: NOW)
    return [r.action for r in results]


def served(document: dict[str, object], flag: str, key: str) -> object:
    core = FlagdCore()
    core.set_flags(document)
    return core.resolve_boolean_value(flag, False, EvaluationContext(key)).value


def test_flagd_json_is_published_next_to_each_snapshot(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", publish="target: file://dist\nflagd: true")
    assert publish(root) == ["published", "published"]
    for environment, version in (("staging", "1"), ("production", "1")):
        directory = root / "dist" / environment
        document = json.loads((directory / "flagd.json").read_text())
        check_schema(document)
        payload = envelope_payload((directory / "latest.json").read_bytes())
        assert document["metadata"] == {
            "flagSetId": f"demo-shop/{environment}",
            "version": version,
            "flagstoneDigest": payload["digest"],
        }
    production = json.loads((root / "dist" / "production" / "flagd.json").read_text())
    assert served(production, "checkout", "user-1") is True

    set_default(root, "production", "off")
    commit(root, "turn checkout off")
    assert publish(root) == ["unchanged", "published"]
    production = json.loads((root / "dist" / "production" / "flagd.json").read_text())
    assert production["metadata"]["version"] == "2"
    assert served(production, "checkout", "user-1") is False


def test_turning_flagd_on_later_writes_it_without_new_content(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    assert publish(root) == ["published", "published"]
    assert not (root / "dist" / "production" / "flagd.json").exists()
    config = root / "flagstone.yaml"
    config.write_text(config.read_text() + "  flagd: true\n")
    commit(root, "publish flagd too")
    assert publish(root) == ["unchanged", "unchanged"]
    document = json.loads((root / "dist" / "production" / "flagd.json").read_text())
    assert document["metadata"]["version"] == "1"


def test_a_flag_flagd_cannot_evaluate_stops_publishing_before_any_write(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", publish="target: file://dist\nflagd: true")
    (root / "flags" / "checkout" / "staging.yaml").write_text(
        "enabled: true\n"
        "rules:\n"
        "  - name: testers\n"
        "    if: {attribute: email, op: matches, value: '^[a-z]+@example\\.com$'}\n"
        "    serve: on\n"
        "default: off\n"
    )
    commit(root, "regex rule")
    with pytest.raises(ExportError) as error:
        publish(root)
    assert error.value.message.startswith(
        "flags/checkout/staging.yaml:4:9: cannot export flag 'checkout': rule 'testers': 'matches'"
    )
    assert not (root / "dist").exists()


def test_flagd_json_on_s3(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", publish=f"target: {s3_bucket.url}/flags\nflagd: true")
    assert publish(root) == ["published", "published"]
    keys = s3_bucket.object_keys()
    assert "flags/production/flagd.json" in keys
    assert "flags/staging/flagd.json" in keys
    document = json.loads(s3_bucket.read("flags/production/flagd.json"))
    check_schema(document)
    assert served(document, "checkout", "someone") is True
