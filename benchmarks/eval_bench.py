"""Evaluation speed: Flagstone's engine against LaunchDarkly's Python server SDK and
openfeature-flagd-core's FlagdCore, on equivalent definitions, in one run.

Cases (issue 3):
  (a) a boolean flag with no rules;
  (b) three rules — tier in [gold, platinum], email starts_with "qa-",
      app_version semver_lt "2.0.0" — and a 25% rollout default;
  (c) (b) behind a prerequisite (flag (a) must serve "on"). flagd has no
      prerequisites, so it has no (c) figure;
  (d) a string flag with 20 rules, 10 ``matches`` with real regular expressions and 10
      ``starts_with``, most contexts matching none (issue 18). flagd has no regular
      expressions, so it has no (d) figure;
  (e) semver-heavy traffic: two ``semver_*`` rules over contexts that carry 10,000
      distinct versions, visited in a cycle (the pattern that defeats a parse cache
      smaller than the version population).

Every SDK evaluates the same 100,000 distinct contexts (built beforehand, in each SDK's
own context type, so context construction is not timed). A run is one pass over all
contexts; runs of the SDKs are interleaved and timed in process CPU time (robust to
other load on the machine); the figure is the median over --repeats runs, in µs per
evaluation, followed by the ratios peer / Flagstone. LaunchDarkly runs from a file data source with events
and diagnostics off and no network; its cheapest call, ``variation``, is timed.

    python benchmarks/eval_bench.py [--contexts 100000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flagstone.engine import Snapshot

TIERS = ["bronze", "silver", "gold", "platinum", None]
VERSIONS = [
    f"{major}.{minor}.{patch}" for major in (1, 2, 3) for minor in range(4) for patch in range(3)
]
VERSIONS += ["2.0.0-rc.1", "1.9.9-beta.2"]


# (d): ten regular expressions of the kinds flag rules use (e-mail domains, key shapes,
# user agents, plan names) and ten prefixes. The dialect both engines accept alike.
REGEXES = [
    r"@(acme|initech)\.com$",
    r"^[a-z]+\.[a-z]+@partner\.example$",
    r"^user-[0-9]{7}$",
    r"(?i)^internal-",
    r"@(staging|qa)\.",
    r"^svc-[a-z]+-[0-9]+$",
    r"Mozilla/5\.0 \(iPhone",
    r"^(alpha|beta|gamma)-tester",
    r"[0-9]{3}-[0-9]{4}@",
    r"\+test[0-9]*@",
]
PREFIXES = ["ops-", "sre-", "admin-", "root@", "beta-", "canary-", "ci-", "bot-", "test-", "tmp-"]
MATCHING_LOGINS = [
    "wile@acme.com",
    "jane.doe@partner.example",
    "user-1234567",
    "INTERNAL-audit",
    "someone@qa.example.com",
    "svc-billing-7",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)",
    "beta-tester-9",
    "555-1234@phone.example",
    "me+test42@example.com",
    "ops-oncall",
    "canary-eu",
]
# (e): 10,000 distinct versions.
SEMVER_POPULATION = [f"{m}.{n}.{p}" for m in range(1, 5) for n in range(50) for p in range(50)]


def make_contexts(count: int) -> list[dict[str, Any]]:
    rng = random.Random(20261126)
    contexts = []
    for i in range(count):
        context: dict[str, Any] = {"key": f"user-{i}"}
        tier = rng.choice(TIERS)
        if tier is not None:
            context["tier"] = tier
        context["email"] = ("qa-" if rng.random() < 0.05 else "") + f"person{i}@example.com"
        context["app_version"] = rng.choice(VERSIONS)
        context["client_version"] = SEMVER_POPULATION[i % len(SEMVER_POPULATION)]
        # One context in ten matches one of (d)'s rules.
        context["login"] = (
            rng.choice(MATCHING_LOGINS) if rng.random() < 0.1 else f"person{i}@example.com"
        )
        # (g)'s split is bucketed by an account, shared by ten users.
        context["account"] = f"account-{i // 10}"
        contexts.append(context)
    return contexts


def regex_rules() -> list[tuple[str, str, str]]:
    """(name, operator, value) of case (d)'s 20 rules, on the ``login`` attribute."""
    rules = [(f"regex {i}", "matches", pattern) for i, pattern in enumerate(REGEXES)]
    rules += [(f"prefix {i}", "starts_with", prefix) for i, prefix in enumerate(PREFIXES)]
    return rules


