"""OpenFeature provider for Flagstone: ``FlagstoneProvider(client)``.

::

    from openfeature import api
    from flagstone.sdk import Client
    from flagstone.sdk.openfeature import FlagstoneProvider

    api.set_provider(FlagstoneProvider(Client("s3://acme-flags", environment="production",
                                              trusted_keys=[…], project="acme-shop")))
    api.get_client().get_boolean_value("new-checkout", False,
                                       EvaluationContext("user-1", {"plan": "pro"}))

The context's ``targeting_key`` becomes the ``key`` attribute; datetime attributes
become RFC 3339 UTC text (which the ``before``/``after`` operators read). Reasons and
error codes are the engine's, which already use OpenFeature's names
(``PREREQUISITE_FAILED`` is Flagstone's own; ``CACHED`` while serving the on-disk
snapshot); the variation key is the variant; the snapshot version and the deciding
rule or stage are in ``flag_metadata`` (an emergency override adds ``override_reason``
and ``override_version``; its ``rule`` is ``emergency-override``).

Events: ``initialize`` waits up to ``init_timeout`` for the first snapshot and raises
``ProviderNotReadyError`` if none came (the SDK then reports ``PROVIDER_ERROR``);
afterwards the client's status changes are emitted as ``PROVIDER_READY``,
``PROVIDER_STALE`` and ``PROVIDER_ERROR``, and every snapshot swap that changes flags
as ``PROVIDER_CONFIGURATION_CHANGED`` with ``flags_changed``.

This module needs ``openfeature-sdk``; ``import flagstone.sdk`` alone does not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from flagstone.sdk.extras import require_extra

with require_extra("openfeature", "openfeature"):
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.event import ProviderEventDetails
    from openfeature.exception import ErrorCode, ProviderNotReadyError
    from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType
    from openfeature.provider import AbstractProvider, Metadata

from flagstone.engine import ERROR, TYPE_MISMATCH, Details, InvalidContext
from flagstone.sdk.client import Client, Status

DEFAULT_INIT_TIMEOUT = 10.0

T = TypeVar("T")
ObjectValue = Sequence[FlagValueType] | Mapping[str, FlagValueType]


class FlagstoneProvider(AbstractProvider):
    """An OpenFeature provider over a :class:`flagstone.sdk.Client` (see the module doc)."""

    def __init__(
        self,
        client: Client,
        *,
        init_timeout: float = DEFAULT_INIT_TIMEOUT,
        close_client: bool = True,
    ) -> None:
        """``close_client``: ``shutdown()`` closes the client too (the default)."""
        super().__init__()
        self.client = client
        self._init_timeout = init_timeout
        self._close_client = close_client
        self._events_lock = threading.Lock()
        self._initialized = False
        self._unsubscribe: list[Callable[[], None]] = []

    def get_metadata(self) -> Metadata:
        return Metadata(name="flagstone")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        # Subscribe first, so that no change between here and the end of the wait is lost;
        # events are only forwarded once initialize has finished (the SDK itself emits
        # PROVIDER_READY or PROVIDER_ERROR for initialize).
        if not self._unsubscribe:  # initialize may run again after a shutdown
            self._unsubscribe = [
                self.client.on_status_change(self._status_changed),
                self.client.on_change(self._flags_changed),
            ]
        ready = self.client.wait_until_ready(self._init_timeout)
        with self._events_lock:
            self._initialized = True
            # Re-checked under the lock: a snapshot arriving just after the wait timed
            # out must not leave the provider in ERROR with no READY event to follow.
            if not ready and self.client.snapshot is None:
                raise ProviderNotReadyError(
                    self.client.last_error or "no Flagstone snapshot within the init timeout"
                )

    def shutdown(self) -> None:
        with self._events_lock:
            self._initialized = False
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        if self._close_client:
            self.client.close()

    def _status_changed(self, status: Status, message: str | None) -> None:
        with self._events_lock:
            if not self._initialized:
                return
            if status == Status.READY:
                self.emit_provider_ready(ProviderEventDetails())
            elif status == Status.STALE:
                self.emit_provider_stale(
                    ProviderEventDetails(message="the Flagstone snapshot in use has expired")
                )
            elif status == Status.ERROR:
                self.emit_provider_error(
                    ProviderEventDetails(message=message, error_code=ErrorCode.GENERAL)
                )

    def _flags_changed(self, changed: frozenset[str]) -> None:
        with self._events_lock:
            if not self._initialized:
                return
            self.emit_provider_configuration_changed(
                ProviderEventDetails(flags_changed=sorted(changed))
            )

    # ------------------------------------------------------------------ resolution

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, _as_bool, "a boolean")

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, _as_string, "a string")

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, _as_integer, "an integer")

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, _as_float, "a number")

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: ObjectValue,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[ObjectValue]:
        return self._resolve(
            flag_key, default_value, evaluation_context, _as_object, "an object or array"
        )

    def _resolve(
        self,
        flag_key: str,
        default_value: T,
        evaluation_context: EvaluationContext | None,
        convert: Callable[[Any], tuple[bool, T]],
        expected: str,
    ) -> FlagResolutionDetails[T]:
        # The caller's default is not handed to the engine: its Python type says little
        # about the flag (OpenFeature's float default may be an int), the conversion
        # below decides instead.
        details = self.client.evaluate(flag_key, _context(evaluation_context), None)
        if details.error_code is not None:
            return _error(default_value, details.error_code, details.error_message)
        accepted, value = convert(details.value)
        if not accepted:
            return _error(
                default_value,
                TYPE_MISMATCH,
                f"flag {flag_key!r} has the value {details.value!r}, not {expected}",
            )
        return FlagResolutionDetails(
            value=value,
            reason=details.reason,
            variant=details.variation,
            flag_metadata=_metadata(details),
        )


def _error(default_value: T, code: str, message: str | None) -> FlagResolutionDetails[T]:
    try:
        error_code = ErrorCode(code)
    except ValueError:
        error_code = ErrorCode.GENERAL
    return FlagResolutionDetails(
        value=default_value, reason=ERROR, error_code=error_code, error_message=message
    )


def _metadata(details: Details) -> dict[str, bool | int | float | str]:
    metadata: dict[str, bool | int | float | str] = {"version": details.version}
    if details.rule is not None:
        metadata["rule"] = details.rule
    if details.bucket is not None:
        metadata["bucket"] = details.bucket
    engine_reason = getattr(details, "engine_reason", None)
    if engine_reason:
        metadata["engine_reason"] = engine_reason
    override_reason = getattr(details, "override_reason", None)
    if override_reason:  # an emergency override (flagstone.overrides.OverriddenDetails)
        metadata["override_reason"] = override_reason
        metadata["override_version"] = getattr(details, "override_version", 0)
    return metadata


def _context(evaluation_context: EvaluationContext | None) -> dict[str, Any] | InvalidContext:
    if evaluation_context is None:
        return {}
    try:
        context = {
            name: (_rfc3339(value) if isinstance(value, datetime) else value)
            for name, value in evaluation_context.attributes.items()
        }
        targeting_key = evaluation_context.targeting_key
    except Exception as error:  # attributes that cannot be read: INVALID_CONTEXT, not a raise
        return InvalidContext(f"the context cannot be read ({type(error).__name__})")
    if targeting_key is not None:
        context["key"] = targeting_key
    return context


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:  # OpenFeature leaves the zone to the caller; assume UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _as_bool(value: Any) -> tuple[bool, bool]:
    return (True, value) if value.__class__ is bool else (False, False)


def _as_string(value: Any) -> tuple[bool, str]:
    return (True, value) if isinstance(value, str) else (False, "")


def _as_integer(value: Any) -> tuple[bool, int]:
    if isinstance(value, int) and value.__class__ is not bool:
        return True, value
    if isinstance(value, float) and value.is_integer():
        return True, int(value)
    return False, 0


def _as_float(value: Any) -> tuple[bool, float]:
    if isinstance(value, int | float) and value.__class__ is not bool:
        return True, float(value)
    return False, 0.0


def _as_object(value: Any) -> tuple[bool, ObjectValue]:
    if isinstance(value, dict | list):
        return True, value
    return False, {}
