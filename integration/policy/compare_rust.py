"""The Rust renderer (src/policy.rs, behind `pgrotatectl policy`) produces exactly the
template's documents: trust policy, role policy, Lambda resource policy, KMS key-policy
statements.

    python -m policy.compare_rust target/policy [--rust CMD] [--fixtures tests/fixtures/policy]
    python -m policy.compare_rust --write-fixtures tests/fixtures/policy

Cases, all rendered from template.yaml by policy.cfn (the Python renderer):
  - every config policy.render wrote under the given root (examples and recordings: strategy
    x KMS x VPC, master secret with the fallback on and off, RDS-managed master), read back
    from its files;
  - extra parameter sets rendered here: several secrets (full ARNs and -??????), other function
    names, the master under the rotated secrets' key, and other partitions, regions and
    accounts (aws-cn, aws-us-gov), which the matrix keeps fixed;
  - the parameter sets selftest.py has CloudFormation accept or refuse, and a few more: the
    Rust renderer must accept and refuse the same ones (those refused for a parameter it does
    not take, AllowedDbHosts for example, are listed as skipped).
The Rust side is `pgrotatectl --json policy` itself, run once per case with the case's
parameters as its flags (the binary named by --pgrotatectl or $PGROTATECTL, else
target/release/pgrotatectl after `cargo build --release --bin pgrotatectl`). Documents are
compared as JSON text with the key order kept, so the CLI prints what the template deploys,
byte for byte.

--fixtures checks that the expected documents committed for the Rust test (tests/policy.rs)
are still what the template renders; --write-fixtures regenerates them.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from policy.cfn import Stack, TemplateError, load_template, render
from policy.selftest import ACCEPTED, REFUSED

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = ("trust-policy", "role-policy", "lambda-resource-policy", "kms-key-policy")
BUILD = ["cargo", "build", "--release", "--quiet", "--bin", "pgrotatectl"]

# Template parameters -> PolicyParams keys (the `pgrotatectl policy` flag names).
STRINGS = {
    "RotationStrategy": "strategy",
    "MasterSecretArn": "master-secret-arn",
    "KmsKeyArn": "kms-key-arn",
    "MasterKmsKeyArn": "master-kms-key-arn",
    "FunctionName": "function-name",
}
# Parameters that change no policy document: dropped for documents, but a refusal caused by
# one of them cannot be reproduced (PolicyParams does not take them).
NOT_POLICY = {
    "AllowedDbHosts", "Architecture", "MemorySize", "Timeout", "LayerArns", "RotationScheduleExpression",
    "RotateImmediately", "PasswordLength", "ExcludeCharacters", "ExcludeNumbers", "ExcludePunctuation",
    "ExcludeUppercase", "ExcludeLowercase", "RequireEachIncludedType", "DefaultSslMode", "SslCaBundle",
    "DbConnectTimeout", "CloneDefaultRole", "SecretsManagerEndpoint", "SecretsManagerTimeout", "LogLevel",
    "LogRetentionInDays", "LogGroupKmsKeyArn", "PermissionsBoundaryArn", "AlarmTopicArn",
}
# Taken only as the VPC flag: their own checks (subnets need security groups) are not the
# Rust renderer's.
VPC = {"VpcSubnetIds", "VpcSecurityGroupIds"}

_GOV = Stack(partition="aws-us-gov", region="us-gov-west-1", account="111122223333")
_CN = Stack(partition="aws-cn", region="cn-north-1", account="210987654321")


def _secret(stack: Stack, name: str) -> str:
    return f"arn:{stack.partition}:secretsmanager:{stack.region}:{stack.account}:secret:{name}"


def _key(stack: Stack, key_id: str) -> str:
    return f"arn:{stack.partition}:kms:{stack.region}:{stack.account}:key/{key_id}"


def extra_cases() -> list[tuple[str, Stack, dict[str, Any]]]:
    default = Stack()
    return [
        ("extra/several-secrets-full-and-pattern", default, {
            "FunctionName": "orders_db-rotation",
            "SecretArns": ",".join([_secret(default, "orders/app-Ab12Cd"), _secret(default, "orders/report-??????"),
                                    _secret(default, "rds!cluster-0a1b2c3d-4e5f-6789-abcd-ef0123456789-XyZ987")]),
            "KmsKeyArn": _key(default, "0f0e0d0c-0b0a-0908-0706-050403020100"),
        }),
        ("extra/alternating-master-under-the-same-key-vpc", default, {
            "RotationStrategy": "alternating-users",
            "SecretArns": _secret(default, "app/user-??????"),
            "MasterSecretArn": _secret(default, "rds!db-1234abcd-56ef-78ab-90cd-1234567890ef-AbCdEf"),
            "KmsKeyArn": _key(default, "1111aaaa-2222-3333-4444-555566667777"),
            "MasterKmsKeyArn": _key(default, "1111aaaa-2222-3333-4444-555566667777"),
            "VpcSubnetIds": "subnet-0a1b2c3d", "VpcSecurityGroupIds": "sg-0123abcd",
        }),
        ("extra/alternating-master-key-only-rotated-default-key", default, {
            "RotationStrategy": "alternating-users",
            "SecretArns": _secret(default, "app/user-??????"),
            "MasterSecretArn": _secret(default, "app/master-??????"),
            "MasterKmsKeyArn": _key(default, "8888bbbb-9999-aaaa-bbbb-ccccddddeeee"),
        }),
        ("extra/aws-cn-single-user-fallback-two-keys-vpc", _CN, {
            "FunctionName": "pgrotate-cn",
            "SecretArns": ",".join([_secret(_CN, "app/user-??????"), _secret(_CN, "app/other-AbCdEf")]),
            "MasterSecretArn": _secret(_CN, "app/master-??????"),
            "SingleUserMasterFallback": "true",
            "KmsKeyArn": _key(_CN, "aaaa1111-bbbb-2222-cccc-333344445555"),
            "MasterKmsKeyArn": _key(_CN, "dddd6666-eeee-7777-ffff-888899990000"),
            "VpcSubnetIds": "subnet-0a1b2c3d,subnet-0e0f1a1b", "VpcSecurityGroupIds": "sg-0123abcd",
        }),
        ("extra/aws-us-gov-alternating", _GOV, {
            "RotationStrategy": "alternating-users",
            "SecretArns": _secret(_GOV, "svc/db-??????"),
            "MasterSecretArn": _secret(_GOV, "svc/master-AbCdEf"),
        }),
    ]


# Refused beyond selftest's list: the function name's pattern (the Rust renderer validates it).
MORE_REFUSED = [
    ("a function name with a space", {"SecretArns": ACCEPTED[0][1]["SecretArns"], "FunctionName": "my function"}),
    ("a function name of 65 characters", {"SecretArns": ACCEPTED[0][1]["SecretArns"], "FunctionName": "f" * 65}),
    ("a secret ARN of another service", {"SecretArns": "arn:aws:ssm:us-east-1:123456789012:parameter/x"}),
    ("a secret ARN with an 11-digit account", {"SecretArns": "arn:aws:secretsmanager:us-east-1:12345678901:secret:x"}),
]


def policy_params(template: dict, params: dict[str, Any], stack: Stack, role_arn: str | None) -> tuple[dict, list[str]]:
    """PolicyParams (as JSON) for a template parameter set, and the parameters it could not
    express (so that a refusal caused by one of them is not expected from the Rust side)."""
    declared = template["Parameters"]
    out: dict[str, Any] = {"partition": stack.partition, "region": stack.region, "account": stack.account}
    unexpressed = []
    for name, value in params.items():
        if name in NOT_POLICY:
            unexpressed.append(name)
        elif name in VPC:
            unexpressed.append(name)
        elif name not in STRINGS and name not in ("SecretArns", "SingleUserMasterFallback"):
            raise SystemExit(f"compare-rust: template parameter {name} has no mapping: add it to STRINGS or NOT_POLICY")

    def value(name: str) -> Any:
        return params[name] if name in params else declared[name].get("Default", "")

    for name, key in STRINGS.items():
        v = str(value(name))
        if v != "" or name == "RotationStrategy":
            out[key] = v
    raw = value("SecretArns")
    out["secret-arn"] = [s.strip() for s in raw.split(",")] if isinstance(raw, str) else list(raw)
    fallback = str(value("SingleUserMasterFallback"))
    if fallback in ("true", "false"):
        out["single-user-master-fallback"] = fallback == "true"
    else:
        unexpressed.append("SingleUserMasterFallback")
    subnets = value("VpcSubnetIds")
    out["vpc"] = (",".join(subnets) if isinstance(subnets, list) else str(subnets)).strip(", ") != ""
    if role_arn is not None:
        out["role-name"] = role_arn.split(":role/", 1)[1]
    return out, unexpressed


def python_documents(rendered: dict) -> dict[str, Any]:
    statements = [s for doc in rendered["key_policies"].values() for s in doc["Statement"]]
    return {
        "trust-policy": rendered["trust_policy"],
        "role-policy": rendered["role_policy"],
        "lambda-resource-policy": rendered["lambda_resource_policy"],
        "kms-key-policy": {"Version": "2012-10-17", "Statement": statements} if statements else None,
    }


def documents_from_dir(directory: Path) -> dict[str, Any]:
    docs = {}
    for name in DOCUMENTS:
        path = directory / f"{name}.json"
        docs[name] = json.loads(path.read_text()) if path.exists() else None
    return docs


def _text(doc: Any) -> str:
    return json.dumps(doc, indent=2) + "\n"


def collect(template: dict, root: Path | None) -> tuple[list[dict], list[str]]:
    """Cases: {id, params (PolicyParams JSON), expect: documents | "refused", why}."""
    cases: list[dict] = []
    skipped: list[str] = []
    if root is not None:
        dirs = sorted(p.parent for p in root.rglob("parameters.json"))
        if not dirs:
            raise SystemExit(f"compare-rust: no parameters.json under {root} (run python -m policy.render first)")
        for d in dirs:
            config = json.loads((d / "config.json").read_text())
            stack = Stack(partition=config.get("partition", "aws"), region=config["region"], account=config["account"])
            params = json.loads((d / "parameters.json").read_text())
            pp, _ = policy_params(template, params, stack, config["role_arn"])
            cases.append({"id": str(d.relative_to(root)), "params": pp, "expect": documents_from_dir(d)})
    for name, stack, params in extra_cases():
        rendered = render(template, params, stack)
        pp, _ = policy_params(template, params, stack, rendered["role_arn"])
        cases.append({"id": name, "params": pp, "expect": python_documents(rendered)})
    for name, params in ACCEPTED:
        rendered = render(template, params)
        pp, _ = policy_params(template, params, Stack(), rendered["role_arn"])
        cases.append({"id": f"accepted/{name}", "params": pp, "expect": python_documents(rendered)})
    for name, params in REFUSED + MORE_REFUSED:
        try:
            render(template, params)
        except TemplateError as e:
            why = str(e)
        else:
            raise SystemExit(f"compare-rust: the template accepts '{name}', listed as refused")
        pp, unexpressed = policy_params(template, params, Stack(), None)
        if unexpressed:
            skipped.append(f"refused/{name} (refused for {', '.join(sorted(unexpressed))}, as PolicyParams cannot express it)")
            continue
        cases.append({"id": f"refused/{name}", "params": pp, "expect": "refused", "why": why})
    return cases, skipped


def flags(params: dict[str, Any]) -> list[str]:
    """`pgrotatectl policy`'s flags for PolicyParams (whose JSON keys are the flag names)."""
    out: list[str] = []
    for name, value in params.items():
        if value is True:
            out.append(f"--{name}")
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            out += [f"--{name}={item}" for item in value]
        else:
            out.append(f"--{name}={value}")
    return out


