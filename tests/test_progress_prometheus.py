"""``flagstone progress`` end to end against a real Prometheus server.

Three loopback services (one Prometheus job) evaluate ``new-checkout`` through the SDK for bounded synthetic
traffic and count requests and errors labelled with the variation each request got;
the test sets each variation's error rate. A real Prometheus (Debian's ``prometheus``)
scrapes them every second. Then ``progress`` judges three repositories whose only
difference is the job their metric queries read:

* healthy traffic, bake done → advance (and ``--apply`` opens the pull request);
* the new variation's error rate doubled → roll back;
* too little traffic → hold, saying what is missing.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flagstone.canonical import canonical_json
from flagstone.compile import compile_environment
from flagstone.envelope import sign_payload
from flagstone.keys import private_key_pem, public_key_entry
from flagstone.model import read_project
from flagstone.sdk import Client
from gitrepo import GitRepo, run_cli
from prometheus_support import MetricsService, PrometheusServer, prometheus_binary, start_prometheus
from publish_helpers import fixed_key
from sdk_support import new_key

STAGE_ENTERED = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")

PROJECT_YAML = """\
project: acme-shop
environments: [staging, production]
teams:
  checkout-eng: {github: "@acme/checkout-eng"}
  platform: {github: "@acme/platform"}
admins: platform
metric_sources:
  prom: {provider: prometheus, url_env: FLAGSTONE_PROMETHEUS_URL}
metrics:
  error-rate:
    source: prom
    kind: ratio
    better: lower
    numerator: 'sum(increase(checkout_errors_total{service="JOB",feature_flag_key="{flag}",feature_flag_variant="{variation}"}[{window}]))'
    denominator: 'sum(increase(checkout_requests_total{service="JOB",feature_flag_key="{flag}",feature_flag_variant="{variation}"}[{window}]))'
progress:
  alpha: 0.05
signing:
  emergency:
    threshold: 1
    keys:
      - {keyid: KEYID, public: PUBLIC}
publish:
  target: TARGET
"""

FLAG_YAML = """\
name: New checkout
description: Rebuilt checkout.
owner: checkout-eng
kind: release
temporary: true
expires: "2027-06-01"
variations: {on: true, off: false}
off_variation: off
"""

RELEASE_YAML = """\
enabled: true
default:
  progression:
    variation: on
    baseline: off
    current: half
    stages:
      - {name: one, percent: 1}
      - {name: half, percent: 50, bake: 1h}
      - {name: ga, percent: 100}
    gates:
      - {metric: error-rate, max_regression: {relative: 0.1}, min_samples: 1000}
"""


class CheckoutService:
    """A loopback service: each synthetic request is evaluated through the SDK and
    counted by variation; errors follow the error rate the test set for the variation
    (exactly: every 1/rate-th request of that variation fails). Its ``/metrics`` labels
    every series with the service's name, so one Prometheus job scrapes all scenarios."""

    def __init__(self, name: str, client: Client, error_rates: dict[str, float]) -> None:
        self.name = name
        self.client = client
        self.error_rates = error_rates
        self.requests = {"on": 0, "off": 0}
        self.errors = {"on": 0, "off": 0}
        self.lock = threading.Lock()
        self.http = MetricsService(self.exposition)

    def serve(self, user: str) -> None:
        # The labels the SDK gives a service for its own request metrics: the same
        # ones a gate's query selects with {flag} and {variation}.
        [labels] = self.client.variation_labels({"key": user}, flags=["new-checkout"])
        assert labels["feature_flag_key"] == "new-checkout"
        variation = labels["feature_flag_variant"]
        with self.lock:
            count = self.requests[variation]
            self.requests[variation] = count + 1
            rate = self.error_rates[variation]
            if int((count + 1) * rate) > int(count * rate):
                self.errors[variation] += 1

    def exposition(self) -> bytes:
        with self.lock:
            lines = [
                "# TYPE checkout_requests_total counter",
                "# TYPE checkout_errors_total counter",
            ]
            for variant in ("on", "off"):
                labels = (
                    f'service="{self.name}",feature_flag_key="new-checkout",'
                    f'feature_flag_variant="{variant}"'
                )
                lines.append(f"checkout_requests_total{{{labels}}} {self.requests[variant]}")
                lines.append(f"checkout_errors_total{{{labels}}} {self.errors[variant]}")
        return ("\n".join(lines) + "\n").encode()

    def close(self) -> None:
        self.http.close()
        self.client.close()


SCENARIOS = {
    # name: (error rate of on, error rate of off, requests)
    "healthy": (0.01, 0.01, 10_000),
    "doubled": (0.02, 0.01, 10_000),
    "sparse": (0.01, 0.01, 300),
}


