"""parliament on every rendered policy: no finding at any severity (community auditors
included), except the findings template.yaml lists as expected by design.

    python -m policy.parliament_check target/policy [--template template.yaml]

The expected findings are in the template's Metadata, next to the statements they are about
(pgrotate-policy-proof.parliament-expected), each with its reason:

    - policy: role-policy              rendered file kind (role-policy, kms-key-policy, ...)
      statements: [VpcNetworkInterfaces]   Sids of the statements it may be reported on
      issue: RESOURCE_STAR             parliament's issue code
      actions: [ec2:..., ...]          the finding must name only these actions
      condition_key: lambda:...        optional: the finding must be about this key
      comment: why it is expected

A finding is accepted only when an entry matches all of it (file kind, the statement holding
the reported line, issue, every action it names, the condition key); every entry must match
some finding (a stale entry fails too). parliament runs once, over every file.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from policy.cfn import load_template

REPO = Path(__file__).resolve().parents[2]
KINDS = ("role-policy", "lambda-resource-policy", "kms-key-policy", "alarm-topic-policy")


def expected_findings(template: dict) -> list[dict]:
    entries = template.get("Metadata", {}).get("pgrotate-policy-proof", {}).get("parliament-expected", [])
    for i, entry in enumerate(entries):
        missing = {"policy", "statements", "issue", "actions", "comment"} - set(entry)
        if missing:
            raise SystemExit(f"parliament-expected[{i}] lacks {sorted(missing)}")
    return entries


def statement_lines(path: Path) -> list[tuple[int, int, str | None]]:
    """(first line, last line, Sid) of each statement of a policy written with indent=2 (as
    policy.render writes them): statements open with '    {' and close with '    }'."""
    policy = json.loads(path.read_text())
    statements = policy["Statement"] if isinstance(policy["Statement"], list) else [policy["Statement"]]
    spans, start = [], None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line in ("    {",):
            start = n
        elif line in ("    }", "    },") and start is not None:
            spans.append((start, n))
            start = None
    if len(spans) != len(statements):
        raise SystemExit(f"{path}: cannot map lines to statements (not written by policy.render?)")
    return [(a, b, s.get("Sid")) for (a, b), s in zip(spans, statements)]


def _actions(finding: dict) -> list[str]:
    detail = finding.get("detail")
    if isinstance(detail, list):
        return [str(d) for d in detail]
    m = re.search(r"for action (\S+)", str(detail or ""))
    return [m.group(1)] if m else []


def matches(entry: dict, kind: str, sid: str | None, finding: dict) -> bool:
    actions = _actions(finding)
    return (
        entry["policy"] == kind
        and sid in entry["statements"]
        and entry["issue"] == finding["issue"]
        and bool(actions)
        and all(a.lower() in {x.lower() for x in entry["actions"]} for a in actions)
        and ("condition_key" not in entry or f" {entry['condition_key']} ".lower() in f" {finding.get('detail')} ".lower())
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="where policy.render wrote the configs")
    parser.add_argument("--template", default=str(REPO / "template.yaml"))
    args = parser.parse_args(argv)
    entries = expected_findings(load_template(args.template))
    files = sorted(p for kind in KINDS for p in Path(args.root).rglob(f"{kind}.json"))
    if not files:
        print(f"parliament: FAILED: no rendered policy under {args.root}", file=sys.stderr)
        return 1
    if any("," in str(f) for f in files):
        print("parliament: FAILED: a policy path contains a comma (parliament --files splits on it)", file=sys.stderr)
        return 1
    parliament = Path(sys.executable).parent / "parliament"
    run = subprocess.run(
        [str(parliament), "--minimum_severity", "INFO", "--include-community-auditors", "--json",
         "--files", ",".join(str(f) for f in files)],
        capture_output=True, text=True, check=False,
    )
    if run.stderr.strip():
        print(run.stderr, file=sys.stderr)
    findings = []
    for line in run.stdout.splitlines():
        if not line.strip():
            continue
        try:
            findings.append(json.loads(line))
        except json.JSONDecodeError:
            print(f"parliament: FAILED: unexpected output: {line}", file=sys.stderr)
            return 1
    if run.returncode not in (0, 1) or (run.returncode == 1 and not findings):
        print(f"parliament: FAILED: exit status {run.returncode}", file=sys.stderr)
        return 1

    spans: dict[str, list] = {}
    used = [0] * len(entries)
    unexpected = []
    for finding in findings:
        path = Path(finding.get("location", {}).get("filepath", ""))
        kind = path.stem
        if str(path) not in spans and path.exists():
            spans[str(path)] = statement_lines(path)
        line = finding.get("location", {}).get("line")
        sid = next((s for a, b, s in spans.get(str(path), []) if line is not None and a <= line <= b), None)
        hit = [i for i, e in enumerate(entries) if matches(e, kind, sid, finding)]
        for i in hit:
            used[i] += 1
        if not hit:
            unexpected.append(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path} "
                              f"(statement {sid}): {finding['severity']} {finding['issue']}: {finding.get('detail')}")
    print(f"parliament: {len(files)} policies, {len(findings)} findings, "
          f"{len(findings) - len(unexpected)} of them expected by design (template.yaml Metadata)")
    for i, entry in enumerate(entries):
        print(f"parliament: expected {entry['issue']} on {entry['policy']} {entry['statements']}: {used[i]} findings")
    stale = [entries[i] for i, n in enumerate(used) if n == 0]
    for entry in stale:
        print(f"parliament: FAILED: expected finding never reported (stale entry): {entry['issue']} on "
              f"{entry['policy']} {entry['statements']}", file=sys.stderr)
    for item in unexpected:
        print(f"parliament: FAILED: {item}", file=sys.stderr)
    return 1 if unexpected or stale else 0


if __name__ == "__main__":
    sys.exit(main())
