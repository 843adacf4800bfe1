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
# All cargo commands use the release profile so dependencies compile once. To keep a cold run
# short on 2 cores, work that waits on something else overlaps work that waits on the CPU:
# install-deps.sh (pip and npm downloads) runs in the background while fmt, clippy and the test
# build compile; `sam build` (a second, LTO release build) runs niced in the background while the
# policy proof and the version matrix run, the matrix running the test binaries already built
# (a `cargo test` there would wait for sam build's lock on target/). Each background job is a
# PASS/FAIL line of the summary like any step, with its output printed when it ends.
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
BG_PIDS=()
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

# bg_start NAME LOG COMMAND...: starts a step in the background (its own process group, so
# finish can stop it with its children), output to LOG. Sets BG_PID.
bg_start() {
    local name="$1" log="$2"
    shift 2
    say "$name (in the background, output shown when it ends)"
    rm -f "$log.end"
    set -m
    # The subshell notes when the command ended, for the summary's duration.
    (
        rc=0
        "$@" || rc=$?
        date +%s >"$log.end"
        exit "$rc"
    ) >"$log" 2>&1 &
    BG_PID=$!
    set +m
    BG_PIDS+=("$BG_PID")
}

# bg_wait NAME LOG PID START: waits for a background step, prints its output, records
# PASS/FAIL like step does (START: its start in seconds since the epoch).
bg_wait() {
    local name="$1" log="$2" pid="$3" start="$4" rc=0 end took BG_WAIT_FROM
    BG_WAIT_FROM=$SECONDS
    wait "$pid" || rc=$?
    say "$name (ended)"
    cat "$log" >&2
    end="$(cat "$log.end" 2>/dev/null || date +%s)"
    took="$((end - start))s, in the background; waited for $((SECONDS - BG_WAIT_FROM))s"
    if [ "$rc" -eq 0 ]; then
        RESULTS+=("PASS  $name ($took)")
    else
        RESULTS+=("FAIL  $name (exit $rc, $took)")
        FAILED=1
    fi
    return "$rc"
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
finish() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    for pid in ${BG_PIDS[@]+"${BG_PIDS[@]}"}; do
        kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    done
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
mkdir -p "$REPO/target"
DEPS_LOG="$REPO/target/install-deps.log"
DEPS_START=$(date +%s)
bg_start "integration/install-deps.sh" "$DEPS_LOG" bash "$HERE/install-deps.sh"
DEPS_PID=$BG_PID

step "cargo fmt --check" cargo fmt --check
step "cargo clippy --release --all-targets -- -D warnings" \
    cargo clippy --release --all-targets -- -D warnings
# The tests and what they run (the library's unit tests, the integration tests and the binaries
# they start), not the examples (demo, benchmark): clippy above has already compiled those.
if [ "$#" -eq 0 ]; then TEST_ARGS=(--tests); else TEST_ARGS=("$@"); fi
step "cargo test --release --no-run ${TEST_ARGS[*]} (build)" cargo test --release --no-run "${TEST_ARGS[@]}"

bg_wait "integration/install-deps.sh" "$DEPS_LOG" "$DEPS_PID" "$DEPS_START" || exit 1
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

# The end-to-end suite records the real binary's Secrets Manager requests for the policy
# proof; clear old ones so the proof can only see this run's.
rm -rf "$REPO/target/recordings/e2e"
step "cargo test --release ${TEST_ARGS[*]}" cargo test --release --no-fail-fast "${TEST_ARGS[@]}"

# The test binaries the matrix runs, located while no other cargo holds the lock.
declare -A TEST_EXE=()
if [ -n "$PG_MATRIX" ]; then
    while read -r target exe; do
        TEST_EXE[$target]="$exe"
    done < <(cargo test --release --no-run --message-format=json \
        --test postgres --test pair_safety --test tls --test e2e 2>/dev/null \
        | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])
')
fi

# `sam build` of the template (a full run only), niced, while the checks below run.
SAM_PID=""
if [ "$#" -eq 0 ] && [ -f "$HERE/policy/sam-build.sh" ]; then
    SAM_LOG="$REPO/target/sam-build.log"
    SAM_START=$(date +%s)
    bg_start "integration/policy/sam-build.sh (sam build)" "$SAM_LOG" \
        nice -n 19 bash "$HERE/policy/sam-build.sh"
    SAM_PID=$BG_PID
fi

# ---- more checks --------------------------------------------------------------------
# Hook point for checks that need the stack or the built binary. Each runs only if its
# script exists, so the list can grow without editing the steps above.
if [ -f "$HERE/policy-proof.sh" ]; then
    if [ "$#" -eq 0 ]; then
        # A full run proves the policy against the requests the real binary made (sam build
        # runs in the background, above).
        PGROTATE_RECORDINGS="target/recordings/e2e" PGROTATECTL="$REPO/target/release/pgrotatectl" \
            step "integration/policy-proof.sh" bash "$HERE/policy-proof.sh"
    else
        PGROTATECTL="$REPO/target/release/pgrotatectl" \
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
    (source "$dir/env" && "$@")
}
# run_test_exe TARGET [FILTER...]: runs the built test binary of tests/TARGET (as cargo test
# would: from the repository's root).
# shellcheck disable=SC2317 # invoked through step
run_test_exe() {
    local target="$1"
    shift
    local exe="${TEST_EXE[$target]:-}"
    if [ -z "$exe" ] || [ ! -x "$exe" ]; then
        echo "integration/test.sh: no built test binary for tests/$target" >&2
        return 1
    fi
    "$exe" "$@"
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
            for target in postgres pair_safety tls; do
                step "[pg $major] tests/$target" in_stack "$dir" run_test_exe "$target"
            done
            # shellcheck disable=SC2086 # the filter may be several words
            step "[pg $major] tests/e2e -- $PG_MATRIX_E2E" \
                in_stack "$dir" run_test_exe e2e $PG_MATRIX_E2E
        fi
        PGROTATE_STACK_DIR="$dir" step "[pg $major] integration/stack-down.sh" bash "$HERE/stack-down.sh"
        MATRIX_STACK_DIR=""
    done
fi
# ---- end of the PostgreSQL version matrix ---------------------------------------------

if [ -n "$SAM_PID" ]; then
    bg_wait "integration/policy/sam-build.sh (sam build)" "$SAM_LOG" "$SAM_PID" "$SAM_START"
fi

exit 0
