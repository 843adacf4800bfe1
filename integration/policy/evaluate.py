"""Evaluate recorded requests against the rendered policies with principalmapper.

    python -m policy.evaluate target/policy/requests.jsonl [--policy target/policy]

The decisions come from principalmapper's policy_has_matching_statement (a published IAM
policy evaluator: resource patterns with * and ?, String*/Arn* conditions, case rules); this
module only builds the requests and states the assertions. A request is allowed when some
Allow statement matches and no Deny statement does.

Per config (a directory under --policy named by the requests' "config"):
  1. every request is allowed by the role policy; KMS requests also by the key policy
     statement(s) of the KmsKeyPolicyStatement outputs;
  2. every action the role grants is used by some request (EC2 network-interface and logs
     actions by Lambda itself: source "lambda-service"), and so is every key policy action;
  3. neighbours are denied: the same requests on another secret, on the same secret when its
     rotation function is another Lambda or none, writes to the master secret, KMS requests
     not via Secrets Manager / via another service or region / for another secret / on
     another key, writing under the master key, logs of another function, the EC2
     network-interface requests Lambda makes when made by the function's own code (with
     lambda:SourceFunctionArn = this function); and, when the function may not read the
     master secret (single user with the fallback off), reading or decrypting it;
  4. every statement is necessary: removing an Allow statement (role policy, key policy)
     denies at least one request; removing a Deny statement allows at least one neighbour;
  5. the function's resource policy lets Secrets Manager invoke it from this account only;
  6. the function's environment carries the scenario's SINGLE_USER_MASTER_FALLBACK and
     ALLOWED_DB_HOSTS.
Prints a table of the requests per config; exits 1 with the reasons on any failure.
"""

from __future__ import annotations

import argparse
import collections
import collections.abc
import copy
import json
import sys
from pathlib import Path
from typing import Any

