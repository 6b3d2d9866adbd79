"""Azurite (Microsoft's Azure Storage emulator, from npm) on loopback, for ``az://`` tests.

``.ci/run`` installs it next to axe-core (``$TMPDIR/flagstone-azurite``) and exports
FLAGSTONE_AZURITE, the path of its ``azurite-blob`` program. Without it the tests skip,
except where the environment variable CI is set: there a missing Azurite fails the run.

The server runs once per test session, in memory, on 127.0.0.1 with a port chosen by the
operating system (read back from its start-up line), and is stopped at the end. Clients
reach it the way obstore documents for the emulator: AZURE_STORAGE_USE_EMULATOR (the
well-known development account and key) and AZURITE_BLOB_STORAGE_URL (the endpoint).

Fixtures (register with ``pytest_plugins = ["azurite"]``):

- ``azurite_server`` (session): the running :class:`AzuriteServer`.
- ``azurite_env`` (function): the variables above for this test only, with inherited
  Azure credential variables removed.
- ``azurite_container`` (function): ``azurite_env`` plus a fresh empty container.

Containers are created through Blob storage's REST API with a SharedKey signature (what
the Azure SDKs send); nothing else here bypasses obstore except reads for assertions.

PYTEST_DONT_REWRITE (imported both as a plugin and by name).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import itertools
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

import pytest

# Azurite's documented development account (public, the same in every installation).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
API_VERSION = "2021-08-06"
START_TIMEOUT = 30.0

_INHERITED_AZURE_VARIABLES = (
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_TOKEN",
    "AZURE_STORAGE_ENDPOINT",
    "AZURE_ENDPOINT",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_CONTAINER_NAME",
)

_container_counter = itertools.count(1)


def azurite_program() -> str | None:
    """The ``azurite-blob`` program: FLAGSTONE_AZURITE, the PATH, or .ci/run's install."""
    configured = os.environ.get("FLAGSTONE_AZURITE")
    if configured:
        return configured if Path(configured).exists() else None
    found = shutil.which("azurite-blob")
    if found:
        return found
    installed = Path(tempfile.gettempdir()) / "flagstone-azurite/node_modules/.bin/azurite-blob"
    return str(installed) if installed.exists() else None


@dataclass(frozen=True)
class AzuriteServer:
    host: str
    port: int

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        return {
            "AZURE_STORAGE_USE_EMULATOR": "true",
            "AZURITE_BLOB_STORAGE_URL": self.endpoint_url,
        }

    def request(
        self, method: str, path: str, query: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """A SharedKey-signed request with an empty body (path under the account)."""
        query = query or {}
        headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": API_VERSION}
        canonical_headers = "".join(f"{name}:{headers[name]}\n" for name in sorted(headers))
        canonical_query = "".join(f"\n{name}:{query[name]}" for name in sorted(query))
        # Path-style (emulator) URLs name the account twice in the signed resource.
        resource = f"/{ACCOUNT}/{ACCOUNT}/{path}{canonical_query}"
        # VERB, then eleven standard headers (all empty here), then x-ms-*, then resource.
        to_sign = f"{method}\n" + "\n" * 11 + canonical_headers + resource
        signature = hmac.new(base64.b64decode(ACCOUNT_KEY), to_sign.encode(), hashlib.sha256)
        headers["Authorization"] = (
            f"SharedKey {ACCOUNT}:{base64.b64encode(signature.digest()).decode()}"
        )
        headers["Content-Length"] = "0"
        target = f"/{ACCOUNT}/{path}"
        if query:
            target += "?" + "&".join(f"{name}={value}" for name, value in query.items())
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            connection.request(method, target, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def create_container(self, prefix: str = "flagstone-test") -> AzuriteContainer:
        name = f"{prefix}-{next(_container_counter)}-{uuid.uuid4().hex[:8]}"
        status, body = self.request("PUT", name, {"restype": "container"})
        if status != 201:
            raise RuntimeError(f"Azurite refused to create {name}: {status} {body[:200]!r}")
        return AzuriteContainer(self, name)


@dataclass(frozen=True)
class AzuriteContainer:
    server: AzuriteServer
    name: str

    @property
    def url(self) -> str:
        return f"az://{self.name}"


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    program = azurite_program()
    if program is None:
        if os.environ.get("CI"):
            pytest.fail("Azurite is missing (.ci/run installs azurite from npm)")
        pytest.skip("Azurite is not installed (npm install azurite; see .ci/run)")
    workspace = tmp_path_factory.mktemp("azurite")
    log = workspace / "azurite.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                program,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--inMemoryPersistence",
                "--extentMemoryLimit",
                "64",
                "--skipApiVersionCheck",
                "--disableTelemetry",
            ],
            cwd=workspace,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        port = _wait_for_port(process, log)
        yield AzuriteServer("127.0.0.1", port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_for_port(process: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        found = re.search(r"listens on http://127\.0\.0\.1:(\d+)", text)
        if found:
            return int(found.group(1))
        if process.poll() is not None:
            raise RuntimeError(f"Azurite exited ({process.returncode}): {text.strip()[-500:]}")
        time.sleep(0.05)
    raise RuntimeError(f"Azurite did not start within {START_TIMEOUT:.0f} s")


@pytest.fixture
def azurite_env(azurite_server: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in _INHERITED_AZURE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    environment = azurite_server.environment()
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


@pytest.fixture
def azurite_container(
    azurite_server: AzuriteServer, azurite_env: dict[str, str]
) -> AzuriteContainer:
    return azurite_server.create_container()
