#!/usr/bin/env bash
# THE test command: installs the dependencies, starts the integration stack, runs every check
# against it, stops the stack on every exit path, and exits non-zero if anything failed.
#
#   bash integration/test.sh [extra arguments for `cargo test`]
#
# With PGROTATE_EXTERNAL_STACK=1 (set by integration/compose.env) it uses the stack described
# by the PGROTATE_* variables already in the environment instead of starting one.
#
# PGROTATE_PG_MAJOR picks the PostgreSQL major of the stack (default Debian's; see
# integration/stack-up.sh). PGROTATE_PG_MATRIX (default "13 14 16 17 18" on a full run, none
# when cargo test is filtered; set it empty to skip the matrix): after the checks above, for each major listed, a stack of that major of its
# own (state dir <state>/pg<major>) runs the adapter, pair-safety and TLS tests and the end-to-end
# rotations named by PGROTATE_PG_MATRIX_E2E, then stops; each part is a PASS/FAIL line of the
# summary, prefixed "[pg <major>]". The majors are installed by install-deps.sh.
#
# All cargo commands use the release profile so dependencies compile once.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
cd "$REPO" || exit 1
STATE_DIR="${PGROTATE_STACK_DIR:-$REPO/.stack}"
export CI="${CI:-}"

RESULTS=()
FAILED=0
STACK_STARTED=0
MATRIX_STACK_DIR=""
T0=$SECONDS
# Every major RDS runs besides the default stack's (Debian's 15), on a full run only.
if [ "$#" -eq 0 ]; then
    PG_MATRIX="${PGROTATE_PG_MATRIX-13 14 16 17 18}"
else
    PG_MATRIX="${PGROTATE_PG_MATRIX:-}"
fi
# The end-to-end tests each matrix major runs (a cargo test filter).
# Pair equivalence and TLS verify-full (the rotations), the refusals that depend on the
# master's privileges (attacks), the self-signed TLS-only cluster.
PG_MATRIX_E2E="${PGROTATE_PG_MATRIX_E2E:-rotations::three_rotations attacks:: selfsigned::}"

say() { printf '\n==> %s\n' "$*" >&2; }

# step NAME COMMAND...: runs a check, records PASS/FAIL and its duration, never aborts.
step() {
    local name="$1" start=$SECONDS rc=0
    shift
    say "$name"
    "$@" || rc=$?
    if [ "$rc" -eq 0 ]; then
        RESULTS+=("PASS  $name ($((SECONDS - start))s)")
    else
        RESULTS+=("FAIL  $name (exit $rc, $((SECONDS - start))s)")
        FAILED=1
    fi
    return "$rc"
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
finish() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$MATRIX_STACK_DIR" ]; then
        say "stopping the matrix stack in $MATRIX_STACK_DIR"
        PGROTATE_STACK_DIR="$MATRIX_STACK_DIR" bash "$HERE/stack-down.sh" \
            || { RESULTS+=("FAIL  integration/stack-down.sh ($MATRIX_STACK_DIR)"); FAILED=1; }
    fi
    if [ "$STACK_STARTED" -eq 1 ]; then
        say "stopping the integration stack"
        bash "$HERE/stack-down.sh" || { RESULTS+=("FAIL  integration/stack-down.sh"); FAILED=1; }
    fi
    [ "$rc" -eq 0 ] || FAILED=1
    printf '\n==> summary (%ss)\n' "$((SECONDS - T0))"
    local r
    for r in ${RESULTS[@]+"${RESULTS[@]}"}; do printf '  %s\n' "$r"; done
    if [ "$FAILED" -ne 0 ]; then
        printf 'integration/test.sh: FAILED\n'
        [ "$rc" -ne 0 ] || rc=1
        exit "$rc"
    fi
    printf 'integration/test.sh: all checks passed\n'
    exit 0
}
trap finish EXIT
trap 'printf "\ninterrupted\n" >&2; exit 130' INT
trap 'printf "\nterminated\n" >&2; exit 143' TERM

if [ -n "$PG_MATRIX" ]; then
    # The matrix majors too (those Debian does not provide come from integration/pg-versions).
    export PGROTATE_PG_MAJORS="${PGROTATE_PG_MAJORS:-} $PG_MATRIX"