# principalmapper 1.1.5 imports collections.Mapping, removed in Python 3.10.
for _name in ("Mapping", "MutableMapping"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

from principalmapper.querying.local_policy_simulation import policy_has_matching_statement  # noqa: E402
from principalmapper.util.case_insensitive_dict import CaseInsensitiveDict  # noqa: E402

ROTATION_KEY = "secretsmanager:resource/AllowRotationLambdaArn"
SOURCE_FUNCTION_KEY = "lambda:SourceFunctionArn"
VIA_KEY = "kms:ViaService"
SECRET_CONTEXT_KEY = "kms:EncryptionContext:SecretARN"


def allowed(policy: dict, request: dict) -> bool:
    context = CaseInsensitiveDict(request.get("context") or {})
    action, resource = request["action"], request["resource"]
    if policy_has_matching_statement(policy, "Deny", action, resource, context):
        return False
    return policy_has_matching_statement(policy, "Allow", action, resource, context)


def _statements(policy: dict) -> list[dict]:
    s = policy.get("Statement", [])
    return s if isinstance(s, list) else [s]


def _actions(policy: dict) -> list[str]:
    out = []
    for statement in _statements(policy):
        if statement.get("Effect") != "Allow":
            continue
        if "NotAction" in statement:
            out.append("NotAction:" + json.dumps(statement["NotAction"]))
            continue
        actions = statement["Action"]
        out.extend(actions if isinstance(actions, list) else [actions])
    return out


def _other_secret(arn: str) -> str:
    prefix = arn.rsplit(":secret:", 1)[0]
    return f"{prefix}:secret:pgrotate/not-this-secret-Zq9Xw2"


def _longer_secret(arn: str) -> str:
    """A secret whose name starts with this one's name and a hyphen (name-* would match it,
    name-?????? does not)."""
    return arn[:-7] + "-staging-Zq9Xw2" if len(arn) > 7 and arn[-7] == "-" else arn + "-staging-Zq9Xw2"


def _with(request: dict, why: str, **changes: Any) -> dict:
    r = copy.deepcopy(request)
    context = r.setdefault("context", {})
    for key, value in changes.pop("context", {}).items():
        if value is None:
            context.pop(key, None)
        else:
            context[key] = value
    r.update(changes)
    r["why"] = why
    return r


def neighbours(request: dict, config: dict) -> list[dict]:
    """Requests close to an allowed one that the policy must refuse."""
    action, resource = request["action"], request["resource"]
    region, account = config["region"], config["account"]
    other_fn = f"arn:aws:lambda:{region}:{account}:function:someone-elses-rotation"
    out = []
    if action.startswith("secretsmanager:"):
        out.append(_with(request, "another secret", resource=_other_secret(resource)))
        out.append(_with(request, "a secret whose name extends this one's", resource=_longer_secret(resource)))
        if ROTATION_KEY in request.get("context", {}):
            out.append(_with(request, "rotation function is another Lambda", context={ROTATION_KEY: other_fn}))
            out.append(_with(request, "secret has no rotation function", context={ROTATION_KEY: None}))
        else:  # the master secret: read only, whoever rotates it
            for write in ("secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage",
                          "secretsmanager:DescribeSecret"):
                out.append(_with(request, f"{write.split(':')[1]} on the master secret", action=write))
                out.append(_with(request, f"{write.split(':')[1]} on the master secret, rotated by this function",
                                 action=write, context={ROTATION_KEY: config["function_arn"]}))
    elif action.startswith("kms:"):
        secret = request["context"].get(SECRET_CONTEXT_KEY, "")
        out.append(_with(request, "KMS called directly, not via Secrets Manager", context={VIA_KEY: None}))
        out.append(_with(request, "KMS via another service", context={VIA_KEY: f"ssm.{region}.amazonaws.com"}))
        out.append(_with(request, "KMS via Secrets Manager in another region",
                         context={VIA_KEY: "secretsmanager.eu-west-1.amazonaws.com"}))
        out.append(_with(request, "KMS for another secret", context={SECRET_CONTEXT_KEY: _other_secret(secret)}))
        out.append(_with(request, "KMS for a secret whose name extends this one's",
                         context={SECRET_CONTEXT_KEY: _longer_secret(secret)}))
        out.append(_with(request, "KMS without a secret in the encryption context", context={SECRET_CONTEXT_KEY: None}))
        out.append(_with(request, "another KMS key", resource=f"arn:aws:kms:{region}:{account}:key/00000000-0000-0000-0000-000000000000",
                         key_policy_applies=False))
        if action == "kms:Decrypt" and secret and config["arns"].get("master") and \
                _matches_master(secret, config):
            out.append(_with(request, "GenerateDataKey (a write) for the master secret", action="kms:GenerateDataKey"))
    elif action.startswith("logs:"):
        out.append(_with(request, "another function's log group",
                         resource=resource.replace(f"/aws/lambda/{config['function_arn'].rsplit(':', 1)[1]}:",
                                                   "/aws/lambda/another-function:")))
        out.append(_with(request, "another region", resource=resource.replace(f":{region}:", ":eu-west-1:")))
    elif action.startswith("ec2:"):
        out.append(_with(request, f"{action.split(':')[1]} by the function's own code",
                         context={SOURCE_FUNCTION_KEY: config["function_arn"]}))
    return out


def _concrete(secret_pattern: str) -> str:
    """A secret ARN for a pattern ending in -??????."""
    return secret_pattern[:-6] + "AbCdEf" if secret_pattern.endswith("??????") else secret_pattern


def config_neighbours(config: dict) -> list[dict]:
    """Requests the config must refuse whatever was recorded: with the single-user master
    fallback off, the master secret is neither read nor decrypted (the role has no statement
    for it, and the rotated secrets' key statement is limited to the rotated secrets)."""
    arns, region = config["arns"], config["region"]
    if not arns.get("master") or config["reads_master"]:
        return []
    master = _concrete(arns["master"])
    function = config["function_arn"]
    base = {"source": "neighbour", "context": {"aws:RequestedRegion": region, SOURCE_FUNCTION_KEY: function}}
    out = [
        _with(base, "the master secret read with the fallback off", action="secretsmanager:GetSecretValue",
              resource=master),
        _with(base, "the master secret read with the fallback off, rotated by this function",
              action="secretsmanager:GetSecretValue", resource=master, context={ROTATION_KEY: function}),
    ]
    for key in {arns.get("key"), arns.get("master_key")} - {None}:
        out.append(_with(
            {"source": "neighbour", "context": {}}, "the master secret decrypted with the fallback off",
            action="kms:Decrypt", resource=key,
            context={VIA_KEY: f"secretsmanager.{region}.amazonaws.com", "kms:CallerAccount": config["account"],
                     SECRET_CONTEXT_KEY: master},
        ))
    return out


def _matches_master(secret_arn: str, config: dict) -> bool:
    master = config["arns"]["master"]
    return master is not None and secret_arn[:-6] == master[:-6]


def _short(arn: str) -> str:
    for marker in (":secret:", ":key/", ":log-group:", ":network-interface/", ":subnet/", ":security-group/"):
        if marker in arn:
            return marker.strip(":/") + (":" if marker.endswith(":") else "/") + arn.split(marker, 1)[1]
    return arn


def _context_summary(request: dict) -> str:
    c = request.get("context") or {}
    parts = []
    if ROTATION_KEY in c:
        parts.append("AllowRotationLambdaArn=" + c[ROTATION_KEY].rsplit(":", 1)[1])
    if VIA_KEY in c:
        parts.append("ViaService=" + c[VIA_KEY].split(".")[0])
    if SECRET_CONTEXT_KEY in c:
        parts.append("EncryptionContext:SecretARN=" + c[SECRET_CONTEXT_KEY].rsplit(":secret:", 1)[-1])
    if SOURCE_FUNCTION_KEY in c:
        parts.append("SourceFunctionArn=" + c[SOURCE_FUNCTION_KEY].rsplit(":", 1)[1])
    return " ".join(parts) or "-"


class Failures:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, config: str, message: str) -> None:
        self.items.append(f"[{config}] {message}")


