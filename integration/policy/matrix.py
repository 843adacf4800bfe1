"""The parameter sets the proof renders: strategy x KMS key x VPC, plus single user with a
master secret (fallback on and off) and alternating users with an RDS-managed master secret
(no host: AllowedDbHosts set).

A *scenario* is what a rotation run exercises (strategy, customer managed keys, a master
secret, the single-user master fallback, the vouched hosts); a *config* is a scenario deployed
with or without a VPC. Recordings are made per scenario (the VPC changes nothing the function
calls) and evaluated against both of its configs.

Scenario names are also the names of the end-to-end suite's recordings
(target/recordings/e2e/<name>.meta.json): keep them stable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from policy.cfn import ACCOUNT, REGION

SINGLE = "single-user"
ALTERNATING = "alternating-users"


@dataclass(frozen=True)
class Scenario:
    name: str
    strategy: str
    kms: bool  # the rotated secrets are under a customer managed key
    master: bool  # the rotated secret names a master secret (masterarn)
    master_key: str | None = None  # None, "same" (the rotated secrets' key) or "separate"
    # SingleUserMasterFallback (single user only): the master secret is read when neither the
    # current nor the previous password logs in. Off: the master secret is never read.
    fallback: bool = False
    # AllowedDbHosts (None: not set). Required when the master secret has no host.
    allowed_hosts: str | None = None
    master_has_host: bool = True  # False: an RDS-managed master secret (username, password only)

    @property
    def reads_master(self) -> bool:
        """The function may read the master secret (so the role may)."""
        return self.master and (self.strategy == ALTERNATING or self.fallback)


SCENARIOS = [
    Scenario("single-user", SINGLE, kms=False, master=False),
    Scenario("single-user-kms", SINGLE, kms=True, master=False),
    Scenario("alternating-users", ALTERNATING, kms=False, master=True),
    Scenario("alternating-users-kms", ALTERNATING, kms=True, master=True, master_key="separate"),
    # Single user with masterarn and SingleUserMasterFallback=true: the master is read only
    # when neither the current nor the previous password logs in.
    Scenario("single-user-master", SINGLE, kms=False, master=True, fallback=True),
    Scenario("single-user-master-kms", SINGLE, kms=True, master=True, master_key="same", fallback=True),
    # Single user with masterarn and the fallback off (the default): the master secret is never
    # read, and the role cannot read it (nor decrypt it, even under the rotated secrets' key).
    Scenario("single-user-master-nofallback", SINGLE, kms=False, master=True),
    Scenario("single-user-master-nofallback-kms", SINGLE, kms=True, master=True, master_key="same"),
    # Alternating users with an RDS-managed master secret (no host): the master password goes
    # only to a host of AllowedDbHosts.
    Scenario("alternating-users-rds-master", ALTERNATING, kms=False, master=True,
             allowed_hosts="*.example.internal", master_has_host=False),
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
    alarm_topic: str | None = None  # AlarmTopicArn, for the configs rendered with the alarm

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
    alarm_topic=f"arn:aws:sns:{REGION}:{ACCOUNT}:pgrotate-alarms",
)

# Example configs also rendered with AlarmTopicArn (the alarm and the EventBridge rule add no
# permission to the role; checkov runs on their resolved template, parliament on the topic
# policy statements, policy.alarm_check on the rule's pattern and the alarm's metric), with two
# rotated secrets (a name-?????? pattern and a full ARN): the rule has a prefix for each.
ALARM_EXAMPLES = [("single-user", False), ("alternating-users-kms", True)]
ALARM_ARNS = replace(
    EXAMPLE_ARNS,
    rotated=[EXAMPLE_ARNS.rotated[0], f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:pgrotate/reporting-Xy12Zw"],
)


def as_pattern(secret_arn: str) -> str:
    """A secret ARN with its random six-character suffix replaced by ??????, the form AWS
    recommends for policies (matches that name, whatever the suffix)."""
    if len(secret_arn) > 7 and secret_arn[-7] == "-":
        return secret_arn[:-6] + "??????"
    return secret_arn


def config_names(scenario_name: str) -> list[str]:
    return [scenario_name, f"{scenario_name}-vpc"]


def alarm_config_name(scenario_name: str, vpc: bool) -> str:
    return f"{config_names(scenario_name)[int(vpc)]}-alarm"


def parameters(scenario: Scenario, arns: Arns, vpc: bool, alarm: bool = False) -> dict[str, Any]:
    """Template parameters for a scenario, deployed with or without a VPC (and with the alarm).

    The master secret (and its key) is given to the template only when the function reads it:
    a single-user deployment with the fallback off does not name it (the template refuses
    MasterSecretArn there)."""
    if scenario.fallback and scenario.strategy != SINGLE:
        raise ValueError(f"scenario {scenario.name}: the master fallback is for single user only")
    params: dict[str, Any] = {
        "FunctionName": arns.function_name,
        "RotationStrategy": scenario.strategy,
        "SecretArns": ",".join(arns.rotated),
    }
    if scenario.strategy == SINGLE:
        params["SingleUserMasterFallback"] = "true" if scenario.fallback else "false"
    if scenario.allowed_hosts:
        params["AllowedDbHosts"] = scenario.allowed_hosts
    if scenario.master and not arns.master:
        raise ValueError(f"scenario {scenario.name} needs a master secret ARN")
    if scenario.reads_master:
        params["MasterSecretArn"] = arns.master
    if scenario.kms:
        if not arns.key:
            raise ValueError(f"scenario {scenario.name} needs a KMS key ARN")
        params["KmsKeyArn"] = arns.key
    if scenario.master_key == "separate" and not arns.master_key:
        raise ValueError(f"scenario {scenario.name} needs a master KMS key ARN")
    if scenario.reads_master and scenario.master_key == "same":
        params["MasterKmsKeyArn"] = arns.key
    elif scenario.reads_master and scenario.master_key == "separate":
        params["MasterKmsKeyArn"] = arns.master_key
    if vpc:
        params["VpcSubnetIds"] = ",".join(arns.subnets)
        params["VpcSecurityGroupIds"] = ",".join(arns.security_groups)
    if alarm:
        if not arns.alarm_topic:
            raise ValueError(f"scenario {scenario.name} with the alarm needs a topic ARN")
        params["AlarmTopicArn"] = arns.alarm_topic
    return params
