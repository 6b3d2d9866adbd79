"""FlagstoneProvider through the real OpenFeature SDK (``openfeature.api``): the five value
types, reasons and variants, error codes, the targeting key, and the provider events."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus

from flagstone.sdk import Client
from flagstone.sdk.openfeature import FlagstoneProvider
from sdk_support import (
    DAY,
    ENVIRONMENT,
    NOW,
    PROJECT,
    SnapshotHttpServer,
    fixed_flag,
    make_payload,
    new_key,
    segment,
    serve_http,
    sign,
    targeted_flag,
    version_envelope,
    wait_for,
)

KEY = new_key()
FLAGS: dict[str, Any] = {
    "dark-mode": fixed_flag(True),
    "banner": fixed_flag("hello"),
    "page-size": fixed_flag(20),
    "ratio": fixed_flag(0.25),
    "layout": fixed_flag({"columns": 3}),
    "beta": targeted_flag(["user-1"], segment="staff"),
    "early-signups": {
        **targeted_flag([]),
        "rules": [
            {
                "name": "signed up early",
                "condition": {
                    "attribute": "signup",
                    "op": "before",
                    "values": ["2026-01-01T00:00:00Z"],
                },
                "serve": {"variation": "on"},
            }
        ],
    },
}
SEGMENTS = {"staff": segment(["user-9"])}


@pytest.fixture(autouse=True)
def fresh_openfeature() -> Iterator[None]:
    api.shutdown()
    yield
    api.shutdown()


class Events:
    """Provider events received through OpenFeature's global handlers."""

    def __init__(self) -> None:
        self.received: list[tuple[ProviderEvent, EventDetails]] = []
        self._lock = threading.Lock()
        for event in ProviderEvent:
            api.add_handler(event, lambda details, event=event: self._add(event, details))

    def _add(self, event: ProviderEvent, details: EventDetails) -> None:
        with self._lock:
            self.received.append((event, details))

    def of(self, event: ProviderEvent) -> list[EventDetails]:
        """Events of this kind from Flagstone's provider (adding a handler replays the
        current status of whatever provider is set, e.g. the no-op provider's READY)."""
        with self._lock:
            return [
                details
                for kind, details in self.received
                if kind == event and details.provider_name == "flagstone"
            ]


@pytest.fixture
def latest(tmp_path: Path) -> Path:
    path = tmp_path / ENVIRONMENT / "latest.json"
    path.parent.mkdir()
    path.write_bytes(sign(make_payload(1, FLAGS, SEGMENTS), KEY))
    return path


def file_provider(path: Path, **options: Any) -> FlagstoneProvider:
    options.setdefault("clock", lambda: NOW)
    client = Client.from_file(
        path, environment=ENVIRONMENT, trusted_keys=[KEY.trusted], project=PROJECT, **options
    )
    return FlagstoneProvider(client)


def test_all_five_value_types_with_reasons_and_variants(latest: Path) -> None:
    api.set_provider_and_wait(file_provider(latest))
    client = api.get_client()
    context = EvaluationContext("user-5")

    boolean = client.get_boolean_details("dark-mode", False, context)
    assert (boolean.value, boolean.variant, boolean.reason) == (True, "v", Reason.DEFAULT)
    assert boolean.flag_metadata["version"] == 1
    assert client.get_string_value("banner", "x", context) == "hello"
    integer = client.get_integer_details("page-size", 1, context)
    assert (integer.value, integer.error_code) == (20, None)
    assert client.get_float_value("ratio", 1.0, context) == 0.25
    # An integral number flag is a float too when asked for one.
    as_float = client.get_float_details("page-size", 1.0, context)
    assert (as_float.value, type(as_float.value), as_float.error_code) == (20.0, float, None)
    assert client.get_object_value("layout", {}, context) == {"columns": 3}


