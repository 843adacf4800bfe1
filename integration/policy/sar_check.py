"""template.yaml's AWS::ServerlessRepo::Application metadata is publishable.

    python -m policy.sar_check [--template template.yaml]

Read with the SAM CLI's own parser (the one `sam publish` uses) and checked against what it
requires to create an application and a version (Author, Description, Name, SemanticVersion),
the Serverless Application Repository's limits on each field (CreateApplication), the local
files `sam package` uploads (LicenseUrl, ReadmeUrl) being there, and the crate agreeing on
the version and the license.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

from policy.cfn import load_template

REPO = Path(__file__).resolve().parents[2]

# CreateApplication's constraints (Serverless Application Repository API reference).
LIMITS = [
    ("Name", r"[a-zA-Z0-9\-]+", 1, 140),
    ("Description", r"(?s).+", 1, 256),
    ("Author", r"[a-z0-9](([a-z0-9]|-(?!-))*[a-z0-9])?", 1, 127),
    ("SemanticVersion", r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?", 1, 64),
    ("HomePageUrl", r"https://\S+", 1, 1024),
    ("SourceCodeUrl", r"https://\S+", 1, 1024),
]
LABEL = re.compile(r"[a-zA-Z0-9+\-_:/@]+")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", default=str(REPO / "template.yaml"))
    args = parser.parse_args(argv)
    from samcli.vendor.serverlessrepo.exceptions import ServerlessRepoError
    from samcli.vendor.serverlessrepo.parser import get_app_metadata

    template_path = Path(args.template)
    template = load_template(template_path)
    problems = []
    try:
        metadata = get_app_metadata(template)
        metadata.validate(["author", "description", "name", "semantic_version"])
    except ServerlessRepoError as e:
        print(f"sar-check: FAILED: {e}", file=sys.stderr)
        return 1
    raw = metadata.template_dict
    for field, pattern, low, high in LIMITS:
        value = raw.get(field)
        if value is None:
            problems.append(f"{field} is missing")
        elif not (low <= len(str(value)) <= high and re.fullmatch(pattern, str(value))):
            problems.append(f"{field} {value!r} breaks the limits ({low} to {high} characters, {pattern})")
    labels = raw.get("Labels", [])
    if not 1 <= len(labels) <= 10 or not all(1 <= len(x) <= 127 and LABEL.fullmatch(x) for x in labels):
        problems.append(f"Labels {labels} break the limits (1 to 10 labels of {LABEL.pattern}, up to 127 characters)")
    for field in ("LicenseUrl", "ReadmeUrl"):
        path = template_path.parent / str(raw.get(field, ""))
        if not raw.get(field) or not path.is_file():
            problems.append(f"{field} {raw.get(field)!r} is not a file beside the template (sam package uploads it)")
    readme = template_path.parent / str(raw.get("ReadmeUrl", ""))
    if readme.is_file() and (readme.suffix not in (".md", ".txt") or readme.stat().st_size > 5 * 1024 * 1024):
        problems.append(f"ReadmeUrl {readme.name} must be a .md or .txt file of at most 5 MB")
    crate = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]
    if raw.get("SemanticVersion") != crate["version"]:
        problems.append(f"SemanticVersion {raw.get('SemanticVersion')} is not the crate's version {crate['version']}")
    if raw.get("SpdxLicenseId") != crate.get("license"):
        problems.append(f"SpdxLicenseId {raw.get('SpdxLicenseId')} is not the crate's license {crate.get('license')}")
    for p in problems:
        print(f"sar-check: FAILED: {p}", file=sys.stderr)
    if not problems:
        print(f"sar-check: {raw['Name']} {raw['SemanticVersion']} by {raw['Author']} ({raw['SpdxLicenseId']}): "
              f"publishable metadata, {raw['LicenseUrl']} and {raw['ReadmeUrl']} present")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
