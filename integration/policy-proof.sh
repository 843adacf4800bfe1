#!/usr/bin/env bash
# Proves that template.yaml grants exactly the permissions pgrotate needs (issue 4):
#
#   static     cfn-lint (no error or warning), sam validate --lint, checkov on the template and
#              on every resolved config (skips justified in the template; the role's skips
#              lifted, each fails only where its statement is), parliament on every
#              rendered policy (no finding at any severity, community auditors included, but
#              those the template's Metadata lists as expected by design, with the reason)
#              the Serverless Application Repository metadata publishable (SAM CLI's parser,
#              the service's limits, LICENSE and README.md present: integration/policy/sar_check.py)
#   render     the role policy, trust policy, Lambda resource policy and KMS key policy
#              statements for the matrix single/alternating x KMS/no KMS x VPC/no VPC (+ single
#              user with a master secret, fallback on and off; alternating users with an
#              RDS-managed master secret and AllowedDbHosts; two configs with AlarmTopicArn and
#              their SNS topic policy statements), under target/policy/
#   alarm      with AlarmTopicArn, the EventBridge rule matches Secrets Manager's RotationFailed
#              event for each rotated secret and no other, the alarm reads a metric the
#              function's EMF records carry (integration/policy/alarm_check.py)
#   rust       the Rust renderer behind `pgrotatectl policy` (src/policy.rs, run through
#              `pgrotatectl --json policy` with the case's flags) gives the same trust, role,
#              resource and key policies as the template for every rendered config, for extra
#              parameter sets (several secrets, other partitions and regions) and refuses the
#              same parameter sets; the fixtures of tests/policy.rs are still what the template
#              renders (integration/policy/compare_rust.py)
#   dynamic    fixture recordings made through moto's recorder (integration/policy/fixture.py), plus the
#              end-to-end suite's recordings when PGROTATE_RECORDINGS names them, converted to
#              IAM requests and evaluated with principalmapper (integration/policy/evaluate.py): every
#              request allowed, every grant used, neighbours denied (the VPC actions from the
#              function's own code, the master secret with the fallback off, ...), every
#              statement needed (an Allow by some request, a Deny by some neighbour);
#              then integration/policy/selftest.py checks the evaluator catches known-bad policies
#   sam build  only with PGROTATE_SAM_BUILD=1 (slow: a release build of the crate), see
#              integration/policy/sam-build.sh
#
# Environment:
#   PGROTATE_VENV        virtualenv with integration/requirements.txt (default <repo>/.venv;
#                        integration/install-deps.sh creates it)
#   PGROTATE_RECORDINGS  optional, colon separated: recording sets (directories with
#                        <name>.moto.jsonl + <name>.meta.json, see integration/policy/recording.py) or
#                        directories of such sets. Evaluated in addition to the fixture.
#   PGROTATE_SAM_BUILD   1 to also run `sam build` (x86_64 here, see integration/policy/sam-build.sh)
#   PGROTATECTL          the pgrotatectl binary to compare (default: a release build made now)
#
# Exit status: 0 when every step passed. The last line reads "policy-proof: N of M checks passed"
# (not the "N passed, N failed" form, which CI would read as the test count).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PGROTATE_VENV:-$REPO/.venv}"
OUT="$REPO/target/policy"
FIXTURE="$REPO/target/recordings/fixture"
cd "$REPO" || exit 1

export SAM_CLI_TELEMETRY=0
# checkov: no update check (it asks the package index at start); --skip-download below keeps it
# from fetching its guidelines from its vendor's service.
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true
# SAM CLI: no telemetry and no weekly version check (a request to the package index outside
# pip): its settings live in a directory of ours with the last check set to now.
export __SAM_CLI_APP_DIR="$REPO/target/sam/app-dir"
mkdir -p "$__SAM_CLI_APP_DIR"
printf '{"telemetryEnabled": false, "lastVersionCheck": %s}\n' "$(date +%s)" >"$__SAM_CLI_APP_DIR/metadata.json"
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export PYTHONPATH="$REPO/integration${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1   # no __pycache__ in integration/policy/

passed=0
failed=0
failed_steps=()

log() { printf 'policy-proof: %s\n' "$*"; }

# step NAME COMMAND...: runs the command, prints its output, counts the result.
step() {
    local name="$1"; shift
    local start=$SECONDS rc
    log "== $name"
    "$@"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        log "-- $name: ok ($((SECONDS - start))s)"
    else
        failed=$((failed + 1))
        failed_steps+=("$name")
        log "-- $name: FAILED (exit $rc, $((SECONDS - start))s)"
    fi
    return "$rc"
}

finish() {
    if [ "$failed" -gt 0 ]; then
        log "failed steps: ${failed_steps[*]}"
    fi
    printf 'policy-proof: %d of %d checks passed\n' "$passed" "$((passed + failed))"
    [ "$failed" -eq 0 ]
    exit $?
}

for tool in python cfn-lint sam checkov parliament moto_server; do
    if [ ! -x "$VENV/bin/$tool" ]; then
        log "ERROR: $VENV/bin/$tool missing: run integration/install-deps.sh (installs integration/requirements.txt into $VENV)"
        failed=$((failed + 1))
        failed_steps+=("tools")
        finish
    fi
done
PY="$VENV/bin/python"