def test_targeting_key_becomes_key_and_attributes_are_passed(latest: Path) -> None:
    api.set_provider_and_wait(file_provider(latest))
    client = api.get_client()
    targeted = client.get_boolean_details("beta", False, EvaluationContext("user-1"))
    assert (targeted.value, targeted.variant, targeted.reason) == (
        True,
        "on",
        Reason.TARGETING_MATCH,
    )
    member = client.get_boolean_details("beta", False, EvaluationContext("user-9"))
    assert (member.value, member.flag_metadata["rule"]) == (True, "members")
    assert client.get_boolean_value("beta", True, EvaluationContext("user-2")) is False
    # A datetime attribute is compared as a time.
    early = EvaluationContext("user-3", {"signup": datetime(2025, 6, 1, tzinfo=UTC)})
    late = EvaluationContext("user-3", {"signup": datetime(2026, 6, 1, tzinfo=UTC)})
    assert client.get_boolean_value("early-signups", False, early) is True
    assert client.get_boolean_value("early-signups", True, late) is False


def test_flag_not_found_and_type_mismatch(latest: Path) -> None:
    api.set_provider_and_wait(file_provider(latest))
    client = api.get_client()
    missing = client.get_boolean_details("no-such-flag", True)
    assert (missing.value, missing.reason, missing.error_code) == (
        True,
        Reason.ERROR,
        ErrorCode.FLAG_NOT_FOUND,
    )
    cases = [
        (client.get_integer_details, "dark-mode", 7),  # a bool is not an integer
        (client.get_float_details, "dark-mode", 1.5),
        (client.get_boolean_details, "page-size", False),
        (client.get_string_details, "page-size", "d"),
        (client.get_object_details, "banner", {"d": 1}),
        (client.get_integer_details, "ratio", 3),  # 0.25 is not an integer
    ]
    for resolve, flag, default in cases:
        details = resolve(flag, default)  # type: ignore[operator]
        assert (details.value, details.error_code) == (default, ErrorCode.TYPE_MISMATCH), flag


def test_not_ready_until_the_first_snapshot_then_ready_event(
    tmp_path: Path,
) -> None:
    server_iterator = serve_http()
    server: SnapshotHttpServer = next(server_iterator)
    try:
        server.down()
        events = Events()
        client = Client(
            server.url(f"/{ENVIRONMENT}/latest.json"),
            environment=ENVIRONMENT,
            trusted_keys=[KEY.trusted],
            project=PROJECT,
            poll_interval=0.05,
            max_backoff=0.1,
            clock=lambda: NOW,
        )
        api.set_provider(FlagstoneProvider(client, init_timeout=20))
        of_client = api.get_client()
        not_ready = of_client.get_boolean_details("dark-mode", False)
        assert (not_ready.value, not_ready.error_code) == (False, ErrorCode.PROVIDER_NOT_READY)
        assert of_client.get_provider_status() == ProviderStatus.NOT_READY

        server.put(f"/{ENVIRONMENT}/latest.json", sign(make_payload(1, FLAGS, SEGMENTS), KEY))
        server.up()
        assert wait_for(lambda: events.of(ProviderEvent.PROVIDER_READY))
        assert of_client.get_provider_status() == ProviderStatus.READY
        assert of_client.get_boolean_value("dark-mode", False) is True
    finally:
        api.shutdown()
        for _ in server_iterator:
            pass


def test_failed_initialize_reports_error_then_ready_when_a_snapshot_comes(
    tmp_path: Path,
) -> None:
    latest = tmp_path / ENVIRONMENT / "latest.json"
    latest.parent.mkdir()
    events = Events()
    client = Client(
        str(latest),
        environment=ENVIRONMENT,
        trusted_keys=[KEY.trusted],
        project=PROJECT,
        poll_interval=0.05,
        max_backoff=0.1,
        clock=lambda: NOW,
    )
    api.set_provider(FlagstoneProvider(client, init_timeout=0.2))
    assert wait_for(lambda: events.of(ProviderEvent.PROVIDER_ERROR))
    of_client = api.get_client()
    assert of_client.get_provider_status() == ProviderStatus.ERROR
    details = of_client.get_string_details("banner", "d")
    assert (details.value, details.error_code) == ("d", ErrorCode.PROVIDER_NOT_READY)

    latest.write_bytes(sign(make_payload(1, FLAGS, SEGMENTS), KEY))
    assert wait_for(lambda: events.of(ProviderEvent.PROVIDER_READY))
    assert wait_for(lambda: of_client.get_provider_status() == ProviderStatus.READY)
    assert of_client.get_string_value("banner", "d") == "hello"