def _describe(r: dict) -> str:
    return f"{r['action']} on {r['resource']} (context {json.dumps(r.get('context') or {}, sort_keys=True)})"


def evaluate_config(config_id: str, root: Path, requests: list[dict], failures: Failures) -> dict:
    directory = root / config_id
    role_policy = json.loads((directory / "role-policy.json").read_text())
    config = json.loads((directory / "config.json").read_text())
    key_policy_path = directory / "kms-key-policy.json"
    key_policy = json.loads(key_policy_path.read_text()) if key_policy_path.exists() else None
    resource_policy = json.loads((directory / "lambda-resource-policy.json").read_text())
    stats = collections.Counter()

    # 1. every request allowed.
    rows = []
    for r in requests:
        role_ok = allowed(role_policy, r)
        key_ok: bool | None = None
        if r["action"].startswith("kms:"):
            key_ok = allowed(key_policy, r) if key_policy else False
        if not role_ok:
            hint = ""
            master = config["arns"].get("master")
            if master and not config["reads_master"] and r["resource"][:-6] == master[:-6]:
                hint = " (the function read the master secret with SINGLE_USER_MASTER_FALLBACK off)"
            elif r["action"].startswith("secretsmanager:") and ROTATION_KEY not in (r.get("context") or {}):
                hint = (" (the secret has no RotationLambdaARN: configure rotation with this function"
                        " before rotating, or add the secret to MasterSecretArn if it is the master)")
            failures.add(config_id, f"denied by the role policy: {_describe(r)}{hint}")
        if key_ok is False:
            failures.add(config_id, f"denied by the KMS key policy statement: {_describe(r)}")
        rows.append((r, role_ok, key_ok))
        stats["requests"] += 1

    # 2. every granted action used.
    used = {r["action"].lower() for r in requests}
    for action in _actions(role_policy):
        if "*" in action or action.startswith("NotAction:"):
            failures.add(config_id, f"the role grants a wildcard action {action}")
        elif action.lower() not in used:
            failures.add(config_id, f"the role grants {action}, which no request uses")
    if key_policy:
        for action in _actions(key_policy):
            if action.lower() not in used:
                failures.add(config_id, f"the key policy grants {action}, which no request uses")

    # 3. neighbours denied.
    all_neighbours = [n for r in requests for n in neighbours(r, config)] + config_neighbours(config)
    for n in all_neighbours:
        stats["neighbours"] += 1
        if allowed(role_policy, n):
            failures.add(config_id, f"ALLOWED but must be denied ({n['why']}): {_describe(n)}")
        if key_policy and n["action"].startswith("kms:") and n.get("key_policy_applies", True):
            stats["neighbours"] += 1
            if allowed(key_policy, n):
                failures.add(config_id, f"key policy ALLOWS but must deny ({n['why']}): {_describe(n)}")

    # 4. every statement necessary: without an Allow, some request is denied; without a Deny,
    #    some neighbour is allowed.
    key_neighbours = [n for n in all_neighbours if n["action"].startswith("kms:") and n.get("key_policy_applies", True)]
    for name, policy, subset, denied in (
        ("role policy", role_policy, requests, all_neighbours),
        ("key policy", key_policy, [r for r in requests if r["action"].startswith("kms:")], key_neighbours),
    ):
        if not policy:
            continue
        statements = _statements(policy)
        for i, statement in enumerate(statements):
            reduced = dict(policy, Statement=statements[:i] + statements[i + 1:])
            stats["deletions"] += 1
            if statement.get("Effect") == "Deny":
                if not any(allowed(reduced, n) for n in denied):
                    failures.add(config_id, f"{name} statement {statement.get('Sid', i)} (Deny) denies no neighbour "
                                            "that the other statements allow")
            elif all(allowed(reduced, r) for r in subset):
                failures.add(config_id, f"{name} statement {statement.get('Sid', i)} is not needed by any request")

    # 5. the resource policy: Secrets Manager of this account only.
    invoke = {"action": "lambda:InvokeFunction", "resource": config["function_arn"],
              "context": {"aws:SourceAccount": config["account"]}}
    if not allowed(resource_policy, invoke):
        failures.add(config_id, f"the function's resource policy refuses {_describe(invoke)}")
    for why, n in (
        ("another account", _with(invoke, "", context={"aws:SourceAccount": "999999999999"})),
        ("no source account", _with(invoke, "", context={"aws:SourceAccount": None})),
        ("another function", _with(invoke, "", resource=config["function_arn"] + "-other")),
    ):
        stats["neighbours"] += 1
        if allowed(resource_policy, n):
            failures.add(config_id, f"the resource policy allows an invocation from {why}: {_describe(n)}")
    principals = [s.get("Principal") for s in _statements(resource_policy)]
    if principals != [{"Service": "secretsmanager.amazonaws.com"}]:
        failures.add(config_id, f"the resource policy's principals are {principals}, expected Secrets Manager only")

    # 6. the settings that decide what the function trusts reach its environment.
    scenario, environment = config["scenario"], config["environment"]
    expected_env = {
        "SINGLE_USER_MASTER_FALLBACK": "true" if scenario.get("fallback") else "false",
        "ALLOWED_DB_HOSTS": scenario.get("allowed_hosts") or "",
    }
    for variable, value in expected_env.items():
        if environment.get(variable) != value:
            failures.add(config_id, f"the function's environment has {variable}={environment.get(variable)!r}, "
                                    f"expected {value!r}")

    return {"rows": rows, "stats": stats, "statements": len(_statements(role_policy))}


