"""Export one environment's snapshot payload as a flagd flag definition.

The package: ``translate`` (the flag/segment translator and the export entry points),
``clauses`` (one clause operator at a time), ``jsonlogic`` (JSONLogic building blocks
and coercion-proof type tests), ``rfc3339`` (timestamps parsed and compared in
JSONLogic) and ``refusal`` (what cannot be exported, and where it is written). Writing
``<env>/flagd.json`` next to the signed snapshot lives with the other storage writes in
``flagstone.publish``.

The export reads the COMPILED payload (docs/snapshot-format.md), the same input the
engine evaluates, so Flagstone and flagd decide from one source. Every construct is
translated to JSONLogic as flagd evaluates it (openfeature-flagd-core 2.x, which runs
panzi-json-logic plus flagd's ``fractional``, ``sem_ver``, ``starts_with`` and
``ends_with``), with guards wherever JSONLogic's loose semantics differ from
Flagstone's strict ones:

* Types. JSONLogic compares loosely (``1 == true``, ``"5" < 6``); Flagstone says a
  value of the wrong type makes a clause false. Every clause first tests the
  attribute's JSON type with operations whose results do not depend on coercion:
  ``starts_with(x, "")`` is true only for strings; ``x === x + 0`` only for numbers and
  booleans, which ``cat(x)`` then tells apart (``true``/``false``, in either case).
* Missing attributes. ``var`` gives null for absent and null values alike, which is
  Flagstone's notion of missing. ``var`` also indexes strings and lists (``a.0``,
  ``a.length``) where Flagstone only walks objects; such path parts get a guard that
  the parent is not a string or list.
* Flags are always ``ENABLED``. A flagd ``DISABLED`` flag serves the caller's code
  default; a disabled Flagstone flag serves its off variation, so it is exported as an
  enabled flag with no targeting whose ``defaultVariant`` is the off variation.
* Prerequisites do not exist in flagd: the prerequisite flag's whole decision is
  inlined and compared with the required variation.
* Splits and progressions use ``fractional`` in the ``cat`` form of docs/design.md §4
  (bit-compatible bucketing), behind a guard that the bucketing attribute is a string
  or an integer (Flagstone does not bucket other values: a split serves its first
  variation and a progression its baseline). Scheduled stages compare ``at`` with
  ``$flagd.timestamp``.
* ``semver_*`` accepts only strict SemVer 2.0.0; flagd's ``sem_ver`` also accepts a
  ``v`` prefix and pads ``1.2`` to ``1.2.0``. The guard rejects the prefix and counts
  the dots of the version core with a ``reduce`` over its first 64 characters.
* ``before``/``after`` accept RFC 3339 strings and epoch numbers; JSONLogic has no date
  type, so strings are checked character by character (calendar dates, zone, fraction)
  and converted to epoch seconds with arithmetic (days from civil), accepting exactly
  what the engine's parser accepts. Computed values are bound once with a one-element
  ``reduce``, JSONLogic having no variables.
* ``matches`` (a regular expression) has no flagd operator. Patterns that are plain
  text with ``^``/``$`` anchors and top-level ``|`` are translated to string tests;
  any other pattern is refused.

Whatever cannot be reproduced exactly raises ``ExportError`` naming the flag and the
construct (or, with ``skip_unsupported``, leaves the flag out and reports it).
"""

from flagstone.flagd_export.refusal import FlagdRefused, Place, Refusal
from flagstone.flagd_export.translate import (
    FLAGD_SCHEMA_URL,
    SEGMENT_MODES,
    FlagdExport,
    check_flagd_export,
    export_flagd,
    flagd_json,
    located_refusal,
)

__all__ = [
    "FLAGD_SCHEMA_URL",
    "SEGMENT_MODES",
    "FlagdExport",
    "FlagdRefused",
    "Place",
    "Refusal",
    "check_flagd_export",
    "export_flagd",
    "flagd_json",
    "located_refusal",
]
