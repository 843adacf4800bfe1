"""Render template.yaml's policies to concrete JSON, one directory per config.

    python -m policy.render --examples                      # the documented matrix
    python -m policy.render --recordings target/recordings/fixture [...]

Writes under target/policy/ (override with --out):
    examples/<config>/          the matrix with example ARNs (strategy x KMS x VPC, single
                                user with a master secret and the fallback on or off,
                                alternating users with an RDS-managed master secret), and
                                two configs with AlarmTopicArn (<config>-alarm)
    <recording set>/<config>/   one per scenario recorded in that directory, with the ARNs of
                                the secrets and keys of the recording, with and without a VPC
Each config directory holds:
    parameters.json             the template parameters
    role-policy.json            the execution role's inline policy
    trust-policy.json           the role's trust policy
    lambda-resource-policy.json the function's resource policy (from AWS::Lambda::Permission)
    kms-key-policy.json         the KMS key policy statement(s) from the outputs, if any
    alarm-topic-policy.json     the SNS topic policy statements from the outputs (AlarmTopicArn)
    template.json               the whole template resolved for these parameters
    config.json                 scenario, whether the function reads the master secret, VPC
                                flag, ARNs (the master's too when the role may not read it),
                                partition, region, account, role and function ARNs, log
                                group, the function's environment
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from policy.cfn import ACCOUNT, PARTITION, REGION, TemplateError, check_sam_transform, load_template, render
from policy.matrix import (
    ALARM_ARNS,
    ALARM_EXAMPLES,
    EXAMPLE_ARNS,
    SCENARIOS,
    SCENARIOS_BY_NAME,
    Arns,
    Scenario,
    alarm_config_name,
    config_names,
    parameters,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "target" / "policy"


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def render_config(template: dict, scenario: Scenario, arns: Arns, vpc: bool, out_dir: Path,
                  alarm: bool = False) -> dict:
    params = parameters(scenario, arns, vpc, alarm)
    rendered = render(template, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(out_dir / "parameters.json", params)
    _write(out_dir / "role-policy.json", rendered["role_policy"])
    _write(out_dir / "trust-policy.json", rendered["trust_policy"])
    _write(out_dir / "lambda-resource-policy.json", rendered["lambda_resource_policy"])
    key_policy = None
    if rendered["key_policies"]:
        statements = [s for doc in rendered["key_policies"].values() for s in doc["Statement"]]
        key_policy = {"Version": "2012-10-17", "Statement": statements}
        _write(out_dir / "kms-key-policy.json", key_policy)
    elif (out_dir / "kms-key-policy.json").exists():
        (out_dir / "kms-key-policy.json").unlink()
    topic_statements = rendered["outputs"].get("AlarmTopicPolicyStatements")
    if topic_statements:
        _write(out_dir / "alarm-topic-policy.json",
               {"Version": "2012-10-17", "Statement": json.loads(topic_statements["Value"])})
    elif (out_dir / "alarm-topic-policy.json").exists():
        (out_dir / "alarm-topic-policy.json").unlink()
    _write(out_dir / "template.json", rendered["template"])
    config = {
        "scenario": scenario.__dict__,
        "reads_master": scenario.reads_master,
        "vpc": vpc,
        "alarm": alarm,
        "arns": arns.to_json(),
        "account": ACCOUNT,
        "region": REGION,
        "partition": PARTITION,
        "role_arn": rendered["role_arn"],
        "function_arn": rendered["function_arn"],
        "log_group": rendered["function"]["LoggingConfig"]["LogGroup"],
        "environment": rendered["function"]["Environment"]["Variables"],
    }
    _write(out_dir / "config.json", config)
    return config


def render_examples(template: dict, out: Path) -> list[str]:
    written = []
    for scenario in SCENARIOS:
        for name, vpc in zip(config_names(scenario.name), (False, True)):
            render_config(template, scenario, EXAMPLE_ARNS, vpc, out / "examples" / name)
            written.append(f"examples/{name}")
    for scenario_name, vpc in ALARM_EXAMPLES:
        name = alarm_config_name(scenario_name, vpc)
        render_config(template, SCENARIOS_BY_NAME[scenario_name], ALARM_ARNS, vpc, out / "examples" / name, alarm=True)
        written.append(f"examples/{name}")
    return written


def load_recording_metas(directory: Path) -> list[dict]:
    metas = sorted(directory.glob("*.meta.json"))
    return [json.loads(p.read_text()) for p in metas]


def render_recordings(template: dict, directory: Path, out: Path) -> list[str]:
    from policy.recording import scenario_and_arns

    written = []
    group = directory.name
    metas = load_recording_metas(directory)
    if not metas:
        raise SystemExit(f"render: no *.meta.json recordings in {directory}")
    for meta in metas:
        scenario, arns = scenario_and_arns(meta)
        for name, vpc in zip(config_names(meta["name"]), (False, True)):
            render_config(template, scenario, arns, vpc, out / group / name)
            written.append(f"{group}/{name}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", default=str(REPO / "template.yaml"))
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--examples", action="store_true", help="render the example matrix")
    parser.add_argument("--recordings", nargs="*", default=[], help="recording directories")
    args = parser.parse_args(argv)
    template = load_template(args.template)
    out = Path(args.out)
    written: list[str] = []
    try:
        check_sam_transform(template)
        print("render: SAM's transform adds no resource, role or policy to the template")
        if args.examples:
            written += render_examples(template, out)
        for directory in args.recordings:
            written += render_recordings(template, Path(directory), out)
    except (TemplateError, ValueError) as e:
        print(f"render: FAILED: {e}", file=sys.stderr)
        return 1
    for name in written:
        print(f"render: {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
