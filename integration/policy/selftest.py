"""The proof must be able to fail: weaken or widen a rendered policy in known ways and check
that policy.evaluate reports each one.

    python -m policy.selftest [--policy target/policy] [--requests target/policy/requests.jsonl]

Uses the fixture configs that exercise every statement (alternating users with two keys and
a VPC; single user with the master fallback under the same key; single user with a master
secret under the same key and the fallback off, in a VPC). Also evaluates the role
policy of AWS's reference rotation template (single user, from the Secrets Manager
documentation) against the same requests: it must fail (GetRandomPassword is never used, the
secret statement has no rotation-function condition, the log and KMS grants are missing).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

from policy.cfn import TemplateError, load_template, render
from policy.evaluate import Failures, evaluate_config
from policy.matrix import EXAMPLE_ARNS

REPO = Path(__file__).resolve().parents[2]
_SECRET = EXAMPLE_ARNS.rotated[0]
# Parameter sets CloudFormation must refuse (AllowedPattern / Rules of template.yaml), so that
# no deployment can widen the role by a parameter.
REFUSED = [
    ("alternating-users without MasterSecretArn", {"RotationStrategy": "alternating-users", "SecretArns": _SECRET}),
    ("MasterKmsKeyArn without MasterSecretArn", {"SecretArns": _SECRET, "MasterKmsKeyArn": EXAMPLE_ARNS.key}),
    ("subnets without security groups", {"SecretArns": _SECRET, "VpcSubnetIds": "subnet-0a1b2c3d"}),
    ("no SecretArns", {"SecretArns": ""}),
    ("a * in SecretArns", {"SecretArns": _SECRET.replace("??????", "*")}),
    ("a secret ARN and an empty entry", {"SecretArns": _SECRET + ","}),
    ("a * as MasterSecretArn", {"SecretArns": _SECRET, "MasterSecretArn": "*"}),
    ("a KMS alias instead of a key ARN", {"SecretArns": _SECRET,
                                          "KmsKeyArn": "arn:aws:kms:us-east-1:123456789012:alias/secrets"}),
    ("an unknown strategy", {"SecretArns": _SECRET, "RotationStrategy": "multi-user"}),
    ("SingleUserMasterFallback with alternating-users",
     {"RotationStrategy": "alternating-users", "SecretArns": _SECRET, "MasterSecretArn": EXAMPLE_ARNS.master,
      "SingleUserMasterFallback": "true"}),
    ("SingleUserMasterFallback without MasterSecretArn", {"SecretArns": _SECRET, "SingleUserMasterFallback": "true"}),
    ("single-user MasterSecretArn with the fallback off (it would grant nothing the function uses)",
     {"SecretArns": _SECRET, "MasterSecretArn": EXAMPLE_ARNS.master}),
    ("SingleUserMasterFallback=yes", {"SecretArns": _SECRET, "SingleUserMasterFallback": "yes"}),
    ("AllowedDbHosts with a space", {"SecretArns": _SECRET, "AllowedDbHosts": "db1.example.com, db2.example.com"}),
    ("AllowedDbHosts with a * inside a name", {"SecretArns": _SECRET, "AllowedDbHosts": "db*.example.com"}),
    ("AllowedDbHosts with a bare *", {"SecretArns": _SECRET, "AllowedDbHosts": "*"}),
    ("AllowedDbHosts with an empty entry", {"SecretArns": _SECRET, "AllowedDbHosts": "db1.example.com,"}),
    ("AllowedDbHosts as a URL", {"SecretArns": _SECRET, "AllowedDbHosts": "postgres://db1.example.com"}),
]
# Parameter sets that must be accepted.
ACCEPTED = [
    ("SecretArns only", {"SecretArns": _SECRET}),
    ("single-user with the master fallback",
     {"SecretArns": _SECRET, "MasterSecretArn": EXAMPLE_ARNS.master, "SingleUserMasterFallback": "true"}),
    ("AllowedDbHosts: exact names, a wildcard suffix, an address",
     {"SecretArns": _SECRET,
      "AllowedDbHosts": "db1.example.com,*.abc123xyz.eu-west-1.rds.amazonaws.com,10.0.3.17,DB2.Example.COM"}),
]

CONFIGS = ["fixture/alternating-users-kms-vpc", "fixture/single-user-master-kms"]
VPC = ["fixture/alternating-users-kms-vpc"]
NO_FALLBACK = ["fixture/single-user-master-nofallback-kms-vpc"]
ENI_ACTIONS = [
    "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
]


def _stmt(policy: dict, sid: str) -> dict:
    for s in policy["Statement"]:
        if s.get("Sid") == sid:
            return s
    raise KeyError(sid)


def _role(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        p = d / "role-policy.json"
        policy = json.loads(p.read_text())
        fn(policy)
        p.write_text(json.dumps(policy))
    return apply


def _file(name: str, fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        p = d / name
        policy = json.loads(p.read_text())
        fn(policy)
        p.write_text(json.dumps(policy))
    return apply


def _add(statement: dict) -> Callable[[dict], None]:
    return lambda p: p["Statement"].append(statement)


def _drop_condition(sid: str, op: str, key: str) -> Callable[[dict], None]:
    def fn(p: dict) -> None:
        s = _stmt(p, sid)
        del s["Condition"][op][key]
        if not s["Condition"][op]:
            del s["Condition"][op]
        if not s["Condition"]:
            del s["Condition"]
    return fn


def _set(sid: str, field: str, value) -> Callable[[dict], None]:
    return lambda p: _stmt(p, sid).__setitem__(field, value)


def _master_read(p: dict) -> None:
    """A MasterSecret statement as the role would have with the fallback on."""
    config_master = p.pop("_master")
    p["Statement"].append({"Sid": "MasterSecret", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                           "Resource": config_master})


def _with_master(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        master = json.loads((d / "config.json").read_text())["arns"]["master"]
        p = d / "role-policy.json"
        policy = json.loads(p.read_text())
        policy["_master"] = master
        fn(policy)
        policy.pop("_master", None)
        p.write_text(json.dumps(policy))
    return apply


def _environment(variable: str, value: str) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        p = d / "config.json"
        config = json.loads(p.read_text())
        config["environment"][variable] = value
        p.write_text(json.dumps(config))
    return apply


def _reference_policy(d: Path) -> None:
    config = json.loads((d / "config.json").read_text())
    secret = config["arns"]["rotated"][0]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue",
                                           "secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage"],
             "Resource": secret},
            {"Effect": "Allow", "Action": ["secretsmanager:GetRandomPassword"], "Resource": "*"},
            {"Effect": "Allow", "Action": ["ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface",
                                           "ec2:DescribeNetworkInterfaces", "ec2:DetachNetworkInterface"],
             "Resource": "*"},
        ],
    }
    (d / "role-policy.json").write_text(json.dumps(policy))


# (name, configs it applies to, mutation, text expected in some failure)
MUTATIONS = [
    ("no AllowRotationLambdaArn condition", CONFIGS,
     _role(_drop_condition("RotatedSecrets", "ArnEquals", "secretsmanager:resource/AllowRotationLambdaArn")),
     "rotation function is another Lambda"),
    ("rotated secrets on Resource *", CONFIGS, _role(_set("RotatedSecrets", "Resource", "*")), "another secret"),
    ("secret ARN with -* instead of -??????", CONFIGS,
     _role(lambda p: _stmt(p, "RotatedSecrets").__setitem__(
         "Resource", [r.replace("-??????", "-*") for r in _stmt(p, "RotatedSecrets")["Resource"]])),
     "a secret whose name extends this one's"),
    ("encryption context with -* instead of -??????", CONFIGS,
     _role(lambda p: _stmt(p, "RotatedSecretsKey")["Condition"]["StringLike"].__setitem__(
         "kms:EncryptionContext:SecretARN",
         [r.replace("-??????", "-*") for r in
          _stmt(p, "RotatedSecretsKey")["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"]])),
     "KMS for a secret whose name extends this one's"),
    ("GetRandomPassword added", CONFIGS,
     _role(_add({"Effect": "Allow", "Action": "secretsmanager:GetRandomPassword", "Resource": "*"})),
     "GetRandomPassword, which no request uses"),
    ("secretsmanager:* on the rotated secrets", CONFIGS,
     _role(_set("RotatedSecrets", "Action", "secretsmanager:*")), "wildcard action"),
    ("master statement may write", CONFIGS,
     _role(_set("MasterSecret", "Action", ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"])),
     "PutSecretValue on the master secret"),
    ("master statement dropped", CONFIGS,
     _role(lambda p: p["Statement"].remove(_stmt(p, "MasterSecret"))), "denied by the role policy"),
    ("KMS without kms:ViaService", CONFIGS,
     _role(_drop_condition("RotatedSecretsKey", "StringEquals", "kms:ViaService")), "not via Secrets Manager"),
    ("KMS without the encryption context", CONFIGS,
     _role(_drop_condition("RotatedSecretsKey", "StringLike", "kms:EncryptionContext:SecretARN")),
     "KMS for another secret"),
    ("KMS on Resource *", CONFIGS, _role(_set("RotatedSecretsKey", "Resource", "*")), "another KMS key"),
    ("KMS without GenerateDataKey", CONFIGS, _role(_set("RotatedSecretsKey", "Action", "kms:Decrypt")),
     "denied by the role policy: kms:GenerateDataKey"),
    ("master key may GenerateDataKey", ["fixture/alternating-users-kms-vpc"],
     _role(_set("MasterSecretKey", "Action", ["kms:Decrypt", "kms:GenerateDataKey"])),
     "GenerateDataKey (a write) for the master secret"),
    ("logs on every log group", CONFIGS, _role(_set("OwnLogGroup", "Resource", "*")), "another function's log group"),
    ("VPC Deny dropped", VPC,
     _role(lambda p: p["Statement"].remove(_stmt(p, "VpcNetworkInterfacesNotFromCode"))),
     "by the function's own code"),
    ("VPC Deny without its lambda:SourceFunctionArn condition", VPC,
     _role(lambda p: _stmt(p, "VpcNetworkInterfacesNotFromCode").pop("Condition")),
     "denied by the role policy: ec2:"),
    ("VPC Deny conditioned on another function", VPC,
     _role(lambda p: _stmt(p, "VpcNetworkInterfacesNotFromCode")["Condition"]["ArnEquals"].__setitem__(
         "lambda:SourceFunctionArn", "arn:aws:lambda:us-east-1:123456789012:function:another-function")),
     "by the function's own code"),
    ("VPC Deny without ec2:DescribeSubnets", VPC,
     _role(_set("VpcNetworkInterfacesNotFromCode", "Action", [a for a in ENI_ACTIONS if a != "ec2:DescribeSubnets"])),
     "DescribeSubnets by the function's own code"),
    ("VPC Deny twice", VPC,
     _role(lambda p: p["Statement"].append(copy.deepcopy(_stmt(p, "VpcNetworkInterfacesNotFromCode")))),
     "(Deny) denies no neighbour"),
    ("VPC statement without ec2:AssignPrivateIpAddresses", VPC,
     _role(_set("VpcNetworkInterfaces", "Action", [a for a in ENI_ACTIONS if a != "ec2:AssignPrivateIpAddresses"])),
     "denied by the role policy: ec2:AssignPrivateIpAddresses"),
    ("ec2:DetachNetworkInterface granted again", VPC,
     _role(_set("VpcNetworkInterfaces", "Action", ENI_ACTIONS + ["ec2:DetachNetworkInterface"])),
     "DetachNetworkInterface, which no request uses"),
    ("master secret readable with the fallback off", NO_FALLBACK, _with_master(_master_read),
     "the master secret read with the fallback off"),
    ("master secret decryptable with the fallback off", NO_FALLBACK,
     _with_master(lambda p: _stmt(p, "RotatedSecretsKey")["Condition"]["StringLike"].__setitem__(
         "kms:EncryptionContext:SecretARN",
         _stmt(p, "RotatedSecretsKey")["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"] + [p["_master"]])),
     "the master secret decrypted with the fallback off"),
    ("fallback off in the environment of a fallback-on config", ["fixture/single-user-master-kms"],
     _environment("SINGLE_USER_MASTER_FALLBACK", "false"), "the function's environment has SINGLE_USER_MASTER_FALLBACK"),
    ("fallback on in the environment of a fallback-off config", NO_FALLBACK,
     _environment("SINGLE_USER_MASTER_FALLBACK", "true"), "the function's environment has SINGLE_USER_MASTER_FALLBACK"),
    ("ALLOWED_DB_HOSTS lost", ["fixture/alternating-users-rds-master"],
     _environment("ALLOWED_DB_HOSTS", ""), "the function's environment has ALLOWED_DB_HOSTS"),
    ("a redundant statement", CONFIGS,
     _role(lambda p: p["Statement"].append(copy.deepcopy(_stmt(p, "OwnLogGroup")))), "is not needed"),
    ("resource policy without SourceAccount", CONFIGS,
     _file("lambda-resource-policy.json", lambda p: p["Statement"][0].pop("Condition")), "from another account"),
    ("key policy without kms:ViaService", CONFIGS,
     _file("kms-key-policy.json",
           lambda p: p["Statement"][0]["Condition"].pop("StringEquals")), "key policy ALLOWS"),
    ("AWS reference policy (single user)", CONFIGS, _reference_policy, "GetRandomPassword, which no request uses"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="target/policy")
    parser.add_argument("--requests", default="target/policy/requests.jsonl")
    args = parser.parse_args(argv)
    root = Path(args.policy)
    by_config: dict[str, list[dict]] = {}
    for line in Path(args.requests).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            by_config.setdefault(r["config"], []).append(r)
    problems = []
    # The unmutated configs must pass, or the mutations prove nothing.
    for config_id in sorted({c for _, configs, _, _ in MUTATIONS for c in configs}):
        if config_id not in by_config:
            problems.append(f"{config_id}: no requests in {args.requests}")
            continue
        failures = Failures()
        evaluate_config(config_id, root, by_config[config_id], failures)
        if failures.items:
            problems.append(f"{config_id}: fails before any mutation: {failures.items[:3]}")
    template = load_template(REPO / "template.yaml")
    for name, params in ACCEPTED:
        try:
            render(template, params)
        except TemplateError as e:
            problems.append(f"parameter set '{name}' is refused: {e}")
    for name, params in REFUSED:
        try:
            render(template, params)
        except TemplateError as e:
            print(f"selftest: refused parameter set '{name}': {e}")
        else:
            problems.append(f"parameter set '{name}' is accepted by the template; it must be refused")
    checked = 0
    with tempfile.TemporaryDirectory(prefix="pgrotate-selftest-") as tmp:
        for name, configs, mutate, expected in MUTATIONS:
            for config_id in configs:
                if config_id not in by_config:
                    problems.append(f"mutation '{name}': no requests for {config_id} in {args.requests}")
                    continue
                work = Path(tmp) / name.replace(" ", "_").replace("/", "_")
                if work.exists():
                    shutil.rmtree(work)
                shutil.copytree(root / config_id, work / config_id)
                mutate(work / config_id)
                failures = Failures()
                evaluate_config(config_id, work, by_config[config_id], failures)
                checked += 1
                if not any(expected in item for item in failures.items):
                    problems.append(
                        f"mutation '{name}' on {config_id} not caught as expected ({expected!r}); "
                        f"failures were: {failures.items[:3]}"
                    )
                else:
                    print(f"selftest: caught '{name}' on {config_id} ({len(failures.items)} failures)")
    if problems:
        print("selftest: FAILED:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"selftest: OK: {checked} mutated policies, each refused by the evaluator for the expected reason")
    return 0


if __name__ == "__main__":
    sys.exit(main())