SEMVER_RULES = [("old", "semver_lt", "1.10.0"), ("pinned", "semver_eq", "3.25.25")]
# (f): a segment listing 1,000 user keys (one context in a hundred of 100,000), used by
# a rule together with an attribute rule.
SEGMENT_KEYS = [f"user-{i * 100}" for i in range(1000)]


# --- Flagstone ---------------------------------------------------------------------


def flagstone_payload() -> dict[str, Any]:
    boolean = {"on": True, "off": False}

    def flag(**fields: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "type": "boolean",
            "kind": "release",
            "variations": boolean,
            "off_variation": "off",
            "enabled": True,
            "prerequisites": [],
            "targets": [],
            "rules": [],
            "default": {"variation": "on"},
        }
        return base | fields

    rules = [
        {
            "name": "premium tiers",
            "condition": {"attribute": "tier", "op": "in", "values": ["gold", "platinum"]},
            "serve": {"variation": "on"},
        },
        {
            "name": "qa accounts",
            "condition": {"attribute": "email", "op": "starts_with", "values": ["qa-"]},
            "serve": {"variation": "on"},
        },
        {
            "name": "old apps",
            "condition": {"attribute": "app_version", "op": "semver_lt", "values": ["2.0.0"]},
            "serve": {"variation": "off"},
        },
    ]
    rollout = {
        "split": {
            "bucket_by": "key",
            "seed": "rules-flag",
            "weights": [
                {"variation": "on", "weight": 25000},
                {"variation": "off", "weight": 75000},
            ],
        }
    }
    regex_flag = flag(
        type="string",
        variations={"matched": "matched", "other": "other"},
        off_variation="other",
        rules=[
            {
                "name": name,
                "condition": {"attribute": "login", "op": op, "values": [value]},
                "serve": {"variation": "matched"},
            }
            for name, op, value in regex_rules()
        ],
        default={"variation": "other"},
    )
    semver_flag = flag(
        rules=[
            {
                "name": name,
                "condition": {"attribute": "client_version", "op": op, "values": [value]},
                "serve": {"variation": "off"},
            }
            for name, op, value in SEMVER_RULES
        ]
    )
    segment_flag = flag(
        rules=[
            {
                "name": "beta testers",
                "condition": {"segment": "beta-testers"},
                "serve": {"variation": "off"},
            },
            rules[0],
        ],
        default={"variation": "off"},
    )
    account_split = {
        "split": {
            "bucket_by": "account",
            "seed": "account-flag",
            "weights": [
                {"variation": "on", "weight": 50000},
                {"variation": "off", "weight": 50000},
            ],
        }
    }
    return {
        "format": "flagstone.snapshot/1",
        "project": "bench",
        "environment": "bench",
        "version": 1,
        "flags": {
            "regex-flag": regex_flag,
            "semver-flag": semver_flag,
            "simple-flag": flag(),
            "rules-flag": flag(rules=rules, default=rollout),
            "prereq-flag": flag(
                rules=rules,
                default=rollout,
                prerequisites=[{"flag": "simple-flag", "variation": "on"}],
            ),
            "chain-1": flag(prerequisites=[{"flag": "simple-flag", "variation": "on"}]),
            "chain-2": flag(prerequisites=[{"flag": "chain-1", "variation": "on"}]),
            "chain-flag": flag(
                rules=rules,
                default=rollout,
                prerequisites=[{"flag": "chain-2", "variation": "on"}],
            ),
            "segment-flag": segment_flag,
            "account-flag": flag(default=account_split),
        },
        "segments": {"beta-testers": {"include": SEGMENT_KEYS, "exclude": [], "rules": []}},
    }


def flagstone_runner(flag_key: str, contexts: list[dict[str, Any]]) -> Callable[[], None]:
    snapshot = Snapshot.from_payload(flagstone_payload())
    evaluate = snapshot.evaluate

    def run() -> None:
        for context in contexts:
            evaluate(flag_key, context)

    return run


