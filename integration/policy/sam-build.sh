#!/usr/bin/env bash
# `sam build` of template.yaml, offline, and a check of what it produced.
#
# The template's default architecture is arm64. This machine's Rust toolchain is x86_64 only
# and rustup cannot download the aarch64 standard library here, so this script builds with
# Architecture=x86_64 (PGROTATE_SAM_ARCH overrides) and cargo-lambda's plain cargo backend
# (CARGO_LAMBDA_COMPILER=cargo; its default for cross builds is zig). On a machine with
# `rustup target add aarch64-unknown-linux-gnu`, `sam build --beta-features` builds arm64 with
# cargo-lambda's zig backend (the ziglang package comes with the cargo-lambda package).
#
# rust-cargolambda is a beta build method in SAM CLI: --beta-features accepts it without a
# prompt. Builds in the source tree (target/lambda/pgrotate/bootstrap) and copies the binary to
# target/sam/build/Function/bootstrap; a cold release build takes a few minutes on 2 cores.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${PGROTATE_VENV:-$REPO/.venv}"
ARCH="${PGROTATE_SAM_ARCH:-x86_64}"
BUILD_DIR="$REPO/target/sam/build"
cd "$REPO"

export SAM_CLI_TELEMETRY=0
# SAM CLI: no telemetry and no weekly version check (a request to the package index outside
# pip): its settings live in a directory of ours with the last check set to now.
export __SAM_CLI_APP_DIR="$REPO/target/sam/app-dir"
mkdir -p "$__SAM_CLI_APP_DIR"
printf '{"telemetryEnabled": false, "lastVersionCheck": %s}\n' "$(date +%s)" >"$__SAM_CLI_APP_DIR/metadata.json"
export PATH="$VENV/bin:$PATH"   # cargo-lambda (cargo finds the subcommand on PATH)
export CARGO_LAMBDA_COMPILER="${CARGO_LAMBDA_COMPILER:-cargo}"

for tool in sam cargo-lambda; do
    command -v "$tool" >/dev/null || { echo "sam-build: $tool not found: run integration/install-deps.sh" >&2; exit 1; }
done
command -v cargo >/dev/null || { echo "sam-build: cargo not found (a Rust toolchain is needed)" >&2; exit 1; }

start=$SECONDS
sam build --beta-features --template-file template.yaml \
    --parameter-overrides "Architecture=$ARCH" \
    --build-dir "$BUILD_DIR" --cache-dir "$REPO/target/sam/cache" --region us-east-1
elapsed=$((SECONDS - start))

bin="$BUILD_DIR/Function/bootstrap"
[ -x "$bin" ] || { echo "sam-build: $bin missing after sam build" >&2; exit 1; }
# ELF e_machine (bytes 18-19, little endian): 0x3e x86_64, 0xb7 aarch64.
machine="$(od -An -tx1 -j18 -N2 "$bin" | tr -d ' \n')"
case "$ARCH:$machine" in
    x86_64:3e00 | arm64:b700) ;;
    *) echo "sam-build: $bin has ELF machine $machine, expected $ARCH" >&2; exit 1 ;;
esac
grep -q 'Runtime: provided.al2023' "$BUILD_DIR/template.yaml" \
    || { echo "sam-build: built template lost Runtime provided.al2023" >&2; exit 1; }
# `sam package` reads the built template: the Serverless Application Repository metadata's
# LicenseUrl and ReadmeUrl, rewritten relative to the build directory, must still name the files.
for prop in LicenseUrl ReadmeUrl; do
    rel="$(sed -n "s/^ *$prop: *//p" "$BUILD_DIR/template.yaml" | head -n 1)"
    [ -n "$rel" ] && [ -f "$BUILD_DIR/$rel" ] \
        || { echo "sam-build: built template's $prop ($rel) names no file from $BUILD_DIR" >&2; exit 1; }
done
echo "sam-build: ok: $bin ($ARCH, $(stat -c %s "$bin") bytes) in ${elapsed}s; LicenseUrl and ReadmeUrl resolve"
