#!/usr/bin/env bash
# The main job, in one command on a fresh machine:
#
#   bash integration/demo.sh
#
# installs what is missing (integration/install-deps.sh), starts the local stack
# (integration/stack-up.sh: TLS PostgreSQL with SCRAM, the Secrets Manager emulator) unless one
# is already running from the same state dir, builds the Lambda binary and the demo, then runs
# integration/demo.rs: a new database with the migrations applied, a single-user and an
# alternating-users secret, each rotated twice through the release Lambda binary under a
# Lambda runtime API emulator, with the labels, the current user and a login check of the old
# and new credentials printed after every rotation. No password is printed. A stack started
# here is stopped on exit; exit status 0 when every rotation and check succeeded.
#
# Environment: PGROTATE_STACK_DIR (state dir of the stack, default <repo>/.stack), and what
# install-deps.sh and stack-up.sh read.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
STATE_DIR="${PGROTATE_STACK_DIR:-$REPO/.stack}"
cd "$REPO"

say() { printf '==> %s\n' "$*" >&2; }

# True when the stack described by $STATE_DIR/env answers (PostgreSQL and the emulator).
stack_answers() {
    [ -f "$STATE_DIR/env" ] || return 1
    (
        # shellcheck source=/dev/null
        source "$STATE_DIR/env"
        endpoint="${PGROTATE_SM_ENDPOINT#http://}"
        endpoint="${endpoint%%/*}"
        exec 3<>"/dev/tcp/${PGROTATE_PG_HOST}/${PGROTATE_PG_PORT}" || exit 1
        exec 4<>"/dev/tcp/${endpoint%:*}/${endpoint##*:}" || exit 1
    ) 2>/dev/null
}

STARTED=0
# shellcheck disable=SC2317 # invoked by the EXIT trap
finish() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$STARTED" -eq 1 ]; then
        say "stopping the stack started by this demo"
        bash "$HERE/stack-down.sh" || rc=1
    fi
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "installing what is missing (integration/install-deps.sh)"
bash "$HERE/install-deps.sh"

if stack_answers; then
    say "using the stack already running from $STATE_DIR"
else
    say "starting the local stack (integration/stack-up.sh)"
    STARTED=1
    # stack-up.sh prints the environment (the admin password included) on stdout: keep it
    # off the screen; its progress goes to stderr.
    bash "$HERE/stack-up.sh" >/dev/null
fi
# shellcheck source=/dev/null
source "$STATE_DIR/env"

say "building the Lambda binary and the demo (cargo build --release)"
cargo build --release --bin pgrotate --example demo

say "running the demo"
"$REPO/target/release/examples/demo"
