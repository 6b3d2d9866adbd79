"""The Flagstone SDK: evaluate flags in-process from signed snapshots.

::

    from flagstone.sdk import Client

    client = Client.from_file(
        "dist/production/latest.json",
        environment="production",
        trusted_keys=[{"keyid": "…", "public": "…"}],
        project="acme-shop",
    )
    if client.bool_value("new-checkout", {"key": "user-1", "plan": "pro"}, False):
        ...

``Client`` polls any source (path, ``file://``, ``http(s)://``, ``s3://``, ``gs://``,
``az://``, ``memory://``), verifies every snapshot before using it and swaps it in
atomically; see ``flagstone.sdk.client``. The OpenFeature provider lives in
``flagstone.sdk.openfeature`` (imported on demand, so this package does not need the
OpenFeature SDK).

This package and what it imports stay clear of the toolchain: no click, ruamel,
jsonschema, PyYAML or git code.
"""

from flagstone.engine import Details
from flagstone.envelope import TrustedKey
from flagstone.sdk.client import CachedDetails, Client, Status, context_mapping
from flagstone.sdk.sources import Fetched, Source, open_source

__all__ = [
    "CachedDetails",
    "Client",
    "Details",
    "Fetched",
    "Source",
    "Status",
    "TrustedKey",
    "context_mapping",
    "open_source",
]