fi
step "integration/install-deps.sh" bash "$HERE/install-deps.sh" || exit 1
if [ "${PGROTATE_EXTERNAL_STACK:-}" = 1 ]; then
    # A stack started elsewhere (docker compose + integration/compose.env): use it as is.
    say "using the external stack from the environment (PGROTATE_EXTERNAL_STACK=1)"
    for v in PGROTATE_PG_HOST PGROTATE_PG_PORT PGROTATE_PG_PLAIN_PORT PGROTATE_PG_ADMIN_USER \
        PGROTATE_PG_ADMIN_PASSWORD PGROTATE_PG_CA PGROTATE_PG_LOG PGROTATE_PG_PLAIN_LOG \
        PGROTATE_PG_SELFSIGNED_PORT PGROTATE_PG_SELFSIGNED_CERT PGROTATE_PG_SELFSIGNED_LOG \
        PGROTATE_PG_OTHER_SELFSIGNED_CERT PGROTATE_PG_MAJOR PGROTATE_PG_SERVER_VERSION \
        PGROTATE_SM_ENDPOINT AWS_ENDPOINT_URL; do
        [ -n "${!v:-}" ] || { echo "integration/test.sh: PGROTATE_EXTERNAL_STACK=1 but $v is not set" >&2; exit 1; }
    done
else
    STACK_STARTED=1
    step "integration/stack-up.sh" bash "$HERE/stack-up.sh" || exit 1
    # shellcheck source=/dev/null
    source "$STATE_DIR/env" || exit 1
fi

step "cargo fmt --check" cargo fmt --check
step "cargo clippy --release --all-targets -- -D warnings" \
    cargo clippy --release --all-targets -- -D warnings
# The end-to-end suite records the real binary's Secrets Manager requests for the policy
# proof; clear old ones so the proof can only see this run's.
rm -rf "$REPO/target/recordings/e2e"
step "cargo test --release" cargo test --release --no-fail-fast "$@"

# ---- more checks --------------------------------------------------------------------
# Hook point for checks that need the stack or the built binary. Each runs only if its
# script exists, so the list can grow without editing the steps above.
if [ -f "$HERE/policy-proof.sh" ]; then
    if [ "$#" -eq 0 ]; then
        # A full run proves the policy against the requests the real binary made, and builds
        # the function with `sam build` from the template.
        PGROTATE_RECORDINGS="target/recordings/e2e" PGROTATE_SAM_BUILD=1 \
            step "integration/policy-proof.sh" bash "$HERE/policy-proof.sh"
    else
        step "integration/policy-proof.sh (fixture only: cargo test was filtered)" \
            bash "$HERE/policy-proof.sh"
    fi
fi
# ---- end of more checks -------------------------------------------------------------

# ---- PostgreSQL version matrix (PGROTATE_PG_MATRIX) ------------------------------------
# in_stack DIR COMMAND...: runs COMMAND with the environment of the stack in DIR.
# shellcheck disable=SC2317 # invoked through step
in_stack() {
    local dir="$1"
    shift
    # shellcheck source=/dev/null
    (source "$dir/env" && exec "$@")
}
if [ -n "$PG_MATRIX" ] && [ "${PGROTATE_EXTERNAL_STACK:-}" = 1 ]; then
    RESULTS+=("FAIL  PostgreSQL matrix: PGROTATE_PG_MATRIX needs the native stack, not PGROTATE_EXTERNAL_STACK=1")
    FAILED=1
elif [ -n "$PG_MATRIX" ]; then
    for major in $PG_MATRIX; do
        dir="$STATE_DIR/pg$major"
        MATRIX_STACK_DIR="$dir"
        if PGROTATE_STACK_DIR="$dir" PGROTATE_PG_MAJOR="$major" \
            step "[pg $major] integration/stack-up.sh" bash "$HERE/stack-up.sh"; then
            step "[pg $major] cargo test --release --test postgres --test pair_safety --test tls" \
                in_stack "$dir" cargo test --release --no-fail-fast --test postgres \
                --test pair_safety --test tls
            # shellcheck disable=SC2086 # the filter may be several words
            step "[pg $major] cargo test --release --test e2e -- $PG_MATRIX_E2E" \
                in_stack "$dir" cargo test --release --no-fail-fast --test e2e -- $PG_MATRIX_E2E
        fi
        PGROTATE_STACK_DIR="$dir" step "[pg $major] integration/stack-down.sh" bash "$HERE/stack-down.sh"
        MATRIX_STACK_DIR=""
    done
fi
# ---- end of the PostgreSQL version matrix ---------------------------------------------

exit 0
