"""Recordings of what the function asks AWS, and their conversion to IAM requests.

A recording set is a directory with, per scenario (see policy/matrix.py):
    <name>.moto.jsonl   moto's recorder dump (GET <endpoint>/moto-api/recorder/download-recording):
                        one JSON object per HTTP request, {"headers", "method", "url", "body",
                        "body_encoded"}; requests only, no responses
    <name>.meta.json    what the dump cannot say: the secrets' ARNs, their rotation function
                        and KMS key, the strategy, the deployment's settings that decide the
                        role (written by `capture`):
                          "name", "strategy", "function_name", "function_arn", "region",
                          "account", "rotated" [ARN...], "master" (ARN of the secret named by
                          masterarn, read or not; null: none), "key", "master_key",
                          "secrets" {ARN: {"Name", "RotationLambdaARN", "KmsKeyArn"}},
                          "recording" (the dump's file name), and optionally
                          "single_user_master_fallback" (bool, SINGLE_USER_MASTER_FALLBACK of
                          the run; absent: false) and "allowed_db_hosts" (ALLOWED_DB_HOSTS of
                          the run; absent or null: not set)

    python -m policy.recording capture --endpoint http://127.0.0.1:PORT --out DIR --name NAME \
        --strategy single-user [--function-name pgrotate] [--master-arn ARN] \
        [--single-user-master-fallback] [--allowed-db-hosts HOSTS]
        Stops moto's recorder, downloads the dump and describes the secrets and keys the
        function touched. For the end-to-end suite: start the recorder
        (POST <endpoint>/moto-api/recorder/start-recording, after reset-recording), run one
        rotation scenario through the binary, then call this.

    python -m policy.recording convert DIR [DIR ...] --policy target/policy --out FILE.jsonl
        Writes one IAM request per line:
        {"config", "source", "seq", "action", "resource", "context", "note"}
        - source "recorded": a request of the function (User-Agent with app/pgrotate), action
          from X-Amz-Target, resource the secret's ARN, context with
          secretsmanager:resource/AllowRotationLambdaArn from the secret's RotationLambdaARN
          and lambda:SourceFunctionArn = the function (Lambda sets it on every request made
          from the execution environment);
        - source "kms-via-secretsmanager": the KMS request Secrets Manager makes on the
          function's behalf for a secret under a customer managed key (reads -> kms:Decrypt,
          PutSecretValue -> kms:GenerateDataKey, with kms:ViaService and the encryption
          context kms:EncryptionContext:SecretARN);
        - source "lambda-service": what Lambda itself does with the execution role (log
          stream and events, with lambda:SourceFunctionArn as Lambda documents; network
          interfaces and the VPC validation when the config has a VPC, without that key).
          Not recorded.
        Each scenario's requests are emitted for both of its configs (without and with VPC).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterable

from policy.matrix import Arns, Scenario, as_pattern, config_names

APP_MARK = "app/pgrotate"
TARGET_SERVICES = {"secretsmanager": "secretsmanager", "TrentService": "kms"}
SECRET_READS = {"GetSecretValue"}
SECRET_WRITES = {"PutSecretValue"}  # operations that make Secrets Manager encrypt a new value
AWS_MANAGED_KEY = "alias/aws/secretsmanager"


class RecordingError(ValueError):
    pass


# -- reading moto's dump ------------------------------------------------------------------
def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def is_function_request(entry: dict) -> bool:
    headers = entry.get("headers", {})
    return any(APP_MARK in (_header(headers, h) or "") for h in ("User-Agent", "X-Amz-User-Agent"))


def _body(entry: dict) -> dict:
    body = entry.get("body") or ""
    if entry.get("body_encoded"):
        body = base64.b64decode(body).decode("utf-8")
    if not body:
        return {}
    try:
        return json.loads(body)
    except json.JSONDecodeError as e:
        raise RecordingError(f"request body is not JSON ({e}): {body[:200]!r}") from e


def _region(entry: dict, default: str) -> str:
    auth = _header(entry.get("headers", {}), "Authorization") or ""
    m = re.search(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/", auth)
    return m.group(1) if m else default


def function_requests(dump_path: Path) -> list[dict]:
    """The function's requests in a dump, in order, as {"service", "operation", "body",
    "region"}."""
    out = []
    for line_no, line in enumerate(dump_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        entry = json.loads(line)
        if not is_function_request(entry):
            continue
        target = _header(entry.get("headers", {}), "X-Amz-Target")
        if not target or "." not in target:
            raise RecordingError(
                f"{dump_path}:{line_no}: a request of the function without X-Amz-Target "
                f"({entry.get('method')} {entry.get('url')}): not a modelled AWS call"
            )
        prefix, operation = target.split(".", 1)
        if prefix not in TARGET_SERVICES:
            raise RecordingError(
                f"{dump_path}:{line_no}: the function called {target}, a service the policy "
                "proof does not model; add it to the template and to policy/recording.py"
            )
        out.append(
            {
                "service": TARGET_SERVICES[prefix],
                "operation": operation,
                "body": _body(entry),
                "region": _region(entry, "us-east-1"),
            }
        )
    return out


# -- capture (live moto) ------------------------------------------------------------------
def _clients(endpoint: str, region: str):
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
    )
    return (
        session.client("secretsmanager", endpoint_url=endpoint),
        session.client("kms", endpoint_url=endpoint),
    )


def _http(method: str, url: str) -> bytes:
    import urllib.request

    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback moto only
        return resp.read()


def capture(
    endpoint: str,
    out_dir: Path,
    name: str,
    strategy: str,
    function_name: str = "pgrotate",
    master_arn: str | None = None,
    region: str = "us-east-1",
    single_user_master_fallback: bool = False,
    allowed_db_hosts: str | None = None,
) -> dict:
    """Stop moto's recorder, save the dump and the metadata of the secrets the function used."""
    endpoint = endpoint.rstrip("/")
    out_dir.mkdir(parents=True, exist_ok=True)
    _http("POST", f"{endpoint}/moto-api/recorder/stop-recording")
    dump = _http("GET", f"{endpoint}/moto-api/recorder/download-recording")
    dump_path = out_dir / f"{name}.moto.jsonl"
    dump_path.write_bytes(dump)

    sm, kms = _clients(endpoint, region)
    secrets: dict[str, dict] = {}
    by_name: dict[str, str] = {}
    for page in sm.get_paginator("list_secrets").paginate():
        for s in page["SecretList"]:
            d = sm.describe_secret(SecretId=s["ARN"])
            key = d.get("KmsKeyId")
            key_arn = None
            if key and key != AWS_MANAGED_KEY:
                key_arn = kms.describe_key(KeyId=key)["KeyMetadata"]["Arn"]
            secrets[d["ARN"]] = {
                "Name": d["Name"],
                "RotationLambdaARN": d.get("RotationLambdaARN") or None,
                "KmsKeyArn": key_arn,
            }
            by_name[d["Name"]] = d["ARN"]

    requests = function_requests(dump_path)
    if not requests:
        raise RecordingError(f"{dump_path}: no request with {APP_MARK} in its User-Agent")
    account = next(iter(secrets)).split(":")[4] if secrets else "123456789012"
    function_arn = f"arn:aws:lambda:{region}:{account}:function:{function_name}"

    touched: dict[str, set[str]] = {}
    for r in requests:
        if r["service"] != "secretsmanager":
            continue
        arn = resolve_secret(r["body"].get("SecretId", ""), secrets, by_name)
        touched.setdefault(arn, set()).add(r["operation"])
    if master_arn is not None:
        master_arn = resolve_secret(master_arn, secrets, by_name)
    # The function describes and writes only the secret it rotates; the master is only read.
    rotated = sorted(
        arn
        for arn, ops in touched.items()
        if arn != master_arn
        and (secrets[arn]["RotationLambdaARN"] == function_arn or ops - SECRET_READS)
    )
    others = sorted(set(touched) - set(rotated))
    if master_arn is None and len(others) > 1:
        raise RecordingError(f"several secrets look like a master secret: {others}; pass --master-arn")
    master = master_arn or (others[0] if others else None)
    keys = {secrets[a]["KmsKeyArn"] for a in rotated}
    if len(keys) > 1:
        raise RecordingError(f"the rotated secrets use different KMS keys {keys}; the template takes one")
    meta = {
        "name": name,
        "strategy": strategy,
        "function_name": function_name,
        "function_arn": function_arn,
        "region": region,
        "account": account,
        "rotated": rotated,
        "master": master,
        "key": keys.pop() if keys else None,
        "master_key": secrets[master]["KmsKeyArn"] if master and master in secrets else None,
        "secrets": {a: s for a, s in secrets.items() if a in touched or a == master},
        "recording": dump_path.name,
        "single_user_master_fallback": single_user_master_fallback,
        "allowed_db_hosts": allowed_db_hosts or None,
    }
    (out_dir / f"{name}.meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def resolve_secret(secret_id: str, secrets: dict[str, dict], by_name: dict[str, str] | None = None) -> str:
    """A SecretId (name, full ARN, or ARN without the suffix) -> the secret's ARN."""
    if by_name is None:
        by_name = {s["Name"]: a for a, s in secrets.items()}
    if secret_id in secrets:
        return secret_id
    if secret_id in by_name:
        return by_name[secret_id]
    if secret_id.startswith("arn:"):
        for arn in secrets:
            if arn.startswith(secret_id + "-") and len(arn) == len(secret_id) + 7:
                return arn
    raise RecordingError(f"SecretId {secret_id!r} is not a secret in the recording's metadata")


# -- metadata -> parameter set ------------------------------------------------------------
def scenario_and_arns(meta: dict) -> tuple[Scenario, Arns]:
    key, master_key = meta.get("key"), meta.get("master_key")
    if master_key is None:
        mode = None
    elif master_key == key:
        mode = "same"
    else:
        mode = "separate"
    fallback = meta.get("single_user_master_fallback", False)
    if not isinstance(fallback, bool):
        raise RecordingError(f"{meta['name']}: single_user_master_fallback must be true or false, not {fallback!r}")
    if fallback and meta["strategy"] != "single-user":
        raise RecordingError(f"{meta['name']}: single_user_master_fallback is for single-user only")
    scenario = Scenario(
        name=meta["name"],
        strategy=meta["strategy"],
        kms=key is not None,
        master=meta.get("master") is not None,
        master_key=mode,
        fallback=fallback,
        allowed_hosts=meta.get("allowed_db_hosts") or None,
    )
    arns = Arns(
        function_name=meta["function_name"],
        rotated=[as_pattern(a) for a in meta["rotated"]],
        master=as_pattern(meta["master"]) if meta.get("master") else None,
        key=key,
        master_key=master_key,
    )
    return scenario, arns


# -- conversion ---------------------------------------------------------------------------
def _kms_requests(op: str, secret_arn: str, secret: dict, body: dict, region: str) -> list[dict]:
    key = secret.get("KmsKeyArn")
    if not key:
        return []
    if op in SECRET_READS:
        action = "kms:Decrypt"
    elif op in SECRET_WRITES:
        action = "kms:GenerateDataKey"
    else:
        return []
    context = {
        "kms:ViaService": f"secretsmanager.{region}.amazonaws.com",
        "kms:CallerAccount": secret_arn.split(":")[4],
        "kms:EncryptionContext:SecretARN": secret_arn,
    }
    version = body.get("ClientRequestToken") or body.get("VersionId")
    if version:
        context["kms:EncryptionContext:SecretVersionId"] = version
    return [
        {
            "source": "kms-via-secretsmanager",
            "action": action,
            "resource": key,
            "context": context,
            "note": f"Secrets Manager's {action.split(':')[1]} for {op}",
        }
    ]


def secret_requests(meta: dict, dump_path: Path) -> list[dict]:
    secrets = meta["secrets"]
    out = []
    for r in function_requests(dump_path):
        op, body, region = r["operation"], r["body"], r["region"]
        if r["service"] != "secretsmanager":
            raise RecordingError(f"{dump_path}: the function called {r['service']}:{op} directly")
        secret_id = body.get("SecretId")
        if not secret_id:
            raise RecordingError(f"{dump_path}: {op} without SecretId")
        arn = resolve_secret(secret_id, secrets)
        secret = secrets[arn]
        context: dict[str, Any] = {
            "aws:RequestedRegion": region,
            "secretsmanager:SecretId": secret_id,
        }
        if secret.get("RotationLambdaARN"):
            context["secretsmanager:resource/AllowRotationLambdaArn"] = secret["RotationLambdaARN"]
        for field in ("VersionStage", "VersionId"):
            if body.get(field):
                context[f"secretsmanager:{field}"] = body[field]
        details = [f"{k}={body[k]}" for k in ("VersionStage", "MoveToVersionId") if body.get(k)]
        if body.get("VersionStages"):
            details.append("VersionStages=" + "+".join(body["VersionStages"]))
        role = "master secret" if arn == meta.get("master") else "rotated secret"
        out.append(
            {
                "source": "recorded",
                "action": f"secretsmanager:{op}",
                "resource": arn,
                "context": context,
                "note": " ".join([role] + details),
            }
        )
        out.extend(_kms_requests(op, arn, secret, body, region))
    return out


def lambda_service_requests(config: dict) -> list[dict]:
    """What Lambda does with the execution role for this config (not made by the code).

    Lambda sets lambda:SourceFunctionArn on the log requests it makes for the function, and
    not on its EC2 requests (Lambda documentation, "Using source function ARN to control
    function access behavior"): the VPC statement's Deny, conditioned on that key, leaves
    them allowed."""
    region, account = config["region"], config["account"]
    log_group = config["log_group"]
    stream = f"arn:aws:logs:{region}:{account}:log-group:{log_group}:log-stream:2026/01/01/[$LATEST]0123456789abcdef"
    from_lambda_for_function = {"lambda:SourceFunctionArn": config["function_arn"]}
    out = [
        {"action": "logs:CreateLogStream", "resource": stream, "note": "Lambda opens the log stream",
         "context": from_lambda_for_function},
        {"action": "logs:PutLogEvents", "resource": stream, "note": "Lambda ships the function's logs",
         "context": from_lambda_for_function},
    ]
    if config["vpc"]:
        arns = config["arns"]
        eni = f"arn:aws:ec2:{region}:{account}:network-interface/eni-0123456789abcdef0"
        subnet = f"arn:aws:ec2:{region}:{account}:subnet/{arns['subnets'][0]}"
        sg = f"arn:aws:ec2:{region}:{account}:security-group/{arns['security_groups'][0]}"
        out += [
            {"action": "ec2:DescribeSubnets", "resource": "*", "note": "Lambda validates the configured subnets"},
            {"action": "ec2:DescribeNetworkInterfaces", "resource": "*", "note": "Lambda looks for its ENIs"},
            {"action": "ec2:CreateNetworkInterface", "resource": eni, "note": "Lambda creates the function's ENI"},
            {"action": "ec2:CreateNetworkInterface", "resource": subnet, "note": "... in the configured subnet"},
            {"action": "ec2:CreateNetworkInterface", "resource": sg, "note": "... with the configured security group"},
            {"action": "ec2:AssignPrivateIpAddresses", "resource": eni, "note": "Lambda assigns addresses on its ENI"},
            {"action": "ec2:UnassignPrivateIpAddresses", "resource": eni, "note": "Lambda releases them"},
            {"action": "ec2:DeleteNetworkInterface", "resource": eni, "note": "Lambda deletes an unused ENI"},
        ]
    for r in out:
        r["source"] = "lambda-service"
        r["context"] = {"aws:RequestedRegion": region, **r.get("context", {})}
    return out


def from_function_code(request: dict, function_arn: str) -> dict:
    """A recorded request as IAM sees it: made from the function's execution environment, so
    with lambda:SourceFunctionArn. (Secrets Manager's own KMS requests are not.)"""
    if request["source"] != "recorded":
        return request
    return {**request, "context": {**request["context"], "lambda:SourceFunctionArn": function_arn}}


def convert(directories: Iterable[Path], policy_root: Path) -> list[dict]:
    lines: list[dict] = []
    for directory in directories:
        metas = sorted(directory.glob("*.meta.json"))
        if not metas:
            raise RecordingError(f"{directory}: no *.meta.json (nothing recorded there)")
        for meta_path in metas:
            meta = json.loads(meta_path.read_text())
            dump_path = directory / meta.get("recording", f"{meta['name']}.moto.jsonl")
            recorded = secret_requests(meta, dump_path)
            if not recorded:
                raise RecordingError(f"{dump_path}: no request of the function ({APP_MARK})")
            for config_name in config_names(meta["name"]):
                config_id = f"{directory.name}/{config_name}"
                config_path = policy_root / config_id / "config.json"
                if not config_path.exists():
                    raise RecordingError(f"{config_path} missing: run python -m policy.render --recordings {directory}")
                config = json.loads(config_path.read_text())
                requests = [from_function_code(r, config["function_arn"]) for r in recorded]
                for seq, r in enumerate(requests + lambda_service_requests(config), 1):
                    lines.append({"config": config_id, "seq": seq, **r})
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    cap = sub.add_parser("capture", help="save moto's recording and the secrets' metadata")
    cap.add_argument("--endpoint", required=True)
    cap.add_argument("--out", required=True)
    cap.add_argument("--name", required=True, help="scenario name, e.g. e2e-single-user")
    cap.add_argument("--strategy", required=True, choices=["single-user", "alternating-users"])
    cap.add_argument("--function-name", default="pgrotate")
    cap.add_argument("--master-arn")
    cap.add_argument("--region", default="us-east-1")
    cap.add_argument("--single-user-master-fallback", action="store_true",
                     help="the run had SINGLE_USER_MASTER_FALLBACK=true")
    cap.add_argument("--allowed-db-hosts", help="ALLOWED_DB_HOSTS of the run")
    conv = sub.add_parser("convert", help="recording sets -> IAM requests (JSONL)")
    conv.add_argument("directories", nargs="+")
    conv.add_argument("--policy", default="target/policy", help="where policy.render wrote the configs")
    conv.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "capture":
            meta = capture(
                args.endpoint, Path(args.out), args.name, args.strategy,
                args.function_name, args.master_arn, args.region,
                args.single_user_master_fallback, args.allowed_db_hosts,
            )
            print(f"capture: {Path(args.out) / (args.name + '.meta.json')}: rotated {meta['rotated']}, master {meta['master']}")
        else:
            lines = convert([Path(d) for d in args.directories], Path(args.policy))
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("".join(json.dumps(line) + "\n" for line in lines))
            print(f"convert: {len(lines)} requests -> {out}")
    except RecordingError as e:
        print(f"recording: FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
