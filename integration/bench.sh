#!/usr/bin/env bash
# The benchmark (issue 12), in one command from a clean clone:
#
#   bash integration/bench.sh            # full run: ~20 cold starts, 50 rotations per configuration
#   bash integration/bench.sh --quick    # fewer samples, for a quick look
#   bash integration/bench.sh --help     # the harness's options
#
# installs what is missing (integration/install-deps.sh), uses the local stack described by the
# environment (PGROTATE_PG_HOST & co., e.g. after `source .stack/env` or
# `source integration/compose.env`) or by <state dir>/env when it answers, else starts one
# (integration/stack-up.sh) and stops it on exit; builds the harness (integration/bench/main.rs,
# a cargo example over the test helpers) and the function as it is deployed: `sam build` runs
# `cargo lambda build --release` (thin LTO, one codegen unit, panic=abort, stripped), so the
# benchmark measures that artifact, target/lambda/pgrotate/bootstrap (the first build of it
# compiles the dependencies once more, into target/x86_64-unknown-linux-gnu; integration/test.sh's
# sam build shares it). The harness prints the table and writes target/bench/report.json (and
# target/bench/package/, the zipped artifact). Exit status 0 when the benchmark ran (budgets
# missed or not: the table says which).
#
# Environment: PGROTATE_BENCH_BINARY=release measures target/release/pgrotate (plain
# `cargo build --release`) instead of the Lambda artifact; PGROTATE_STACK_DIR (state dir of the
# stack, default <repo>/.stack), and what install-deps.sh and stack-up.sh read (PGROTATE_VENV, ...).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
STATE_DIR="${PGROTATE_STACK_DIR:-$REPO/.stack}"
cd "$REPO"

say() { printf '==> %s\n' "$*" >&2; }

for arg in "$@"; do
    case "$arg" in
        -h | --help)
            cargo build --release --quiet --example bench
            exec "$REPO/target/release/examples/bench" --help
            ;;
    esac
done

# True when the stack in the current environment answers (PostgreSQL, both clusters, and the
# Secrets Manager emulator).
env_stack_answers() {
    [ -n "${PGROTATE_PG_HOST:-}" ] && [ -n "${PGROTATE_PG_PORT:-}" ] \
        && [ -n "${PGROTATE_PG_PLAIN_PORT:-}" ] && [ -n "${PGROTATE_SM_ENDPOINT:-}" ] || return 1
    (
        endpoint="${PGROTATE_SM_ENDPOINT#http://}"
        endpoint="${endpoint%%/*}"
        exec 3<>"/dev/tcp/${PGROTATE_PG_HOST}/${PGROTATE_PG_PORT}" || exit 1
        exec 4<>"/dev/tcp/${PGROTATE_PG_HOST}/${PGROTATE_PG_PLAIN_PORT}" || exit 1
        exec 5<>"/dev/tcp/${endpoint%:*}/${endpoint##*:}" || exit 1
    ) 2>/dev/null
}

STARTED=0
# shellcheck disable=SC2317 # invoked by the EXIT trap
finish() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$STARTED" -eq 1 ]; then
        say "stopping the stack started by the benchmark"
        bash "$HERE/stack-down.sh" || rc=1
    fi
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "installing what is missing (integration/install-deps.sh)"
bash "$HERE/install-deps.sh"

if env_stack_answers; then
    say "using the stack of the environment (PGROTATE_PG_HOST=$PGROTATE_PG_HOST, port $PGROTATE_PG_PORT)"
elif [ -f "$STATE_DIR/env" ] && (
    # shellcheck source=/dev/null
    source "$STATE_DIR/env" && env_stack_answers
); then
    say "using the stack already running from $STATE_DIR"
    # shellcheck source=/dev/null
    source "$STATE_DIR/env"
else
    say "starting the local stack (integration/stack-up.sh)"
    STARTED=1
    # stack-up.sh prints the environment (the admin password included) on stdout: keep it
    # off the screen; its progress goes to stderr.
    bash "$HERE/stack-up.sh" >/dev/null
    # shellcheck source=/dev/null
    source "$STATE_DIR/env"
fi

say "building the harness and the release binary (cargo build --release)"
cargo build --release --bin pgrotate --example bench

VENV="${PGROTATE_VENV:-$REPO/.venv}"
if [ "${PGROTATE_BENCH_BINARY:-lambda}" = release ]; then
    export PGROTATE_BIN="$REPO/target/release/pgrotate"
    say "measuring the plain release binary (PGROTATE_BENCH_BINARY=release)"
else
    say "building the Lambda artifact as sam build does (cargo lambda build --release --bin pgrotate)"
    # cargo-lambda comes with integration/requirements.txt; its plain cargo backend builds for
    # the host (its default backend, zig, is for cross builds).
    PATH="$VENV/bin:$PATH" CARGO_LAMBDA_COMPILER="${CARGO_LAMBDA_COMPILER:-cargo}" \
        cargo lambda build --release --bin pgrotate
    export PGROTATE_BIN="$REPO/target/lambda/pgrotate/bootstrap"
fi

say "running the benchmark (target/release/examples/bench $*) on $PGROTATE_BIN"
"$REPO/target/release/examples/bench" "$@"
