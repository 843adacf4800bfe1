"""Fixture recordings: the function's Secrets Manager calls, replayed with boto3 against a
moto server with its recorder on, one recording per scenario of policy/matrix.py.

    python -m policy.fixture [--out target/recordings/fixture]

Until the end-to-end suite records the real binary (PGROTATE_RECORDINGS), this exercises the
whole pipeline (record -> capture -> render -> convert -> evaluate) with the calls the
function is specified to make (SPEC.md sections 2-4), made with a client whose User-Agent
carries app/pgrotate like the function's:

    every step      DescribeSecret(rotated secret)
    createSecret    GetSecretValue AWSCURRENT, GetSecretValue(token, AWSPENDING) -> not found,
                    PutSecretValue(token, AWSPENDING)
    setSecret       GetSecretValue AWSCURRENT and AWSPENDING;
                    single user with masterarn and the fallback on: AWSPREVIOUS (the current
                    password failed), then the master secret;
                    single user with masterarn and the fallback off: AWSPREVIOUS (the current
                    password failed), then the step fails without reading the master secret;
                    the password is repaired by hand and Secrets Manager's retry of setSecret
                    reads AWSCURRENT and AWSPENDING again (the current password now works);
                    alternating users: the master secret
    testSecret      GetSecretValue AWSPENDING
    finishSecret    UpdateSecretVersionStage(AWSCURRENT -> token)

Secrets and keys are created by a second client without that mark (so they are not part of
the function's requests). The rotated secret's RotationLambdaARN is set through RotateSecret
with moto's Lambda stub (no Docker), as Secrets Manager sets it when rotation is configured.
The moto server runs on a free loopback port and is stopped at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path

from policy.matrix import ALTERNATING, SCENARIOS, Scenario
from policy.recording import capture

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
FUNCTION = "pgrotate"
ROTATED_NAME = "pgrotate/app-user"
MASTER_NAME = "pgrotate/master"
NEIGHBOUR_NAME = "pgrotate/other-user"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, data: dict | None = None) -> bytes:
    body = json.dumps(data).encode() if data is not None else b""
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback moto only
        return resp.read()


class MotoServer:
    def __init__(self, workdir: Path):
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "moto.log", "wb")
        env = dict(os.environ, MOTO_RECORDER_FILEPATH=str(workdir / "moto_recording"))
        moto = Path(sys.executable).parent / "moto_server"
        self.proc = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=2):  # noqa: S310
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {self.endpoint} (see {workdir}/moto.log)")
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _clients(endpoint: str, app: bool):
    import boto3
    from botocore.config import Config

    config = Config(user_agent_appid="pgrotate", retries={"max_attempts": 1}) if app else Config()
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    return {s: session.client(s, endpoint_url=endpoint, config=config) for s in ("secretsmanager", "kms", "iam", "lambda")}


def _stub_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("bootstrap", "#!/bin/sh\n")
    return buf.getvalue()


def _secret_json(username: str, master_arn: str | None) -> str:
    value = {
        "engine": "postgres",
        "host": "db.example.internal",
        "port": 5432,
        "dbname": "app",
        "username": username,
        "password": "initial-password-0",
    }
    if master_arn:
        value["masterarn"] = master_arn
    return json.dumps(value)


def attach_rotation_function(endpoint: str, secret_id: str, function_name: str = FUNCTION) -> str:
    """Make `function_name` the rotation function of a secret in moto, as Secrets Manager's
    RotateSecret(RotationLambdaARN=...) does, so that DescribeSecret reports RotationLambdaARN
    (the source of secretsmanager:resource/AllowRotationLambdaArn). For the end-to-end suite
    too: call it after creating a secret and before rotating it.

    moto wants the function to exist: it is created in moto's Lambda with the no-Docker stub,
    whose invocations do nothing. moto's RotateSecret(RotateImmediately=False) leaves an
    AWSPENDING version holding a copy of the current value; that label is removed again, so the
    secret is left as a real one with rotation configured and no rotation in progress.
    Returns the function's ARN."""
    _post(f"{endpoint}/moto-api/config", {"lambda": {"use_docker": False}})
    admin = _clients(endpoint, app=False)
    try:
        function_arn = admin["lambda"].get_function(FunctionName=function_name)["Configuration"]["FunctionArn"]
    except admin["lambda"].exceptions.ResourceNotFoundException:
        role_name = f"{function_name}-rotation-stub"
        try:
            role = admin["iam"].get_role(RoleName=role_name)["Role"]["Arn"]
        except admin["iam"].exceptions.NoSuchEntityException:
            role = admin["iam"].create_role(
                RoleName=role_name,
                AssumeRolePolicyDocument=json.dumps({
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                                   "Action": "sts:AssumeRole"}],
                }),
            )["Role"]["Arn"]
        function_arn = admin["lambda"].create_function(
            FunctionName=function_name, Runtime="provided.al2023", Role=role, Handler="bootstrap",
            Code={"ZipFile": _stub_zip()},
        )["FunctionArn"]
    sm = admin["secretsmanager"]
    sm.rotate_secret(
        SecretId=secret_id, RotationLambdaARN=function_arn,
        RotationRules={"AutomaticallyAfterDays": 30}, RotateImmediately=False,
    )
    for version, stages in sm.describe_secret(SecretId=secret_id)["VersionIdsToStages"].items():
        if "AWSPENDING" in stages and "AWSCURRENT" not in stages:
            sm.update_secret_version_stage(SecretId=secret_id, VersionStage="AWSPENDING", RemoveFromVersionId=version)
    return function_arn