EMERGENCY = fixed_key(31)


def _make_repo(path: Path, job: str) -> GitRepo:
    repo = GitRepo(path)
    repo.clock = STAGE_ENTERED
    entry = public_key_entry(EMERGENCY)
    text = PROJECT_YAML.replace("JOB", job).replace("KEYID", entry["keyid"])
    text = text.replace("PUBLIC", entry["public"]).replace(
        "TARGET", (path.parent / f"{job}-store").as_uri()
    )
    repo.write("flagstone.yaml", text)
    repo.write("flags/new-checkout/flag.yaml", FLAG_YAML)
    repo.write("flags/new-checkout/production.yaml", RELEASE_YAML)
    repo.write("flags/new-checkout/staging.yaml", "enabled: false\n")
    repo.commit("Roll new-checkout out to half", date=STAGE_ENTERED)
    return repo


def _client_for(root: Path, tmp: Path) -> Client:
    key = new_key()
    payload = compile_environment(
        read_project(root),
        "production",
        version=1,
        published_at=time.time(),
        expires=time.time() + 86400,
    )
    path = tmp / "latest.json"
    path.write_bytes(sign_payload(canonical_json(payload), [key.private]))
    return Client.from_file(
        path, environment="production", project="acme-shop", trusted_keys=[key.trusted]
    )


def _value(server: PrometheusServer, expression: str) -> float | None:
    result = server.query(expression)
    return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    binary = prometheus_binary()
    base = tmp_path_factory.mktemp("progress-world")
    repos, services = {}, {}
    try:
        for name, (on_rate, off_rate, _) in SCENARIOS.items():
            repos[name] = _make_repo(base / name, name)
            (base / f"{name}-snapshot").mkdir()
            client = _client_for(repos[name].path, base / f"{name}-snapshot")
            services[name] = CheckoutService(name, client, {"on": on_rate, "off": off_rate})
        targets = [service.http.target for service in services.values()]
        with start_prometheus(binary, targets, base / "prometheus") as prometheus:
            # Counters at zero are scraped first, so increase() counts all the traffic.
            assert prometheus.wait_for(
                lambda: _value(prometheus, "count(checkout_requests_total)") == 6.0
            )
            for name, (_, _, count) in SCENARIOS.items():
                for index in range(count):
                    services[name].serve(f"user-{index}")
            for name, (_, _, count) in SCENARIOS.items():
                expression = f'sum(checkout_requests_total{{service="{name}"}})'
                assert prometheus.wait_for(lambda e=expression, c=count: _value(prometheus, e) == c)
            yield {"repos": repos, "services": services, "prometheus": prometheus}
    finally:
        for service in services.values():
            service.close()