def pgrotatectl(explicit: str | None) -> str:
    """The CLI to compare: the one named, else the release build (built now)."""
    if explicit:
        return explicit
    build = subprocess.run(BUILD, cwd=REPO, capture_output=True, text=True, check=False)
    if build.returncode != 0:
        raise SystemExit(f"compare-rust: `{' '.join(BUILD)}` failed:\n{build.stderr[-4000:]}")
    return str(REPO / "target" / "release" / "pgrotatectl")


def run_rust(binary: str, cases: list[dict]) -> dict[str, dict]:
    """Runs `pgrotatectl --json policy FLAGS` for each case: documents, or the error."""
    results = {}
    for case in cases:
        argv = [binary, "--json", "policy", *flags(case["params"])]
        run = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False, env={})
        if run.returncode == 0:
            results[case["id"]] = {"documents": json.loads(run.stdout)}
        else:
            detail = run.stdout.strip() or run.stderr.strip()
            results[case["id"]] = {"error": f"exit {run.returncode}: {detail[-2000:]}", "argv": argv}
    return results


def compare(cases: list[dict], results: dict[str, dict]) -> list[str]:
    problems = []
    for case in cases:
        got = results.get(case["id"])
        if got is None:
            problems.append(f"{case['id']}: no result from the Rust renderer")
            continue
        if case["expect"] == "refused":
            if "error" not in got:
                problems.append(f"{case['id']}: the template refuses it ({case['why']}), the Rust renderer renders it")
            continue
        if "error" in got:
            problems.append(f"{case['id']}: the Rust renderer refuses it: {got['error']}")
            continue
        for name in DOCUMENTS:
            want, have = _text(case["expect"][name]), _text(got["documents"][name])
            if want != have:
                diff = "".join(difflib.unified_diff(want.splitlines(True), have.splitlines(True),
                                                    f"template {name}", f"rust {name}", n=2))
                problems.append(f"{case['id']}: {name} differs:\n{diff}")
    return problems