# --- LaunchDarkly ------------------------------------------------------------------


def launchdarkly_flags() -> dict[str, Any]:
    def flag(key: str, **fields: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "key": key,
            "version": 1,
            "on": True,
            "variations": [True, False],
            "offVariation": 1,
            "fallthrough": {"variation": 0},
            "targets": [],
            "contextTargets": [],
            "rules": [],
            "prerequisites": [],
            "salt": key,
            "trackEvents": False,
            "trackEventsFallthrough": False,
            "clientSide": False,
        }
        return base | fields

    def clause(attribute: str, op: str, values: list[Any]) -> dict[str, Any]:
        return {
            "attribute": attribute,
            "op": op,
            "values": values,
            "negate": False,
            "contextKind": "user",
        }

    rules = [
        {
            "id": "r1",
            "variation": 0,
            "clauses": [clause("tier", "in", ["gold", "platinum"])],
            "trackEvents": False,
        },
        {
            "id": "r2",
            "variation": 0,
            "clauses": [clause("email", "startsWith", ["qa-"])],
            "trackEvents": False,
        },
        {
            "id": "r3",
            "variation": 1,
            "clauses": [clause("app_version", "semVerLessThan", ["2.0.0"])],
            "trackEvents": False,
        },
    ]
    rollout = {
        "rollout": {
            "variations": [{"variation": 0, "weight": 25000}, {"variation": 1, "weight": 75000}]
        }
    }
    ld_ops = {"matches": "matches", "starts_with": "startsWith"}
    regex_flag = flag(
        "regex-flag",
        variations=["matched", "other"],
        fallthrough={"variation": 1},
        rules=[
            {
                "id": name,
                "variation": 0,
                "clauses": [clause("login", ld_ops[op], [value])],
                "trackEvents": False,
            }
            for name, op, value in regex_rules()
        ],
    )
    ld_semver = {"semver_lt": "semVerLessThan", "semver_eq": "semVerEqual"}
    semver_flag = flag(
        "semver-flag",
        rules=[
            {
                "id": name,
                "variation": 1,
                "clauses": [clause("client_version", ld_semver[op], [value])],
                "trackEvents": False,
            }
            for name, op, value in SEMVER_RULES
        ],
    )
    segment_flag = flag(
        "segment-flag",
        fallthrough={"variation": 1},
        rules=[
            {
                "id": "beta",
                "variation": 1,
                "clauses": [
                    {
                        "attribute": "",
                        "op": "segmentMatch",
                        "values": ["beta-testers"],
                        "negate": False,
                    }
                ],
                "trackEvents": False,
            },
            rules[0],
        ],
    )
    account_rollout = {
        "rollout": {
            "bucketBy": "account",
            "variations": [{"variation": 0, "weight": 50000}, {"variation": 1, "weight": 50000}],
        }
    }
    return {
        "flags": {
            "segment-flag": segment_flag,
            "account-flag": flag("account-flag", fallthrough=account_rollout),
            "chain-1": flag("chain-1", prerequisites=[{"key": "simple-flag", "variation": 0}]),
            "chain-2": flag("chain-2", prerequisites=[{"key": "chain-1", "variation": 0}]),
            "chain-flag": flag(
                "chain-flag",
                rules=rules,
                fallthrough=rollout,
                prerequisites=[{"key": "chain-2", "variation": 0}],
            ),
            "regex-flag": regex_flag,
            "semver-flag": semver_flag,
            "simple-flag": flag("simple-flag"),
            "rules-flag": flag("rules-flag", rules=rules, fallthrough=rollout),
            "prereq-flag": flag(
                "prereq-flag",
                rules=rules,
                fallthrough=rollout,
                prerequisites=[{"key": "simple-flag", "variation": 0}],
            ),
        },
        "segments": {
            "beta-testers": {
                "key": "beta-testers",
                "version": 1,
                "included": SEGMENT_KEYS,
                "excluded": [],
                "rules": [],
                "salt": "beta-testers",
            }
        },
    }