def print_table(config_id: str, result: dict) -> None:
    stats = result["stats"]
    print(f"\n== {config_id}: {stats['requests']} requests, role policy {result['statements']} statements, "
          f"{stats['neighbours']} neighbours denied-checked, {stats['deletions']} statement deletions checked")
    groups: dict[tuple, list] = {}
    for r, role_ok, key_ok in result["rows"]:
        key = (r["source"], r["action"], _short(r["resource"]), _context_summary(r), role_ok, key_ok)
        groups.setdefault(key, []).append(r)
    header = ("n", "source", "action", "resource", "context", "role", "key")
    table = [header]
    for (src, action, res, ctx, role_ok, key_ok), items in groups.items():
        table.append((str(len(items)), src, action, res, ctx,
                      "allow" if role_ok else "DENY", "-" if key_ok is None else ("allow" if key_ok else "DENY")))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("requests", help="JSONL of requests (python -m policy.recording convert)")
    parser.add_argument("--policy", default="target/policy", help="root of the rendered configs")
    parser.add_argument("--quiet", action="store_true", help="no table")
    args = parser.parse_args(argv)
    root = Path(args.policy)
    by_config: dict[str, list[dict]] = {}
    for line_no, line in enumerate(Path(args.requests).read_text().splitlines(), 1):
        if not line.strip():
            continue
        r = json.loads(line)
        for field in ("config", "action", "resource"):
            if field not in r:
                print(f"evaluate: FAILED: {args.requests}:{line_no}: no {field!r}", file=sys.stderr)
                return 1
        r.setdefault("source", "recorded")
        r.setdefault("context", {})
        by_config.setdefault(r["config"], []).append(r)
    if not by_config:
        print(f"evaluate: FAILED: no requests in {args.requests}", file=sys.stderr)
        return 1
    failures = Failures()
    totals = collections.Counter()
    for config_id in sorted(by_config):
        if not (root / config_id / "role-policy.json").exists():
            failures.add(config_id, f"no rendered policy at {root / config_id}")
            continue
        result = evaluate_config(config_id, root, by_config[config_id], failures)
        totals.update(result["stats"])
        if not args.quiet:
            print_table(config_id, result)
    print(f"\nevaluate: {len(by_config)} configs, {totals['requests']} requests allowed-checked, "
          f"{totals['neighbours']} neighbours denied-checked, {totals['deletions']} statement deletions checked")
    if failures.items:
        print(f"evaluate: FAILED ({len(failures.items)}):", file=sys.stderr)
        for item in failures.items:
            print(f"  {item}", file=sys.stderr)
        return 1
    print("evaluate: OK: every request allowed, every grant used, every neighbour denied, every statement needed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
