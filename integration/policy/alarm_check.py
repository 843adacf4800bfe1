"""The AlarmTopicArn resources do what they are for, on every config policy.render wrote.

    python -m policy.alarm_check target/policy

With AlarmTopicArn (configs whose config.json says "alarm": true):
  - the EventBridge rule's pattern (valid JSON, matched with moto's EventBridge matcher) matches
    Secrets Manager's RotationFailed event (a CloudTrail service event, the secret's ARN in
    detail.additionalEventData.SecretId) for each rotated secret, the random suffix of a
    -?????? entry filled in; and not: another secret of the account, the master secret (not
    rotated by this function), RotationSucceeded, the RotateSecret API call, another source;
    its one target is the topic, without a role (SNS takes the topic policy);
  - the CloudWatch alarm reads namespace pgrotate, metric RotationFailed, with dimensions that
    are one of the dimension sets the function's EMF records carry (EMF_DIMENSION_SETS), the
    value of FunctionName being this function: Sum >= 1 over 5 minutes, missing data not a
    failure, the topic as its action;
  - alarm-topic-policy.json (the AlarmTopicPolicyStatements output) lets exactly these two
    publish: cloudwatch.amazonaws.com from this alarm, events.amazonaws.com from this rule.
Without it: no alarm, no rule, no output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from moto.events.models import EventPattern

# The dimension sets of the function's EMF records (issue 13): [Step, Strategy] for the
# per-step view, and [FunctionName] (the function's name, AWS_LAMBDA_FUNCTION_NAME) for the
# alarm, which must see every failure of this function and none of another pgrotate stack's.
EMF_DIMENSION_SETS = [["Step", "Strategy"], ["FunctionName"]]


def secretsmanager_event(secret_arn: str, event_name: str = "RotationFailed",
                         detail_type: str = "AWS Service Event via CloudTrail",
                         source: str = "aws.secretsmanager") -> dict:
    """An EventBridge event as Secrets Manager's CloudTrail service events look."""
    account, region = secret_arn.split(":")[4], secret_arn.split(":")[3]
    return {
        "version": "0", "id": "d82e0a2d-f36e-11fd-37cb-cba423a71196", "detail-type": detail_type,
        "source": source, "account": account, "time": "2026-01-01T00:50:20Z", "region": region, "resources": [],
        "detail": {
            "eventVersion": "1.08",
            "userIdentity": {"accountId": account, "invokedBy": "secretsmanager.amazonaws.com"},
            "eventTime": "2026-01-01T00:50:20Z", "eventSource": "secretsmanager.amazonaws.com",
            "eventName": event_name, "awsRegion": region, "sourceIPAddress": "secretsmanager.amazonaws.com",
            "userAgent": "secretsmanager.amazonaws.com",
            "errorMessage": "Error when executing lambda during createSecret step",
            "requestParameters": None, "responseElements": None,
            "additionalEventData": {"SecretId": secret_arn},
            "eventType": "AwsServiceEvent", "managementEvent": True, "recipientAccountId": account,
            "eventCategory": "Management",
        },
    }


def concrete(secret: str) -> str:
    return secret[:-6] + "AbCdEf" if secret.endswith("-??????") else secret


