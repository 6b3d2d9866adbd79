"""``import flagstone.sdk`` stays light (issue 5, item 7; STYLE.md §2): checked in a fresh
interpreter, so modules other tests imported do not hide a regression."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN_PACKAGES = (
    "click",
    "ruamel",
    "jsonschema",
    "fastjsonschema",
    "yaml",
    "git",
    "openfeature",
    # Telemetry exporters are extras (issue 14): the counters need neither.
    "opentelemetry",
    "prometheus_client",
)
TOOLCHAIN_MODULES = (
    "flagstone.cli",
    "flagstone.loader",
    "flagstone.model",
    "flagstone.validate",
    "flagstone.lint",
    "flagstone.ownership",
    "flagstone.compile",
    "flagstone.gitops",
    "flagstone.auditlog",
    "flagstone.flag_at",
    "flagstone.diff",
    "flagstone.edit",
    "flagstone.guardrails",
    "flagstone.publish",
    "flagstone.flagd_export",
)


def imported_after(statement: str) -> set[str]:
    script = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    output = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return set(json.loads(output))


def test_import_flagstone_sdk_pulls_in_no_toolchain_code() -> None:
    modules = imported_after("import flagstone.sdk")
    assert "flagstone.sdk.client" in modules
    assert "flagstone.sdk.telemetry" in modules  # the counters: stdlib only
    forbidden = sorted(
        name
        for name in modules
        if name.split(".")[0] in FORBIDDEN_PACKAGES
        or any(name == m or name.startswith(m + ".") for m in TOOLCHAIN_MODULES)
    )
    assert forbidden == []


# Loaded on first use only (issue 18.2): RE2 when a ``matches`` rule is compiled, the
# key-serialization formats of cryptography by key tooling, ipaddress by ``cidr``;
# cryptography and datetime when the first snapshot is verified and read, sockets when
# an HTTP source first fetches, the disk cache and emergency overrides by a client given
# cache_dir or emergency_keys; logging when the SDK first logs, hashlib when it first
# digests a snapshot; dataclasses (and the inspect it pulls in) never: the SDK path's
# value classes are flagstone.records.Record subclasses.
LAZY_MODULES = (
    "dataclasses",
    "inspect",
    "logging",
    "hashlib",
    "re2",
    "cryptography",
    "cryptography.hazmat.primitives.serialization",
    "datetime",
    "socket",
    "flagstone.sdk.cache",
    "flagstone.sdk.overrides",
    "flagstone.overrides",
)


def test_import_flagstone_sdk_leaves_the_lazy_modules_unloaded() -> None:
    modules = imported_after("import flagstone.sdk")
    assert "flagstone.regex" in modules and "flagstone.envelope" in modules
    assert [name for name in LAZY_MODULES if name in modules] == []
    # ...and they are there when needed: a `matches` rule compiles RE2 on first use.
    used = imported_after(
        "import flagstone.sdk\n"
        "from flagstone.regex import compile_search\n"
        "assert compile_search('^a+b$')('aab')"
    )
    assert "re2" in used


def test_the_openfeature_provider_is_the_only_part_needing_openfeature() -> None:
    modules = imported_after("import flagstone.sdk.openfeature")
    assert "openfeature.provider" in modules
    assert not any(
        name == m or name.startswith(m + ".") for name in modules for m in TOOLCHAIN_MODULES
    )


def test_each_telemetry_exporter_needs_only_its_own_extra() -> None:
    otel = imported_after("import flagstone.sdk.telemetry_otel")
    assert "opentelemetry.metrics" in otel
    assert not any(name.split(".")[0] == "prometheus_client" for name in otel)
    prometheus = imported_after("import flagstone.sdk.telemetry_prometheus")
    assert "prometheus_client" in prometheus
    assert not any(name.split(".")[0] == "opentelemetry" for name in prometheus)
    for modules in (otel, prometheus):
        assert not any(
            name == m or name.startswith(m + ".") for name in modules for m in TOOLCHAIN_MODULES
        )
