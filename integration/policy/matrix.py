"""The parameter sets the proof renders: strategy x KMS key x VPC, plus the single-user master
fallback.

A *scenario* is what a rotation run exercises (strategy, customer managed keys, a master
secret); a *config* is a scenario deployed with or without a VPC. Recordings are made per
scenario (the VPC changes nothing the function calls) and evaluated against both of its
configs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from policy.cfn import ACCOUNT, REGION

SINGLE = "single-user"
ALTERNATING = "alternating-users"


@dataclass(frozen=True)
class Scenario:
    name: str
    strategy: str
    kms: bool  # the rotated secrets are under a customer managed key
    master: bool  # the function may read a master secret
    master_key: str | None = None  # None, "same" (the rotated secrets' key) or "separate"


SCENARIOS = [
    Scenario("single-user", SINGLE, kms=False, master=False),
    Scenario("single-user-kms", SINGLE, kms=True, master=False),
    Scenario("alternating-users", ALTERNATING, kms=False, master=True),
    Scenario("alternating-users-kms", ALTERNATING, kms=True, master=True, master_key="separate"),
    # Single user with masterarn: the master is read only when neither the current nor the
    # previous password logs in.
    Scenario("single-user-master", SINGLE, kms=False, master=True),
    Scenario("single-user-master-kms", SINGLE, kms=True, master=True, master_key="same"),
]
SCENARIOS_BY_NAME = {s.name: s for s in SCENARIOS}


@dataclass
class Arns:
    """The concrete names a parameter set is built from."""

    function_name: str
    rotated: list[str]  # secret ARNs (or ARN patterns ending in -??????)
    master: str | None = None
    key: str | None = None
    master_key: str | None = None
    subnets: list[str] = field(default_factory=lambda: ["subnet-0a1b2c3d4e5f60718", "subnet-0f1e2d3c4b5a69788"])
    security_groups: list[str] = field(default_factory=lambda: ["sg-0123456789abcdef0"])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _secret(name: str) -> str:
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-??????"


# Example names for the documentation matrix (target/policy/examples).
EXAMPLE_ARNS = Arns(
    function_name="pgrotate",
    rotated=[_secret("pgrotate/app-user")],
    master=_secret("pgrotate/master"),
    key=f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1111aaaa-2222-3333-4444-555566667777",
    master_key=f"arn:aws:kms:{REGION}:{ACCOUNT}:key/8888bbbb-9999-aaaa-bbbb-ccccddddeeee",
)


def as_pattern(secret_arn: str) -> str:
    """A secret ARN with its random six-character suffix replaced by ??????, the form AWS
    recommends for policies (matches that name, whatever the suffix)."""
    if len(secret_arn) > 7 and secret_arn[-7] == "-":
        return secret_arn[:-6] + "??????"
    return secret_arn


def config_names(scenario_name: str) -> list[str]:
    return [scenario_name, f"{scenario_name}-vpc"]


def parameters(scenario: Scenario, arns: Arns, vpc: bool) -> dict[str, Any]:
    """Template parameters for a scenario, deployed with or without a VPC."""
    params: dict[str, Any] = {
        "FunctionName": arns.function_name,
        "RotationStrategy": scenario.strategy,
        "SecretArns": ",".join(arns.rotated),
    }
    if scenario.master:
        if not arns.master:
            raise ValueError(f"scenario {scenario.name} needs a master secret ARN")
        params["MasterSecretArn"] = arns.master
    if scenario.kms:
        if not arns.key:
            raise ValueError(f"scenario {scenario.name} needs a KMS key ARN")
        params["KmsKeyArn"] = arns.key
    if scenario.master_key == "same":
        params["MasterKmsKeyArn"] = arns.key
    elif scenario.master_key == "separate":
        if not arns.master_key:
            raise ValueError(f"scenario {scenario.name} needs a master KMS key ARN")
        params["MasterKmsKeyArn"] = arns.master_key
    if vpc:
        params["VpcSubnetIds"] = ",".join(arns.subnets)
        params["VpcSecurityGroupIds"] = ",".join(arns.security_groups)
    return params