class LaunchDarkly:
    def __init__(self, workdir: Path) -> None:
        import ldclient
        from ldclient.config import Config
        from ldclient.integrations import Files

        logging.getLogger("ldclient").setLevel(logging.ERROR)
        path = workdir / "ld-flags.json"
        path.write_text(json.dumps(launchdarkly_flags()))
        config = Config(
            "bench-sdk-key",
            update_processor_class=Files.new_data_source(paths=[str(path)]),
            send_events=False,
            diagnostic_opt_out=True,
        )
        self.client = ldclient.LDClient(config=config, start_wait=5)
        if not self.client.is_initialized():
            raise SystemExit("LaunchDarkly client did not initialize from the file data source")

    def runner(self, flag_key: str, contexts: list[dict[str, Any]]) -> Callable[[], None]:
        from ldclient import Context

        ld_contexts = []
        for context in contexts:
            builder = Context.builder(context["key"])
            for name, value in context.items():
                if name != "key":
                    builder.set(name, value)
            ld_contexts.append(builder.build())
        variation = self.client.variation

        def run() -> None:
            for ld_context in ld_contexts:
                variation(flag_key, ld_context, None)

        return run

    def close(self) -> None:
        self.client.close()


# --- flagd ---------------------------------------------------------------------------


def flagd_runner(flag_key: str, contexts: list[dict[str, Any]]) -> Callable[[], None]:
    from openfeature.contrib.tools.flagd.core import FlagdCore
    from openfeature.evaluation_context import EvaluationContext

    logging.getLogger("openfeature").setLevel(logging.ERROR)
    variants = {"on": True, "off": False}
    core = FlagdCore()
    core.set_flags(
        {
            "flags": {
                "simple-flag": {"state": "ENABLED", "variants": variants, "defaultVariant": "on"},
                "rules-flag": flagd_definition(),
                "semver-flag": flagd_semver_definition(),
            }
        }
    )
    flagd_contexts = [
        EvaluationContext(c["key"], {k: v for k, v in c.items() if k != "key"}) for c in contexts
    ]
    resolve = core.resolve_boolean_value

    def run() -> None:
        for flagd_context in flagd_contexts:
            resolve(flag_key, False, flagd_context)

    return run


def flagd_definition() -> dict[str, Any]:
    targeting = {
        "if": [
            {"in": [{"var": "tier"}, ["gold", "platinum"]]},
            "on",
            {"starts_with": [{"var": "email"}, "qa-"]},
            "on",
            {"sem_ver": [{"var": "app_version"}, "<", "2.0.0"]},
            "off",
            {
                "fractional": [
                    {"cat": ["rules-flag", {"var": "targetingKey"}]},
                    ["on", 25000],
                    ["off", 75000],
                ]
            },
        ]
    }
    return {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "targeting": targeting,
    }


def flagd_semver_definition() -> dict[str, Any]:
    branches: list[Any] = []
    symbols = {"semver_lt": "<", "semver_eq": "="}
    for _name, op, value in SEMVER_RULES:
        branches += [{"sem_ver": [{"var": "client_version"}, symbols[op], value]}, "off"]
    return {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "on",
        "targeting": {"if": [*branches, "on"]},
    }


# --- harness -------------------------------------------------------------------------


def check_equivalence(contexts: list[dict[str, Any]], launchdarkly: LaunchDarkly) -> int:
    """The definitions must be equivalent before their speed is compared. Flagstone and
    flagd agree on every context for (b) (same rules, bit-compatible bucketing);
    LaunchDarkly buckets with another hash, so it must agree wherever a rule decides and
    on (a). Returns how many contexts were compared."""
    from ldclient import Context
    from openfeature.contrib.tools.flagd.core import FlagdCore
    from openfeature.evaluation_context import EvaluationContext

    snapshot = Snapshot.from_payload(flagstone_payload())
    core = FlagdCore()
    core.set_flags(
        {"flags": {"rules-flag": flagd_definition(), "semver-flag": flagd_semver_definition()}}
    )
    sample = contexts[:5000]
    for context in sample:
        attributes = {k: v for k, v in context.items() if k != "key"}
        ours = snapshot.evaluate("rules-flag", context)
        flagd = core.resolve_boolean_value(
            "rules-flag", False, EvaluationContext(context["key"], attributes)
        )
        builder = Context.builder(context["key"])
        for name, value in attributes.items():
            builder.set(name, value)
        ld_context = builder.build()
        ld = launchdarkly.client.variation("rules-flag", ld_context, None)
        ld_simple = launchdarkly.client.variation("simple-flag", ld_context, None)
        if ours.value != flagd.value or (ours.reason == "TARGETING_MATCH" and ld != ours.value):
            raise SystemExit(
                f"definitions disagree for {context}: {ours}, flagd {flagd.value}, LD {ld}"
            )
        if ld_simple != snapshot.evaluate("simple-flag", context).value:
            raise SystemExit(f"(a) disagrees with LaunchDarkly for {context}")
        for flag_key in ("regex-flag", "semver-flag", "segment-flag"):
            ours = snapshot.evaluate(flag_key, context)
            if launchdarkly.client.variation(flag_key, ld_context, None) != ours.value:
                raise SystemExit(f"{flag_key} disagrees with LaunchDarkly for {context}")
        semver = core.resolve_boolean_value(
            "semver-flag", False, EvaluationContext(context["key"], attributes)
        )
        if semver.value != snapshot.evaluate("semver-flag", context).value:
            raise SystemExit(f"semver-flag disagrees with flagd for {context}")
    return len(sample)


