"""An OpenFeature hook that keeps each evaluated variant for the current request, so the
service can label its own metrics with them (needs ``openfeature-sdk``).

::

    from openfeature import api
    from flagstone.sdk.telemetry import recording_variants, recorded_labels
    from flagstone.sdk.telemetry_openfeature import VariantRecorder

    api.add_hooks([VariantRecorder()])

    def handle(request):
        with recording_variants():                 # one per request (a context variable)
            ... api.get_client().get_boolean_value("new-checkout", False, context) ...
            for labels in recorded_labels(["new-checkout"]):
                REQUESTS.labels(**labels, code="200").inc()

The variants live in a ``contextvars.ContextVar``: each thread and each asyncio task
sees its own request's. Outside a ``recording_variants()`` block nothing is kept. The
label names are ``flagstone.sdk.telemetry.FLAG_LABEL`` / ``VARIANT_LABEL``
(``feature_flag_key``, ``feature_flag_variant``); see docs/readme/telemetry.md.
"""

from __future__ import annotations

from openfeature.flag_evaluation import FlagEvaluationDetails, FlagValueType
from openfeature.hook import Hook, HookContext, HookHints

from flagstone.sdk.telemetry import record_variant


class VariantRecorder(Hook):
    """Records ``flag key → variant`` (None when the evaluation failed) after every
    evaluation, for :func:`flagstone.sdk.telemetry.recorded_labels`."""

    def finally_after(
        self,
        hook_context: HookContext,
        details: FlagEvaluationDetails[FlagValueType],
        hints: HookHints,
    ) -> None:
        record_variant(hook_context.flag_key, details.variant)