# The configs committed as fixtures for tests/policy.rs, and the parameter sets they come from.
FIXTURES = {
    "single-user": ("examples", "single-user"),
    "alternating-users-kms-vpc": ("examples", "alternating-users-kms-vpc"),
    "single-user-master-kms": ("examples", "single-user-master-kms"),
    "aws-cn-single-user-fallback-two-keys-vpc": ("extra", "aws-cn-single-user-fallback-two-keys-vpc"),
}


def fixture_cases(template: dict) -> dict[str, dict]:
    """The fixtures' cases, rendered now (examples from policy.matrix, extras from here)."""
    from policy.matrix import EXAMPLE_ARNS, SCENARIOS_BY_NAME, parameters

    extras = {name.split("/", 1)[1]: (stack, params) for name, stack, params in extra_cases()}
    out = {}
    for fixture, (kind, name) in FIXTURES.items():
        if kind == "examples":
            vpc = name.endswith("-vpc")
            scenario = SCENARIOS_BY_NAME[name.removesuffix("-vpc")]
            stack, params = Stack(), parameters(scenario, EXAMPLE_ARNS, vpc)
        else:
            stack, params = extras[name]
        rendered = render(template, params, stack)
        pp, _ = policy_params(template, params, stack, rendered["role_arn"])
        out[fixture] = {"params": pp, "documents": python_documents(rendered)}
    return out