# --- static ----------------------------------------------------------------------------
cfn_lint() {
    # Errors and warnings (the default); informational findings too, so nothing is hidden.
    "$VENV/bin/cfn-lint" --include-checks I -- template.yaml && log "cfn-lint: no findings"
}
sam_validate() {
    "$VENV/bin/sam" validate --lint --template-file template.yaml --region us-east-1
}
checkov_template() {
    "$VENV/bin/checkov" --file template.yaml --framework cloudformation --skip-download --quiet --compact
}
step "cfn-lint" cfn_lint
step "sam validate --lint" sam_validate
step "checkov template.yaml" checkov_template
step "Serverless Application Repository metadata" "$PY" -m policy.sar_check

# --- render ----------------------------------------------------------------------------
rm -rf "$OUT"
step "render examples" "$PY" -m policy.render --examples --out "$OUT"

# --- recordings ------------------------------------------------------------------------
step "fixture recordings (moto recorder)" "$PY" -m policy.fixture --out "$FIXTURE"
recording_sets=("$FIXTURE")
if [ -n "${PGROTATE_RECORDINGS:-}" ]; then
    IFS=':' read -r -a given <<<"$PGROTATE_RECORDINGS"
    found=0
    for dir in "${given[@]}"; do
        [ -n "$dir" ] || continue
        case "$dir" in /*) ;; *) dir="$REPO/$dir" ;; esac
        if compgen -G "$dir/*.meta.json" >/dev/null; then
            candidates=("$dir")
        else
            candidates=()
            for sub in "$dir"/*/; do
                compgen -G "$sub*.meta.json" >/dev/null && candidates+=("${sub%/}")
            done
        fi
        for c in "${candidates[@]}"; do
            c="$(cd "$c" && pwd)"
            [ "$c" = "$FIXTURE" ] && continue
            recording_sets+=("$c")
            found=$((found + 1))
        done
    done
    if [ "$found" -eq 0 ]; then
        log "ERROR: PGROTATE_RECORDINGS=$PGROTATE_RECORDINGS holds no recording set (<name>.meta.json)"
        failed=$((failed + 1))
        failed_steps+=("PGROTATE_RECORDINGS")
    else
        log "recording sets from PGROTATE_RECORDINGS: ${recording_sets[*]:1}"
    fi
fi

# Work on a snapshot of the recording sets, so that a set rewritten meanwhile (the end-to-end
# test run again) cannot mix two runs between rendering and evaluation.
SNAP="$REPO/target/policy-recordings"
snapshot_sets() {
    local set name snapped=()
    rm -rf "$SNAP" && mkdir -p "$SNAP" || return 1
    for set in "${recording_sets[@]}"; do
        name="$(basename "$set")"
        if [ -e "$SNAP/$name" ]; then
            log "ERROR: two recording sets named $name (${recording_sets[*]})"
            return 1
        fi
        mkdir "$SNAP/$name" && cp -p "$set"/*.meta.json "$set"/*.moto.jsonl "$SNAP/$name/" || return 1
        snapped+=("$SNAP/$name")
    done
    recording_sets=("${snapped[@]}")
}
step "snapshot recording sets" snapshot_sets

step "render recorded configs" "$PY" -m policy.render --recordings "${recording_sets[@]}" --out "$OUT"

# `pgrotatectl policy` prints the template's documents for every config just rendered (the
# binary PGROTATECTL names, as test.sh passes the one its tests ran; else a release build).
step "pgrotatectl policy equals the template" \
    "$PY" -m policy.compare_rust "$OUT" --fixtures "$REPO/tests/fixtures/policy"

checkov_resolved() {
    # Every config's template resolved for its parameters (conditions applied), so checks
    # that cannot see through Fn::If (VPC, KMS) are run on what CloudFormation would create.
    # Scanned by relative path: checkov adds each file's path to the parsed template
    # (__file__), and CKV_AWS_45's secret patterns match some absolute paths (seen with
    # /work/main/target/policy/examples/single-user/template.json).
    (cd "$OUT" && "$VENV/bin/checkov" --directory . --framework cloudformation --skip-download --quiet --compact)
}
step "checkov resolved configs" checkov_resolved
# checkov skips a check for a whole resource: with the role's skips lifted, each skipped check
# must fail exactly where the role has the statement the skip is for (template Metadata).
step "checkov role skips hide nothing else" "$PY" -m policy.checkov_skips "$OUT"

# No finding at any severity, community auditors included, except those template.yaml lists
# as expected by design (Metadata.pgrotate-policy-proof.parliament-expected, each with its
# reason; a stale entry fails too).
step "parliament" "$PY" -m policy.parliament_check "$OUT"

# The alarm resources (AlarmTopicArn): the rule's pattern against Secrets Manager's events, the
# alarm against the function's EMF dimension sets, the topic policy statements.
step "alarm and rule (AlarmTopicArn)" "$PY" -m policy.alarm_check "$OUT"

# --- dynamic ---------------------------------------------------------------------------
step "convert recordings to IAM requests" \
    "$PY" -m policy.recording convert "${recording_sets[@]}" --policy "$OUT" --out "$OUT/requests.jsonl"
step "evaluate (principalmapper)" "$PY" -m policy.evaluate "$OUT/requests.jsonl" --policy "$OUT"
step "evaluator self-test" "$PY" -m policy.selftest --policy "$OUT" --requests "$OUT/requests.jsonl"

# --- sam build (optional) --------------------------------------------------------------
if [ "${PGROTATE_SAM_BUILD:-0}" = "1" ]; then
    step "sam build" bash "$REPO/integration/policy/sam-build.sh"
fi

finish