def _progress(
    world: dict[str, object], name: str, *args: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    prometheus = world["prometheus"]
    assert isinstance(prometheus, PrometheusServer)
    monkeypatch.setenv("FLAGSTONE_PROMETHEUS_URL", prometheus.url)
    repo = world["repos"][name]  # type: ignore[index]
    return run_cli(["progress", *args], repo.path)


def test_healthy_traffic_advances_after_the_bake(
    world: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = _progress(world, "healthy", "--format", "json", monkeypatch=monkeypatch)
    assert code == 0, err
    [decision] = json.loads(out)
    assert decision["action"] == "advance", decision["reasons"]
    assert decision["next_stage"] == "ga"
    [gate] = decision["gates"]
    assert gate["status"] == "passed"
    on, off = gate["treatment"], gate["baseline"]
    services = world["services"]
    served = services["healthy"].requests  # type: ignore[index]
    # What Prometheus reports is what the service counted, scaled alike on both arms by
    # increase()'s extrapolation to the end of the window.
    assert on["samples"] >= served["on"] and off["samples"] >= served["off"]
    assert on["samples"] / off["samples"] == pytest.approx(served["on"] / served["off"], rel=0.01)
    assert on["value"] == pytest.approx(0.01, abs=0.002)
    assert 4000 < served["on"] < 6000  # the 50% stage really split the traffic


def test_a_doubled_error_rate_rolls_back(
    world: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = _progress(world, "doubled", "--format", "markdown", monkeypatch=monkeypatch)
    assert code == 0, err
    assert "`new-checkout` in production: **ROLL BACK**" in out
    assert "significant regression on error-rate" in out
    code, out, _ = _progress(world, "doubled", "--format", "json", monkeypatch=monkeypatch)
    [decision] = json.loads(out)
    assert decision["action"] == "rollback"
    [gate] = decision["gates"]
    assert gate["status"] == "regression"
    assert gate["treatment"]["value"] == pytest.approx(0.02, abs=0.003)
    assert gate["verdict"]["lower"] > 0


def test_too_little_traffic_holds_and_says_what_is_missing(
    world: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = _progress(world, "sparse", monkeypatch=monkeypatch)
    assert code == 0, err
    assert "new-checkout [production] hold" in out
    assert "too few samples" in out and "of 1000" in out


def test_apply_opens_one_pull_request_and_reruns_reuse_it(
    world: dict[str, object], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    repo = world["repos"]["healthy"]  # type: ignore[index]
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    repo.git("remote", "add", "origin", str(origin))
    repo.git("push", "-q", "origin", "main")
    gh_log = tmp_path / "gh.log"
    gh = tmp_path / "gh"
    gh.write_text(
        textwrap.dedent(f"""\
        #!/usr/bin/env python3
        # Stand-in GitHub CLI: records each call; a PR exists once `pr create` ran.
        import json, sys
        from pathlib import Path
        log = Path({str(gh_log)!r})
        calls = log.read_text().splitlines() if log.exists() else []
        with log.open("a") as out:
            out.write(json.dumps(sys.argv[1:]) + "\\n")
        if sys.argv[1:3] == ["pr", "list"]:
            made = any(json.loads(c)[:2] == ["pr", "create"] for c in calls)
            print(json.dumps([{{"number": 41, "url": "https://example.invalid/pull/41"}}] if made else []))
        elif sys.argv[1:3] == ["pr", "create"]:
            print("https://example.invalid/pull/41")
        """)
    )
    gh.chmod(gh.stat().st_mode | stat.S_IXUSR)
    env = {
        "GIT_AUTHOR_NAME": "Flagstone Bot",
        "GIT_AUTHOR_EMAIL": "bot@flagstone.invalid",
        "GIT_COMMITTER_NAME": "Flagstone Bot",
        "GIT_COMMITTER_EMAIL": "bot@flagstone.invalid",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for _ in range(2):
        code, _, err = _progress(
            world, "healthy", "--apply", "--gh", str(gh), monkeypatch=monkeypatch
        )
        assert code == 0, err
    calls = [json.loads(line) for line in gh_log.read_text().splitlines()]
    creates = [c for c in calls if c[:2] == ["pr", "create"]]
    assert len(creates) == 1
    assert (
        creates[0][creates[0].index("--head") + 1] == "flagstone/progress/new-checkout-production"
    )
    assert any(c[:2] == ["pr", "edit"] and c[2] == "41" for c in calls)  # the rerun updated it
    assert "updated pull request #41" in err
    branch = subprocess.run(
        [
            "git",
            "--git-dir",
            str(origin),
            "show",
            "flagstone/progress/new-checkout-production:flags/new-checkout/production.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "current: ga" in branch
    body = subprocess.run(
        [
            "git",
            "--git-dir",
            str(origin),
            "log",
            "-1",
            "--format=%B",
            "flagstone/progress/new-checkout-production",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert body.startswith("progress: advance new-checkout in production to ga")
    assert "| error-rate (lower is better) |" in body
    # The caller's work tree is untouched.
    assert "current: half" in (repo.path / "flags/new-checkout/production.yaml").read_text()
    worktrees = repo.path / ".git" / "worktrees"
    assert not worktrees.exists() or os.listdir(worktrees) == []


def test_apply_rolls_back_through_the_emergency_kill_once(
    world: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = world["repos"]["doubled"]  # type: ignore[index]
    code, _, err = _progress(world, "doubled", "--apply", monkeypatch=monkeypatch)
    assert code == 0, err
    assert "no emergency key: run `flagstone kill new-checkout --env production --emergency" in err
    assert not (repo.path.parent / "doubled-store" / "production" / "overrides.json").exists()

    monkeypatch.setenv("FLAGSTONE_EMERGENCY_KEY", private_key_pem(EMERGENCY).decode())
    code, out, err = _progress(
        world, "doubled", "--apply", "--format", "json", monkeypatch=monkeypatch
    )
    assert code == 0, err
    assert json.loads(out)[0]["action"] == "rollback"  # the kill's own lines go to stderr
    assert "emergency kill published" in err and "killed new-checkout in production" in err
    envelope = json.loads(
        (repo.path.parent / "doubled-store" / "production" / "overrides.json").read_bytes()
    )
    payload = json.loads(base64.b64decode(envelope["payload"]))
    entry = payload["overrides"]["new-checkout"]
    assert "significant regression on error-rate" in entry["reason"]
    assert "flagstone progress" in entry["by"]
    # A rerun sees the override in force and does not kill again.
    code, _, err = _progress(world, "doubled", "--apply", monkeypatch=monkeypatch)
    assert code == 0, err
    assert "already killed by emergency override (overrides version 1)" in err