def test_configuration_changed_stale_and_error_events(latest: Path) -> None:
    now = [NOW]
    provider = file_provider(latest, clock=lambda: now[0])
    api.set_provider_and_wait(provider)
    events = Events()
    # Adding a handler replays the current status: one READY, before anything changes.
    assert wait_for(lambda: len(events.of(ProviderEvent.PROVIDER_READY)) == 1)
    of_client = api.get_client()

    changed = dict(FLAGS, banner=fixed_flag("bonjour"))
    latest.write_bytes(sign(make_payload(2, changed, SEGMENTS, expires=NOW + DAY), KEY))
    assert provider.client.refresh() is True
    assert wait_for(lambda: events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED))
    assert events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)[0].flags_changed == ["banner"]
    assert of_client.get_string_value("banner", "x") == "bonjour"

    now[0] = NOW + 2 * DAY
    provider.client.refresh()
    assert wait_for(lambda: events.of(ProviderEvent.PROVIDER_STALE))
    assert of_client.get_provider_status() == ProviderStatus.STALE
    assert of_client.get_string_value("banner", "x") == "bonjour"  # still served

    latest.write_bytes(version_envelope(3, KEY, environment="staging", expires=NOW + 30 * DAY))
    provider.client.refresh()
    assert wait_for(lambda: events.of(ProviderEvent.PROVIDER_ERROR))
    error = events.of(ProviderEvent.PROVIDER_ERROR)[0]
    assert "staging" in (error.message or "")
    assert of_client.get_string_value("banner", "x") == "bonjour"

    latest.write_bytes(sign(make_payload(4, FLAGS, SEGMENTS, expires=NOW + 30 * DAY), KEY))
    provider.client.refresh()
    assert wait_for(lambda: len(events.of(ProviderEvent.PROVIDER_READY)) == 2)
    assert of_client.get_provider_status() == ProviderStatus.READY


def test_shutdown_closes_the_client(latest: Path) -> None:
    client = Client(
        str(latest),
        environment=ENVIRONMENT,
        trusted_keys=[KEY.trusted],
        project=PROJECT,
        poll_interval=0.05,
        clock=lambda: NOW,
    )
    api.set_provider_and_wait(FlagstoneProvider(client))
    assert client._thread is not None and client._thread.is_alive()
    api.shutdown()
    assert not client._thread.is_alive()
    assert api.get_provider_metadata().name != "flagstone"


def test_cached_snapshot_reason_is_cached_with_the_engine_reason_in_metadata(
    latest: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    Client.from_file(
        latest,
        environment=ENVIRONMENT,
        trusted_keys=[KEY.trusted],
        project=PROJECT,
        cache_dir=cache,
    )
    latest.unlink()  # storage gone: the restarted service has only its cache
    api.set_provider_and_wait(file_provider(latest, cache_dir=cache))
    details = api.get_client().get_boolean_details("beta", False, EvaluationContext("user-1"))
    assert (details.value, details.reason, details.error_code) == (True, Reason.CACHED, None)
    assert details.flag_metadata["engine_reason"] == "TARGETING_MATCH"
    assert api.get_client().get_provider_status() == ProviderStatus.READY


def test_async_evaluation_through_the_openfeature_client(latest: Path) -> None:
    import asyncio

    api.set_provider_and_wait(file_provider(latest))
    client = api.get_client()
    context = EvaluationContext("user-1")

    async def evaluate_all() -> list[object]:
        return [
            await client.get_boolean_value_async("beta", False, context),
            await client.get_string_value_async("banner", "x", context),
            await client.get_integer_value_async("page-size", 0, context),
            await client.get_float_value_async("ratio", 0.0, context),
            await client.get_object_value_async("layout", {}, context),
        ]

    assert asyncio.run(evaluate_all()) == [True, "hello", 20, 0.25, {"columns": 3}]
