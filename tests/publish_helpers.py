"""Helpers for the publish tests: small real flag repositories in git, signing keys,
reading published envelopes."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flagstone.envelope import TrustedKey, public_key_raw
from flagstone.errors import ConflictError
from flagstone.keys import SigningKeys, private_key_pem, public_key_entry
from flagstone.model import Project
from flagstone.publish import PublishResult, publish_project
from flagstone.store import open_store
from flagstone.validate import load_valid_project


def fixed_key(seed: int = 7) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def signing(*keys: Ed25519PrivateKey) -> SigningKeys:
    return SigningKeys(tuple(keys or (fixed_key(),)), "test key")


def trusted(key: Ed25519PrivateKey | None = None) -> TrustedKey:
    return TrustedKey.from_public(public_key_raw(key or fixed_key()))


def write_key_file(directory: Path, key: Ed25519PrivateKey | None = None) -> Path:
    path = directory / "signing-key.pem"
    path.write_bytes(private_key_pem(key or fixed_key()))
    path.chmod(0o600)
    return path


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def make_repo(
    root: Path,
    *,
    keys: tuple[Ed25519PrivateKey, ...] | None = None,
    threshold: int = 1,
    publish: str = "target: file://dist",
) -> Path:
    """A valid two-environment flag repository, committed on branch main."""
    keys = (fixed_key(),) if keys is None else keys
    root.mkdir(parents=True, exist_ok=True)
    key_lines = "".join(
        f"    - {{keyid: {e['keyid']}, public: {e['public']}}}\n"
        for e in (public_key_entry(k) for k in keys)
    )
    (root / "flagstone.yaml").write_text(
        "project: demo-shop\n"
        "environments: [staging, production]\n"
        "teams:\n  platform: {github: '@demo/platform'}\n"
        "admins: platform\n"
        f"signing:\n  threshold: {threshold}\n"
        + (f"  keys:\n{key_lines}" if keys else "  keys: []\n")
        + "publish:\n"
        + "".join(f"  {line}\n" for line in publish.splitlines()),
        encoding="utf-8",
    )
    flag = root / "flags" / "checkout"
    flag.mkdir(parents=True, exist_ok=True)
    (flag / "flag.yaml").write_text(
        "name: Checkout\nowner: platform\nkind: operational\n"
        "variations: {on: true, off: false}\noff_variation: off\n",
        encoding="utf-8",
    )
    set_default(root, "production", "on")
    git(root, "init", "-q", "-b", "main")
    commit(root, "initial flags")
    return root


def set_default(root: Path, environment: str, variation: str) -> None:
    (root / "flags" / "checkout" / f"{environment}.yaml").write_text(
        f"enabled: true\ndefault: {variation}\n", encoding="utf-8"
    )


def commit(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "--allow-empty", "-m", message)
    return git(root, "rev-parse", "HEAD")


def envelope_payload(envelope: bytes) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    return payload


# --- racing publishers (tests/test_publish_s3.py, tests/test_cloud_storage.py) --------

PUBLISHERS = 4

Outcome = PublishResult | ConflictError


@dataclass(frozen=True)
class Racers:
    """A repository with a base commit and ``PUBLISHERS`` later commits, each checked out
    in its own worktree, ready to publish production concurrently."""

    base_project: Project
    base_sha: str
    projects: list[Project]
    sources: list[dict[str, str]]
    shas: list[str]
    worktrees: list[Path]
    key_file: Path  # the signing key, for publishers started as processes


def linear_history(root: Path, count: int) -> list[str]:
    """``count`` commits, each with different production content; returns their shas."""
    shas = []
    for index in range(count):
        (root / "flags/checkout/production.yaml").write_text(
            f"enabled: true\ntargets: {{on: [user-{index}]}}\ndefault: off\n"
        )
        shas.append(commit(root, f"target user-{index}"))
    return shas


def prepare_racers(directory: Path) -> Racers:
    root = make_repo(directory / "repo")
    base_sha = git(root, "rev-parse", "HEAD")
    shas = linear_history(root, PUBLISHERS)
    base = directory / "worktree-base"
    git(root, "worktree", "add", "-q", "--detach", str(base), base_sha)
    worktrees = []
    for index, sha in enumerate(shas):
        worktree = directory / f"worktree-{index}"
        git(root, "worktree", "add", "-q", "--detach", str(worktree), sha)
        worktrees.append(worktree)
    return Racers(
        base_project=load_valid_project(base),
        base_sha=base_sha,
        projects=[load_valid_project(w) for w in worktrees],
        # The same ref name for every worktree, as CI would give (detached HEADs have none).
        sources=[{"commit": sha, "ref": "refs/heads/main"} for sha in shas],
        shas=shas,
        worktrees=worktrees,
        key_file=write_key_file(directory),
    )


def race_assignments(rounds: int) -> list[list[int]]:
    """Which thread publishes which commit, per round: in order, reversed, then shuffled
    (threads started later tend to reach the store first, so older and newer commits win
    the first write in turn)."""
    assignments = [list(range(PUBLISHERS)), list(reversed(range(PUBLISHERS)))]
    assignments += [
        random.Random(seed).sample(range(PUBLISHERS), PUBLISHERS) for seed in range(rounds - 2)
    ]
    return assignments[:rounds]


def race(url: str, publishers: list[tuple[Project, dict[str, str]]]) -> dict[int, Outcome]:
    """Start one thread per (project, source) at the same moment; each publishes production."""
    barrier = threading.Barrier(len(publishers))
    outcomes: dict[int, Outcome] = {}

    def run(thread: int) -> None:
        project, source = publishers[thread]
        barrier.wait(timeout=30)
        try:
            outcomes[thread] = publish_project(
                project, signing(), environments=["production"], to=url, source=source
            )[0]
        except ConflictError as error:
            outcomes[thread] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(publishers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


# What one racing publisher ended with: the version it published, or why it was refused.
Ending = int | str


def race_round(
    racers: Racers, url: str, assignment: list[int], *, processes: bool = False
) -> list[str]:
    """Publish the base commit to ``url`` (so the conditional update of latest.json runs),
    race the publishers of ``assignment`` (threads of this process, or ``flagstone
    publish`` processes with ``processes``), and check the result: the newest commit
    wins latest.json, every refusal is "a newer commit got there first", every version
    number holds exactly one snapshot, no published snapshot was lost (each publisher
    that was told "published version N" finds its commit in version N), and versions
    never go backwards in history. Returns the snapshot keys."""
    publish_project(
        racers.base_project,
        signing(),
        environments=["production"],
        to=url,
        source={"commit": racers.base_sha, "ref": "refs/heads/main"},
    )
    if processes:
        endings = race_processes(url, [(racers.worktrees[i], racers.key_file) for i in assignment])
    else:
        by_thread = race(url, [(racers.projects[i], racers.sources[i]) for i in assignment])
        endings = {thread: _ending(outcome) for thread, outcome in by_thread.items()}
    outcomes = {assignment[racer]: ending for racer, ending in endings.items()}
    assert len(outcomes) == PUBLISHERS
    shas = racers.shas

    assert isinstance(outcomes[PUBLISHERS - 1], int), outcomes  # the newest always publishes
    for outcome in outcomes.values():
        if isinstance(outcome, str):
            assert "newer commit" in outcome, outcome

    store = open_store(url)
    snapshot_keys = store.list("production/snapshots")
    versions = sorted(int(k.rsplit("/", 1)[1].removesuffix(".json")) for k in snapshot_keys)
    commits_by_version = {}
    for version in versions:
        payload = envelope_payload(store.get(f"production/snapshots/{version}.json").data or b"")
        assert payload["version"] == version  # every version number used exactly once
        commits_by_version[version] = payload["source"]["commit"]
    for index, outcome in outcomes.items():
        if isinstance(outcome, int):
            assert commits_by_version[outcome] == shas[index], (index, outcome)
    latest = envelope_payload(store.get("production/latest.json").data or b"")
    assert latest["version"] == max(versions)
    assert latest["source"]["commit"] == shas[-1]
    order = [
        shas.index(commits_by_version[v]) if commits_by_version[v] in shas else -1 for v in versions
    ]
    assert order == sorted(order)
    return snapshot_keys


def _ending(outcome: Outcome) -> Ending:
    if isinstance(outcome, ConflictError):
        return outcome.message
    if outcome.action != "published" or outcome.version is None:
        return f"ended with {outcome.action}"
    return outcome.version


def race_processes(url: str, publishers: list[tuple[Path, Path]]) -> dict[int, Ending]:
    """Start one ``flagstone publish --env production`` process per (worktree, key file)
    at once and wait for all; what each one said it did."""
    started = []
    for worktree, key_file in publishers:
        command = [sys.executable, "-m", "flagstone", "publish", "--env", "production",
                   "--to", url, "--key", str(key_file), "--format", "json",
                   "--repo", str(worktree)]  # fmt: skip
        started.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    endings: dict[int, Ending] = {}
    for index, process in enumerate(started):
        out, err = process.communicate(timeout=120)
        if process.returncode == 0:
            [result] = json.loads(out)
            endings[index] = _ending_of_json(result)
        else:
            errors = [line for line in err.splitlines() if line.startswith("error: ")]
            assert process.returncode == 1 and len(errors) == 1, (process.returncode, err)
            endings[index] = errors[0]
    return endings


def _ending_of_json(result: dict[str, Any]) -> Ending:
    if result["action"] != "published":
        return f"ended with {result['action']}"
    version: int = result["version"]
    return version
