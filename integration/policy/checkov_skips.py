"""The execution role's checkov skips hide only what they are for.

    python -m policy.checkov_skips target/policy [--template template.yaml]

checkov skips a check for a whole resource, so a skip on the role, justified by one statement,
would also hide that check's findings on every other statement. template.yaml lists, for each
skip of the role (Resources.Role.Metadata.checkov.skip), the statements it is for
(Metadata.pgrotate-policy-proof.checkov-role-skips). This runs checkov, once, on every resolved
config that policy.render wrote, with the role's skips lifted and only the skipped checks on,
and requires each check to fail exactly on the configs whose role has one of its statements
(and to pass on all the others).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from policy.cfn import load_template

REPO = Path(__file__).resolve().parents[2]


def _role(template: dict) -> tuple[str, dict]:
    roles = [(k, r) for k, r in template["Resources"].items() if r["Type"] == "AWS::IAM::Role"]
    if len(roles) != 1:
        raise SystemExit(f"expected one AWS::IAM::Role, found {len(roles)}")
    return roles[0]


def _sids(role: dict) -> set[str]:
    statements = role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    return {s.get("Sid") for s in (statements if isinstance(statements, list) else [statements])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="where policy.render wrote the configs")
    parser.add_argument("--template", default=str(REPO / "template.yaml"))
    args = parser.parse_args(argv)
    template = load_template(args.template)
    _, role = _role(template)
    skipped = {s["id"] for s in role.get("Metadata", {}).get("checkov", {}).get("skip", [])}
    declared = {e["id"]: set(e["statements"]) for e in
                template.get("Metadata", {}).get("pgrotate-policy-proof", {}).get("checkov-role-skips", [])}
    problems = []
    if skipped != set(declared):
        problems.append(f"the role skips {sorted(skipped)} but checkov-role-skips lists {sorted(declared)}")
    if not declared:
        print("checkov-skips: the role skips no check")
        return 1 if problems else 0

    configs = sorted(p.parent for p in Path(args.root).rglob("template.json"))
    if not configs:
        print(f"checkov-skips: FAILED: no resolved template under {args.root}", file=sys.stderr)
        return 1
    expected_fail: dict[str, set[str]] = {}
    with tempfile.TemporaryDirectory(prefix="pgrotate-checkov-skips-") as tmp:
        for config in configs:
            resolved = json.loads((config / "template.json").read_text())
            _, resolved_role = _role(resolved)
            resolved_role.get("Metadata", {}).pop("checkov", None)
            name = str(config.relative_to(args.root)).replace("/", "__")
            (Path(tmp) / f"{name}.json").write_text(json.dumps(resolved, indent=2))
            sids = _sids(resolved_role)
            expected_fail[name] = {check for check, statements in declared.items() if statements & sids}
        # Relative paths, for the reason given in policy-proof.sh (checkov_resolved).
        run = subprocess.run(
            [str(Path(sys.executable).parent / "checkov"), "--directory", ".", "--framework", "cloudformation",
             "--skip-download", "--check", ",".join(sorted(declared)), "--output", "json"],
            capture_output=True, text=True, check=False, cwd=tmp,
        )
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        print(f"checkov-skips: FAILED: checkov output is not JSON (exit {run.returncode}):\n"
              f"{run.stdout[-2000:]}\n{run.stderr[-2000:]}", file=sys.stderr)
        return 1
    reports = report if isinstance(report, list) else [report]
    failed: dict[str, set[str]] = {name: set() for name in expected_fail}
    passed: dict[str, set[str]] = {name: set() for name in expected_fail}
    for r in reports:
        results = r.get("results", {})
        for kind, into in (("failed_checks", failed), ("passed_checks", passed)):
            for c in results.get(kind, []):
                if c.get("resource", "").startswith("AWS::IAM::Role"):
                    into.setdefault(Path(c["file_path"]).stem, set()).add(c["check_id"])
    for name in sorted(expected_fail):
        for check in sorted(declared):
            must_fail = check in expected_fail[name]
            if must_fail and check not in failed[name]:
                problems.append(f"{name}: {check} passes with the skip lifted, although the role has "
                                f"{sorted(declared[check])}: the skip may no longer be needed")
            if not must_fail and check in failed[name]:
                problems.append(f"{name}: {check} fails with the skip lifted on a role without "
                                f"{sorted(declared[check])}: the skip hides a finding on another statement")
            if not must_fail and check not in passed[name]:
                problems.append(f"{name}: {check} was not evaluated on the role")
    n_fail = sum(len(v) for v in expected_fail.values())
    print(f"checkov-skips: {len(configs)} resolved configs, role skips {sorted(declared)} lifted: "
          f"{n_fail} expected failures (configs with {sorted(set().union(*declared.values()))}), "
          f"{len(configs) * len(declared) - n_fail} expected passes")
    if problems:
        for p in problems:
            print(f"checkov-skips: FAILED: {p}", file=sys.stderr)
        return 1
    print("checkov-skips: OK: each skip of the role hides only the finding on its own statements")
    return 0


if __name__ == "__main__":
    sys.exit(main())