def write_fixtures(template: dict, directory: Path) -> None:
    for name, case in fixture_cases(template).items():
        d = directory / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "params.json").write_text(_text(case["params"]))
        for doc in DOCUMENTS:
            path = d / f"{doc}.json"
            if case["documents"][doc] is None:
                path.unlink(missing_ok=True)
            else:
                path.write_text(_text(case["documents"][doc]))
        print(f"compare-rust: wrote {d}")


def check_fixtures(template: dict, directory: Path) -> list[str]:
    problems = []
    expected = fixture_cases(template)
    present = {p.name for p in directory.iterdir() if p.is_dir()} if directory.is_dir() else set()
    for stale in sorted(present - set(expected)):
        problems.append(f"fixture {directory / stale} is not one of {sorted(expected)}")
    for name, case in expected.items():
        d = directory / name
        files = {"params": case["params"], **case["documents"]}
        for doc, want in files.items():
            path = d / f"{doc}.json"
            have = path.read_text() if path.exists() else None
            if (None if want is None else _text(want)) != have:
                problems.append(f"fixture {path} is not what template.yaml renders now: "
                                "run python -m policy.compare_rust --write-fixtures tests/fixtures/policy")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", help="where policy.render wrote the configs")
    parser.add_argument("--template", default=str(REPO / "template.yaml"))
    parser.add_argument("--pgrotatectl", default=os.environ.get("PGROTATECTL"),
                        help="the pgrotatectl binary (default: $PGROTATECTL, else a release build)")
    parser.add_argument("--fixtures", help="check the Rust test's fixtures in this directory")
    parser.add_argument("--write-fixtures", metavar="DIR", help="write the Rust test's fixtures and stop")
    args = parser.parse_args(argv)
    template = load_template(args.template)
    if args.write_fixtures:
        write_fixtures(template, Path(args.write_fixtures))
        return 0
    cases, skipped = collect(template, Path(args.root) if args.root else None)
    problems = compare(cases, run_rust(pgrotatectl(args.pgrotatectl), cases))
    if args.fixtures:
        problems += check_fixtures(template, Path(args.fixtures))
    rendered = sum(1 for c in cases if c["expect"] != "refused")
    refused = len(cases) - rendered
    for s in skipped:
        print(f"compare-rust: skipped {s}")
    for p in problems:
        print(f"compare-rust: FAILED: {p}", file=sys.stderr)
    print(f"compare-rust: {rendered} configurations compared (4 documents each), {refused} refused parameter sets; "
          f"{len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
