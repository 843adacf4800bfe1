#!/usr/bin/env bash
# The full load test of the README's "Reliability" section: 200 secrets (half per strategy,
# several users per database) rotated by 8 function processes in flight, through the release
# binary, on a local stack this script starts and stops. Prints rotations per second and the
# slowest rotation. The test command runs the same test with 24 secrets.
#
#   bash integration/load.sh [SECRETS]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash integration/install-deps.sh
bash integration/stack-up.sh >/dev/null
trap 'bash integration/stack-down.sh >/dev/null' EXIT
# shellcheck source=/dev/null
source "${PGROTATE_STACK_DIR:-$REPO/.stack}/env"
PGROTATE_LOAD_SECRETS="${1:-200}" cargo test --release --test e2e load:: -- --nocapture