def record_scenario(server: MotoServer, scenario: Scenario, out_dir: Path) -> dict:
    endpoint = server.endpoint
    _post(f"{endpoint}/moto-api/reset")
    _post(f"{endpoint}/moto-api/seed?a=4242")
    admin = _clients(endpoint, app=False)
    sm = admin["secretsmanager"]

    key = master_key = None
    if scenario.kms:
        key = admin["kms"].create_key(Description="pgrotate fixture: rotated secrets")["KeyMetadata"]["Arn"]
    if scenario.master_key == "same":
        master_key = key
    elif scenario.master_key == "separate":
        master_key = admin["kms"].create_key(Description="pgrotate fixture: master secret")["KeyMetadata"]["Arn"]

    master_arn = None
    if scenario.master:
        kwargs = {"KmsKeyId": master_key} if master_key else {}
        # An RDS-managed master secret holds only the user name and the password.
        value = _secret_json("postgres", None) if scenario.master_has_host else \
            json.dumps({"username": "postgres", "password": "master-password-0"})
        master_arn = sm.create_secret(Name=MASTER_NAME, SecretString=value, **kwargs)["ARN"]
    kwargs = {"KmsKeyId": key} if key else {}
    username = "app_user"
    rotated_arn = sm.create_secret(
        Name=ROTATED_NAME, SecretString=_secret_json(username, master_arn), **kwargs
    )["ARN"]
    # A neighbour the function must never touch.
    sm.create_secret(Name=NEIGHBOUR_NAME, SecretString=_secret_json("other_user", None), **kwargs)

    # Configure rotation with the function: sets RotationLambdaARN.
    attach_rotation_function(endpoint, rotated_arn, FUNCTION)
    current_version = next(
        v for v, stages in sm.describe_secret(SecretId=rotated_arn)["VersionIdsToStages"].items()
        if "AWSCURRENT" in stages
    )

    _post(f"{endpoint}/moto-api/recorder/reset-recording")
    _post(f"{endpoint}/moto-api/recorder/start-recording")
    fn = _clients(endpoint, app=True)["secretsmanager"]
    token = str(uuid.uuid4())
    not_found = fn.exceptions.ResourceNotFoundException

    def get(secret_id: str, **kw) -> None:
        try:
            fn.get_secret_value(SecretId=secret_id, **kw)
        except not_found:
            pass

    # createSecret
    fn.describe_secret(SecretId=rotated_arn)
    get(rotated_arn, VersionStage="AWSCURRENT")
    get(rotated_arn, VersionId=token, VersionStage="AWSPENDING")
    pending = json.loads(_secret_json(username + ("_clone" if scenario.strategy == ALTERNATING else ""), master_arn))
    pending["password"] = "new-password-1"
    fn.put_secret_value(
        SecretId=rotated_arn, ClientRequestToken=token, SecretString=json.dumps(pending),
        VersionStages=["AWSPENDING"],
    )
    # setSecret
    fn.describe_secret(SecretId=rotated_arn)
    get(rotated_arn, VersionStage="AWSCURRENT")
    get(rotated_arn, VersionId=token, VersionStage="AWSPENDING")
    if scenario.strategy == ALTERNATING:
        get(master_arn)
    elif scenario.master and scenario.fallback:
        # Single user: the current password no longer logs in, nor does the previous one.
        get(rotated_arn, VersionStage="AWSPREVIOUS")
        get(master_arn)
    elif scenario.master:
        # The same, with the fallback off: the step fails and the master secret is not read.
        get(rotated_arn, VersionStage="AWSPREVIOUS")
        # Secrets Manager retries setSecret after the password was repaired by hand.
        fn.describe_secret(SecretId=rotated_arn)
        get(rotated_arn, VersionStage="AWSCURRENT")
        get(rotated_arn, VersionId=token, VersionStage="AWSPENDING")
    # testSecret
    fn.describe_secret(SecretId=rotated_arn)
    get(rotated_arn, VersionId=token, VersionStage="AWSPENDING")
    # finishSecret
    fn.describe_secret(SecretId=rotated_arn)
    fn.update_secret_version_stage(
        SecretId=rotated_arn, VersionStage="AWSCURRENT", MoveToVersionId=token,
        RemoveFromVersionId=current_version,
    )

    return capture(
        endpoint, out_dir, scenario.name, scenario.strategy, FUNCTION, master_arn, REGION,
        single_user_master_fallback=scenario.fallback, allowed_db_hosts=scenario.allowed_hosts,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "target" / "recordings" / "fixture"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob("*.moto.jsonl")) + list(out.glob("*.meta.json")):
        stale.unlink()
    with tempfile.TemporaryDirectory(prefix="pgrotate-moto-") as workdir:
        server = MotoServer(Path(workdir))
        try:
            for scenario in SCENARIOS:
                meta = record_scenario(server, scenario, out)
                print(f"fixture: {scenario.name}: recorded {out / meta['recording']}")
        except Exception as e:
            print(f"fixture: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            log = Path(workdir) / "moto.log"
            if log.exists():
                print("----- last lines of moto.log -----", file=sys.stderr)
                print("\n".join(log.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)
            return 1
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