def check_config(d: Path) -> list[str]:
    config = json.loads((d / "config.json").read_text())
    template = json.loads((d / "template.json").read_text())
    resources = template["Resources"]
    alarms = {k: r for k, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    rules = {k: r for k, r in resources.items() if r["Type"] == "AWS::Events::Rule"}
    outputs = template.get("Outputs", {})
    name = str(d)
    if not config.get("alarm"):
        found = sorted(alarms) + sorted(rules) + [o for o in outputs if o == "AlarmTopicPolicyStatements"]
        return [f"{name}: no AlarmTopicArn, yet {found}"] if found else []

    problems = []
    topic = config["arns"]["alarm_topic"]
    function = config["function_arn"].rsplit(":", 1)[1]
    if len(alarms) != 1 or len(rules) != 1:
        return [f"{name}: expected one alarm and one rule, found {sorted(alarms)} and {sorted(rules)}"]
    (alarm,) = alarms.values()
    (rule,) = rules.values()

    # The rule.
    p = rule["Properties"]
    try:
        raw = p["EventPattern"] if isinstance(p["EventPattern"], str) else json.dumps(p["EventPattern"])
        pattern = EventPattern.load(raw)
    except Exception as e:  # moto raises its own exception types
        return [f"{name}: the rule's EventPattern is not a valid pattern: {e}"]
    rotated = [concrete(s) for s in config["arns"]["rotated"]]
    for secret in rotated:
        if not pattern.matches_event(secretsmanager_event(secret)):
            problems.append(f"{name}: the rule misses RotationFailed of the rotated secret {secret}")
        for label, event in [
            ("RotationSucceeded", secretsmanager_event(secret, "RotationSucceeded")),
            ("the RotateSecret API call", secretsmanager_event(secret, "RotateSecret", "AWS API Call via CloudTrail")),
            ("another source", secretsmanager_event(secret, source="aws.lambda")),
        ]:
            if pattern.matches_event(event):
                problems.append(f"{name}: the rule matches {label} for {secret}")
    first = rotated[0]
    others = [first.rsplit(":secret:", 1)[0] + ":secret:someone-else/db-XyZ123"]
    if config["arns"].get("master"):
        others.append(concrete(config["arns"]["master"]))
    for other in others:
        if pattern.matches_event(secretsmanager_event(other)):
            problems.append(f"{name}: the rule matches RotationFailed of {other}, not rotated by this function")
    targets = p.get("Targets", [])
    if [t.get("Arn") for t in targets] != [topic] or any("RoleArn" in t for t in targets):
        problems.append(f"{name}: the rule's targets are {targets}, expected the topic {topic} alone, without a role")
    if p.get("State") != "ENABLED":
        problems.append(f"{name}: the rule is {p.get('State')}")

    # The alarm.
    a = alarm["Properties"]
    dims = {x["Name"]: x["Value"] for x in a.get("Dimensions", [])}
    expected = {
        "Namespace": "pgrotate", "MetricName": "RotationFailed", "Statistic": "Sum", "Period": 300,
        "EvaluationPeriods": 1, "Threshold": 1, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "notBreaching", "AlarmActions": [topic],
    }
    for key, want in expected.items():
        if a.get(key) != want:
            problems.append(f"{name}: the alarm's {key} is {a.get(key)!r}, expected {want!r}")
    if sorted(dims) not in [sorted(s) for s in EMF_DIMENSION_SETS]:
        problems.append(f"{name}: the alarm's dimensions {sorted(dims)} are none of the EMF dimension sets "
                        f"{EMF_DIMENSION_SETS}: it would watch a metric the function never writes")
    elif dims != {"FunctionName": function}:
        problems.append(f"{name}: the alarm watches {dims}, expected this function's metric (FunctionName={function})")

    # The topic policy statements.
    path = d / "alarm-topic-policy.json"
    if not path.exists():
        return problems + [f"{name}: no alarm-topic-policy.json (AlarmTopicPolicyStatements output)"]
    statements = json.loads(path.read_text())["Statement"]
    alarm_arn = f"arn:{config['partition']}:cloudwatch:{config['region']}:{config['account']}:alarm:{a['AlarmName']}"
    rule_arn = f"arn:{config['partition']}:events:{config['region']}:{config['account']}:rule/{p['Name']}"
    want = {("cloudwatch.amazonaws.com", alarm_arn), ("events.amazonaws.com", rule_arn)}
    have = set()
    for s in statements:
        ok = (s.get("Effect") == "Allow" and s.get("Action") == "sns:Publish" and s.get("Resource") == topic
              and s.get("Condition", {}).get("StringEquals") == {"aws:SourceAccount": config["account"]})
        if not ok:
            problems.append(f"{name}: topic policy statement {s.get('Sid')} is not sns:Publish on {topic} "
                            "for this account only")
        have.add((s.get("Principal", {}).get("Service"), s.get("Condition", {}).get("ArnEquals", {}).get("aws:SourceArn")))
    if have != want or len(statements) != 2:
        problems.append(f"{name}: topic policy statements allow {sorted(have)}, expected {sorted(want)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="where policy.render wrote the configs")
    args = parser.parse_args(argv)
    configs = sorted(p.parent for p in Path(args.root).rglob("config.json"))
    with_alarm = [d for d in configs if json.loads((d / "config.json").read_text()).get("alarm")]
    if not with_alarm:
        print(f"alarm-check: FAILED: no config with AlarmTopicArn under {args.root}", file=sys.stderr)
        return 1
    problems = [p for d in configs for p in check_config(d)]
    for p in problems:
        print(f"alarm-check: FAILED: {p}", file=sys.stderr)
    print(f"alarm-check: {len(with_alarm)} configs with AlarmTopicArn (rule pattern, alarm metric, topic policy), "
          f"{len(configs) - len(with_alarm)} without (no alarm resource); {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