def median_microseconds(
    runners: dict[str, Callable[[], None]], count: int, repeats: int
) -> dict[str, float]:
    """Median µs per evaluation of each runner. Runs are interleaved (ours, peer, peer,
    ours, …) so that load from elsewhere on the machine hits every SDK alike, and timed
    as CPU time of this process, which time spent waiting for a core does not inflate."""
    for run in runners.values():
        run()  # warm caches and lazy imports
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.process_time()
            run()
            times[name].append(time.process_time() - start)
    return {name: statistics.median(t) / count * 1e6 for name, t in times.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contexts", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    contexts = make_contexts(args.contexts)
    cases = [
        ("(a) boolean, no rules", "simple-flag"),
        ("(b) 3 rules + 25% rollout", "rules-flag"),
        ("(c) (b) behind a prerequisite", "prereq-flag"),
        ("(c3) (b) behind a chain of 3", "chain-flag"),
        ("(d) 20 matches/starts_with", "regex-flag"),
        ("(e) semver, 10k versions", "semver-flag"),
        ("(f) 1,000-key segment + rule", "segment-flag"),
        ("(g) 50/50 split by account", "account-flag"),
    ]
    with tempfile.TemporaryDirectory() as workdir:
        launchdarkly = LaunchDarkly(Path(workdir))
        try:
            compared = check_equivalence(contexts, launchdarkly)
            rows = []
            for label, flag_key in cases:
                runners = {
                    "flagstone": flagstone_runner(flag_key, contexts),
                    "launchdarkly": launchdarkly.runner(flag_key, contexts),
                }
                # this script's hand-written flagd definitions cover (a), (b) and (e)
                # (benchmarks/all.py runs flagd-core on the export for every case)
                if flag_key in ("simple-flag", "rules-flag", "semver-flag"):
                    runners["flagd"] = flagd_runner(flag_key, contexts)
                medians = median_microseconds(runners, len(contexts), args.repeats)
                rows.append(
                    (label, medians["flagstone"], medians["launchdarkly"], medians.get("flagd"))
                )
        finally:
            launchdarkly.close()

    print(
        f"definitions checked on {compared:,} contexts: flagd-core agrees on every (b) result, "
        "LaunchDarkly on every rule decision and on (a), (d) and (e); flagd-core on (e)"
    )
    print(
        f"{len(contexts):,} distinct contexts, median of {args.repeats} interleaved runs, "
        "CPU µs per evaluation"
    )
    print(
        f"{'case':<32}{'flagstone':>10}{'launchdarkly':>14}{'flagd-core':>12}{'LD/ours':>9}{'flagd/ours':>11}"
    )
    for label, ours, ld, flagd in rows:
        flagd_text = f"{flagd:12.2f}" if flagd is not None else f"{'n/a':>12}"
        flagd_ratio = f"{flagd / ours:10.1f}x" if flagd is not None else f"{'n/a':>11}"
        print(f"{label:<32}{ours:10.2f}{ld:14.2f}{flagd_text}{ld / ours:8.1f}x{flagd_ratio}")


if __name__ == "__main__":
    main()
