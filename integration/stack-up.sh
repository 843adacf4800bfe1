#!/usr/bin/env bash
# Starts the local integration stack, all on 127.0.0.1 and random free ports:
#   1. a TLS PostgreSQL cluster (SCRAM only, server cert for DNS:localhost signed by a
#      CA generated here, log_statement=all to <state>/pg-tls.log). Plaintext is accepted
#      too, except for members of the role pgrotate_tls_required (hostnossl ... reject).
#   2. a self-signed TLS PostgreSQL cluster: its certificate made exactly as PostgreSQL's
#      documentation does (`openssl req -new -x509 -days 365 -nodes -text -out server.crt
#      -keyout server.key -subj "/CN=localhost"`: no subjectAltName, CN=localhost, OpenSSL's
#      default v3_ca extensions, so basicConstraints=critical,CA:TRUE); TLS-only (pg_hba has
#      hostssl lines only: a plaintext TCP connection gets "no pg_hba.conf entry ... no
#      encryption"); SCRAM only, log_statement=all to <state>/pg-selfsigned.log. A second
#      self-signed certificate (same recipe, another key) that no server uses is written too.
#   3. a plaintext PostgreSQL cluster (SCRAM only, ssl=off, log to <state>/pg-plain.log)
#   4. moto_server as the Secrets Manager / KMS emulator (log to <state>/moto.log)
# then writes <state>/env (export lines for `source`) and prints it.
#
# PostgreSQL major: PGROTATE_PG_MAJOR (13 to 18; default: Debian's, the newest
# /usr/lib/postgresql/*/bin, 15 on Debian 12). A major Debian does not provide runs from
# <repo>/.pg/<major>/native/bin, installed by `PGROTATE_PG_MAJORS=<major> bash
# integration/install-deps.sh` (versions pinned in integration/pg-versions). Debian's psql
# and pg_isready are the clients for every major. Two stacks (e.g. two majors) can run at
# once with different PGROTATE_STACK_DIR: ports are random, data dirs are mktemp'd.
#
# State dir: $PGROTATE_STACK_DIR, default <repo>/.stack. The clusters' data dirs live in a
# mktemp -d directory whose path is recorded in the state dir. A stack already running from
# the same state dir is stopped first. integration/stack-down.sh stops everything.
#
# As root, initdb/postgres run as an unprivileged OS user ($PGROTATE_PG_OS_USER, default
# `postgres` if it exists, else a `pgrotate` system user created here, else `nobody`).
#
# Other environment: PGROTATE_VENV (default <repo>/.venv), PGROTATE_PG_BIN (directory with
# initdb/postgres; overrides PGROTATE_PG_MAJOR's choice, which must then match it),
# PGROTATE_PG_DIR (default <repo>/.pg), PGROTATE_START_TIMEOUT (seconds to wait for each
# service, default 60).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
STATE_DIR="${PGROTATE_STACK_DIR:-$REPO/.stack}"
VENV="${PGROTATE_VENV:-$REPO/.venv}"
START_TIMEOUT="${PGROTATE_START_TIMEOUT:-60}"
ADMIN_USER=postgres

log() { printf 'stack-up: %s\n' "$*" >&2; }
die() { printf 'stack-up: ERROR: %s\n' "$*" >&2; exit 1; }
# Prints the last lines of a log file to stderr, framed.
show_tail() {
    local f="$1"
    [ -e "$f" ] || return 0
    printf -- '----- last lines of %s -----\n' "$f" >&2
    tail -n "${2:-40}" "$f" >&2 || true
    printf -- '----- end of %s -----\n' "$f" >&2
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# --- stop a previous stack ---------------------------------------------------------
mkdir -p "$STATE_DIR"
STATE_DIR="$(cd "$STATE_DIR" && pwd)"
export PGROTATE_STACK_DIR="$STATE_DIR"
if compgen -G "$STATE_DIR/*.pid" >/dev/null || compgen -G "$STATE_DIR/*.datadir" >/dev/null \
    || [ -e "$STATE_DIR/tmpdir" ]; then
    log "a stack from $STATE_DIR is (or was) running: stopping it first"
    bash "$HERE/stack-down.sh"
fi
rm -f "$STATE_DIR/env"

# fd 9: the caller's stderr, for the exit trap (which may run while a command's output is
# redirected to a log file). Services started in the background get it closed (close_extra_fds).
exec 9>&2
SUCCESS=0
on_exit() {
    if [ "$SUCCESS" -ne 1 ]; then
        {
            log "failed: stopping what was started"
            bash "$HERE/stack-down.sh" || true
        } >&9 2>&9
    fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools -------------------------------------------------------------------------
PG_DIR="${PGROTATE_PG_DIR:-$REPO/.pg}"
WANT_MAJOR="${PGROTATE_PG_MAJOR:-}"
if [ -n "$WANT_MAJOR" ] && ! [[ "$WANT_MAJOR" =~ ^[0-9]+$ ]]; then
    die "PGROTATE_PG_MAJOR='$WANT_MAJOR' is not a PostgreSQL major version (13 to 18)"
fi
PG_BIN="${PGROTATE_PG_BIN:-}"
if [ -z "$PG_BIN" ] && [ -n "$WANT_MAJOR" ]; then
    for d in "/usr/lib/postgresql/$WANT_MAJOR/bin" "$PG_DIR/$WANT_MAJOR/native/bin"; do
        if [ -x "$d/postgres" ] && [ -x "$d/initdb" ]; then PG_BIN="$d"; break; fi
    done
    [ -n "$PG_BIN" ] || die "PostgreSQL $WANT_MAJOR is not installed (neither /usr/lib/postgresql/$WANT_MAJOR/bin nor $PG_DIR/$WANT_MAJOR/native/bin): run PGROTATE_PG_MAJORS=$WANT_MAJOR bash integration/install-deps.sh"
fi
if [ -z "$PG_BIN" ]; then
    while IFS= read -r d; do
        if [ -x "$d/postgres" ] && [ -x "$d/initdb" ]; then PG_BIN="$d"; break; fi
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
fi
if [ -z "$PG_BIN" ] && command -v pg_config >/dev/null 2>&1; then
    d="$(pg_config --bindir)"
    [ -x "$d/postgres" ] && PG_BIN="$d"
fi
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/postgres" ] || [ ! -x "$PG_BIN/initdb" ]; then
    die "no PostgreSQL server binaries found (looked in /usr/lib/postgresql/*/bin); run integration/install-deps.sh"
fi
PG_VERSION_TEXT="$("$PG_BIN/postgres" --version 2>&1)" || die "$PG_BIN/postgres --version failed: $PG_VERSION_TEXT"
PG_BIN_MAJOR="$(printf '%s\n' "$PG_VERSION_TEXT" | sed -n 's/.*(PostgreSQL) \([0-9][0-9]*\).*/\1/p' | head -n1)"
[ -n "$PG_BIN_MAJOR" ] || die "cannot tell the major version of $PG_BIN/postgres ('$PG_VERSION_TEXT')"
if [ -n "$WANT_MAJOR" ] && [ "$PG_BIN_MAJOR" != "$WANT_MAJOR" ]; then
    die "PGROTATE_PG_MAJOR=$WANT_MAJOR but $PG_BIN/postgres is '$PG_VERSION_TEXT'"
fi
log "PostgreSQL server: $PG_VERSION_TEXT ($PG_BIN)"
# Clients: the server's own if it has them, else Debian's newest (the npm builds ship none).
find_client() {
    local name="$1" d
    if [ -x "$PG_BIN/$name" ]; then printf '%s\n' "$PG_BIN/$name"; return 0; fi
    while IFS= read -r d; do
        if [ -x "$d/$name" ]; then printf '%s\n' "$d/$name"; return 0; fi
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
    command -v "$name"
}
PSQL="$(find_client psql)" || die "psql not found"
PG_ISREADY="$(find_client pg_isready)" || die "pg_isready not found"
command -v openssl >/dev/null 2>&1 || die "openssl not found; run integration/install-deps.sh"
[ -x "$VENV/bin/moto_server" ] || die "$VENV/bin/moto_server not found; run integration/install-deps.sh"
PY="$VENV/bin/python"
SETSID=(); command -v setsid >/dev/null 2>&1 && SETSID=(setsid)

# --- who runs PostgreSQL -----------------------------------------------------------
PG_RUN=()
if is_root; then
    command -v setpriv >/dev/null 2>&1 || die "setpriv (util-linux) is needed to run PostgreSQL as root"
    PG_OS_USER="${PGROTATE_PG_OS_USER:-}"
    if [ -z "$PG_OS_USER" ]; then
        if id postgres >/dev/null 2>&1; then
            PG_OS_USER=postgres
        elif id pgrotate >/dev/null 2>&1; then
            PG_OS_USER=pgrotate
        elif useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin pgrotate >/dev/null 2>&1; then
            PG_OS_USER=pgrotate
        else
            PG_OS_USER=nobody
        fi
    fi
    PG_UID="$(id -u "$PG_OS_USER")" || die "no OS user $PG_OS_USER"
    PG_GID="$(id -g "$PG_OS_USER")"
    [ "$PG_UID" -ne 0 ] || die "PGROTATE_PG_OS_USER must not be root"
    PG_RUN=(setpriv "--reuid=$PG_UID" "--regid=$PG_GID" --clear-groups --)
    log "running as root: PostgreSQL runs as OS user $PG_OS_USER ($PG_UID:$PG_GID)"
fi
# Closes every file descriptor above 2 in the current (sub)shell, so a service started in the
# background holds none of the caller's pipes or files open.
close_extra_fds() {
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
        fd="${fd##*/}"
        case "$fd" in
            0 | 1 | 2) ;;
            *) eval "exec $fd>&-" 2>/dev/null || true ;;
        esac
    done
}

# Runs a command as the PostgreSQL OS user (as is when not root), from the temp dir.
as_pg() { (cd "$TMP" && exec ${PG_RUN[@]+"${PG_RUN[@]}"} "$@"); }

# --- temp dir for the data dirs ----------------------------------------------------
base="${TMPDIR:-/tmp}"
if is_root && ! setpriv "--reuid=$PG_UID" "--regid=$PG_GID" --clear-groups -- test -x "$base"; then
    base=/tmp
fi
TMP="$(mktemp -d "$base/pgrotate-stack.XXXXXXXX")"
printf '%s\n' "$TMP" >"$STATE_DIR/tmpdir"
chmod 700 "$TMP"
if is_root; then chown "$PG_UID:$PG_GID" "$TMP"; fi

# The server binaries must be usable by the PostgreSQL OS user. An npm build under a directory
# that user cannot reach (e.g. a repository under /root) is copied into the temp dir.
if is_root && ! as_pg "$PG_BIN/postgres" --version >/dev/null 2>&1; then
    if [ -d "$PG_BIN/../lib" ] && [ -d "$PG_BIN/../share" ]; then
        log "OS user $PG_OS_USER cannot run $PG_BIN/postgres: copying the server into $TMP/pg"
        mkdir "$TMP/pg"
        cp -a "$PG_BIN/../bin" "$PG_BIN/../lib" "$PG_BIN/../share" "$TMP/pg/"
        chmod -R a+rX "$TMP/pg"
        PG_BIN="$TMP/pg/bin"
        as_pg "$PG_BIN/postgres" --version >/dev/null 2>&1 || die "OS user $PG_OS_USER cannot run $PG_BIN/postgres"
    else
        die "OS user $PG_OS_USER cannot run $PG_BIN/postgres (check the permissions of $PG_BIN and its parents)"
    fi
fi
printf '%s\n' "$PG_BIN" >"$STATE_DIR/pg-bin"

# --- helpers -----------------------------------------------------------------------
free_port() {
    "$PY" -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

ipv6_usable() {
    "$PY" -c 'import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.bind(("::1", 0))
s.listen(1)
c = socket.create_connection(("::1", s.getsockname()[1]), timeout=2)
c.close()' >/dev/null 2>&1
}

random_alnum() {
    local s=""
    while [ "${#s}" -lt "$1" ]; do
        s="$s$(openssl rand -base64 48 | tr -dc 'A-Za-z0-9')"
    done
    printf '%s' "${s:0:$1}"
}

LISTEN="127.0.0.1"
if ipv6_usable; then LISTEN="127.0.0.1,::1"; fi
log "PostgreSQL listen_addresses='$LISTEN'"

ADMIN_PASSWORD="$(random_alnum 32)"

# --- CA and server certificate -----------------------------------------------------
make_certs() {
    local d="$STATE_DIR"
    rm -f "$d/ca.pem" "$d/ca.key" "$d/ca.srl" "$d/server.crt" "$d/server.key" "$d/server.csr" "$d/server.ext"
    (
        umask 077
        openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$d/ca.key" -out "$d/ca.pem" -days 3650 -sha256 \
            -subj "/CN=pgrotate integration test CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -addext "subjectKeyIdentifier=hash"
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$d/server.key" -out "$d/server.csr" -subj "/CN=localhost"
        cat >"$d/server.ext" <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
EXT
        openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
            -CAcreateserial -CAserial "$d/ca.srl" -out "$d/server.crt" -days 3650 -sha256 \
            -extfile "$d/server.ext"
    ) >"$d/openssl.log" 2>&1 || { show_tail "$d/openssl.log"; die "could not generate the test certificates"; }
    rm -f "$d/server.csr" "$d/server.ext"
    chmod 644 "$d/ca.pem" "$d/server.crt"
}
make_certs
log "CA certificate: $STATE_DIR/ca.pem (server certificate SAN: DNS:localhost only)"

# make_selfsigned NAME: NAME.crt and NAME.key in the state dir, by PostgreSQL's documentation
# recipe (the same command; only the file names differ from its server.crt/server.key): RSA
# key, no SAN, subject CN=localhost, OpenSSL's default extensions for `req -x509` (v3_ca:
# subject and authority key ids, basicConstraints=critical,CA:TRUE), and `-text`, so the .crt
# file holds a human-readable dump of the certificate before its PEM block.
make_selfsigned() {
    local d="$STATE_DIR" name="$1"
    rm -f "$d/$name.crt" "$d/$name.key"
    (
        umask 077
        cd "$d"
        openssl req -new -x509 -days 365 -nodes -text -out "$name.crt" \
            -keyout "$name.key" -subj "/CN=localhost"
    ) >>"$d/openssl.log" 2>&1 || { show_tail "$d/openssl.log"; die "could not generate the self-signed certificate $name"; }
    chmod 644 "$d/$name.crt"
    if openssl x509 -in "$d/$name.crt" -noout -text | grep -q 'Subject Alternative Name'; then
        die "$d/$name.crt has a subjectAltName; the self-signed certificate must have none"
    fi
}
make_selfsigned selfsigned
make_selfsigned other-selfsigned
SELFSIGNED_CA_FLAG="$(openssl x509 -in "$STATE_DIR/selfsigned.crt" -noout -text \
    | sed -n '/Basic Constraints/{n;s/^ *//;p;}')"
log "self-signed certificates: $STATE_DIR/selfsigned.crt (server), $STATE_DIR/other-selfsigned.crt (no server); no SAN, CN=localhost, ${SELFSIGNED_CA_FLAG:-no basicConstraints}"

# --- PostgreSQL clusters -----------------------------------------------------------
# start_cluster NAME KIND(tls|selfsigned|plain) LOGFILE  -> sets CLUSTER_PORT
start_cluster() {
    local name="$1" kind="$2" logfile="$3" ssl=on
    [ "$kind" != plain ] || ssl=off
    local dir="$TMP/$name" data="$TMP/$name/data"
    mkdir -m 700 "$dir"
    if is_root; then chown "$PG_UID:$PG_GID" "$dir"; fi
    printf '%s\n' "$data" >"$STATE_DIR/pg-$name.datadir"

    local pwfile="$dir/pwfile"
    (umask 077; printf '%s\n' "$ADMIN_PASSWORD" >"$pwfile")
    if is_root; then chown "$PG_UID:$PG_GID" "$pwfile"; fi
    if ! as_pg "$PG_BIN/initdb" -D "$data" -U "$ADMIN_USER" --pwfile="$pwfile" \
        --auth=scram-sha-256 --encoding=UTF8 --locale=C --no-sync \
        >"$STATE_DIR/initdb-$name.log" 2>&1; then
        rm -f "$pwfile"
        show_tail "$STATE_DIR/initdb-$name.log"
        die "initdb of the $name cluster failed"
    fi
    rm -f "$pwfile"

    cat >>"$data/postgresql.conf" <<CONF

# ---- pgrotate integration stack ($name) ----
listen_addresses = '$LISTEN'
unix_socket_directories = '$dir'
max_connections = 200
shared_buffers = 32MB
password_encryption = 'scram-sha-256'
ssl = $ssl
logging_collector = off
log_destination = 'stderr'
log_statement = 'all'
log_connections = on
log_line_prefix = '%m [%p] %q%u@%d '
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
    if [ "$name" = restart ]; then
        # This one is crash-restarted by a test: a commit must survive that (with
        # synchronous_commit off the last commits can be lost in a crash restart, and with
        # them a password the rotation set).
        printf 'synchronous_commit = on\n' >>"$data/postgresql.conf"
    fi
    if [ "$ssl" = on ]; then
        cat >>"$data/postgresql.conf" <<CONF
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_min_protocol_version = 'TLSv1.2'
CONF
        local cert=server
        [ "$kind" != selfsigned ] || cert=selfsigned
        cp "$STATE_DIR/$cert.crt" "$data/server.crt"
        cp "$STATE_DIR/$cert.key" "$data/server.key"
        chmod 600 "$data/server.key" "$data/server.crt"
        if is_root; then chown "$PG_UID:$PG_GID" "$data/server.key" "$data/server.crt"; fi
    fi
    if [ "$kind" = selfsigned ]; then
        cat >"$data/pg_hba.conf" <<'HBA'
# pgrotate integration stack: self-signed TLS cluster, TLS only. SCRAM only, no trust, no
# peer. No hostnossl/host line: a plaintext TCP connection matches nothing and is refused
# with "no pg_hba.conf entry for host ..., no encryption" (as a server that forces TLS).
# TYPE     DATABASE  USER                    ADDRESS        METHOD
hostssl    all       all                     127.0.0.1/32   scram-sha-256
hostssl    all       all                     ::1/128        scram-sha-256
local      all       all                                    scram-sha-256
HBA
    elif [ "$kind" = tls ]; then
        cat >"$data/pg_hba.conf" <<'HBA'
# pgrotate integration stack: TLS cluster. SCRAM only, no trust, no peer.
# TYPE     DATABASE  USER                    ADDRESS        METHOD
hostnossl  all       +pgrotate_tls_required  0.0.0.0/0      reject
hostnossl  all       +pgrotate_tls_required  ::/0           reject
hostssl    all       all                     127.0.0.1/32   scram-sha-256
hostssl    all       all                     ::1/128        scram-sha-256
host       all       all                     127.0.0.1/32   scram-sha-256
host       all       all                     ::1/128        scram-sha-256
local      all       all                                    scram-sha-256
HBA
    else
        cat >"$data/pg_hba.conf" <<'HBA'
# pgrotate integration stack: plaintext cluster (ssl=off). SCRAM only.
# TYPE     DATABASE  USER                    ADDRESS        METHOD
host       all       all                     127.0.0.1/32   scram-sha-256
host       all       all                     ::1/128        scram-sha-256
local      all       all                                    scram-sha-256
HBA
    fi

    : >"$logfile"
    chmod 644 "$logfile"
    local attempt port pid waited
    for attempt in 1 2 3 4 5; do
        port="$(free_port)"
        # The log is opened by this shell (the invoking user), so it stays readable by it
        # even when postgres itself runs as another OS user.
        (cd "$TMP" && close_extra_fds && exec ${SETSID[@]+"${SETSID[@]}"} ${PG_RUN[@]+"${PG_RUN[@]}"} \
            "$PG_BIN/postgres" -D "$data" -p "$port") >>"$logfile" 2>&1 </dev/null &
        pid=$!
        printf '%s\n' "$pid" >"$STATE_DIR/pg-$name.pid"
        waited=0
        while :; do
            if "$PG_ISREADY" -q -h 127.0.0.1 -p "$port" -t 1 >/dev/null 2>&1; then
                CLUSTER_PORT="$port"
                # The pid postgres itself recorded (same as $pid unless setsid forked).
                if [ -r "$data/postmaster.pid" ]; then
                    head -n1 "$data/postmaster.pid" >"$STATE_DIR/pg-$name.pid"
                fi
                return 0
            fi
            if ! kill -0 "$pid" 2>/dev/null; then
                wait "$pid" 2>/dev/null || true
                if grep -q -E 'could not (bind|create listen socket)|Address already in use' "$logfile"; then
                    log "$name cluster: port $port was taken, retrying with another (attempt $attempt)"
                    continue 2
                fi
                show_tail "$logfile"
                die "the $name PostgreSQL cluster exited during start-up (see $logfile)"
            fi
            if [ "$waited" -ge "$START_TIMEOUT" ]; then
                show_tail "$logfile"
                die "the $name PostgreSQL cluster did not accept connections on 127.0.0.1:$port within ${START_TIMEOUT}s"
            fi
            sleep 1
            waited=$((waited + 1))
        done
    done
    show_tail "$logfile"
    die "could not start the $name PostgreSQL cluster on a free port"
}

# admin_psql NAME PORT ARGS...: psql as the superuser over the cluster's unix socket.
admin_psql() {
    local name="$1" port="$2"; shift 2
    PGPASSWORD="$ADMIN_PASSWORD" PGCONNECT_TIMEOUT=10 "$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 \
        -h "$TMP/$name" -p "$port" -U "$ADMIN_USER" -d postgres "$@"
}

TLS_LOG="$STATE_DIR/pg-tls.log"
SELFSIGNED_LOG="$STATE_DIR/pg-selfsigned.log"
PLAIN_LOG="$STATE_DIR/pg-plain.log"

# client_psql CONNINFO ARGS...: psql as the superuser over TCP (what the tests do).
client_psql() {
    local conninfo="$1"; shift
    PGPASSWORD="$ADMIN_PASSWORD" PGCONNECT_TIMEOUT=10 "$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 \
        "$conninfo user=$ADMIN_USER dbname=postgres" "$@"
}

start_cluster tls tls "$TLS_LOG"
TLS_PORT="$CLUSTER_PORT"
log "TLS PostgreSQL cluster on 127.0.0.1:$TLS_PORT (log $TLS_LOG)"
admin_psql tls "$TLS_PORT" -c "CREATE ROLE pgrotate_tls_required NOLOGIN" \
    || { show_tail "$TLS_LOG"; die "could not create role pgrotate_tls_required"; }
# The path the tests take: TCP to localhost, TLS with full verification, SCRAM.
got="$(PGPASSWORD="$ADMIN_PASSWORD" PGCONNECT_TIMEOUT=10 "$PSQL" -X -A -t -v ON_ERROR_STOP=1 \
    "host=localhost port=$TLS_PORT user=$ADMIN_USER dbname=postgres sslmode=verify-full sslrootcert=$STATE_DIR/ca.pem" \
    -c "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()" 2>"$STATE_DIR/check.err")" \
    || { cat "$STATE_DIR/check.err" >&2; show_tail "$TLS_LOG"; die "TLS cluster: verify-full connection to localhost:$TLS_PORT failed"; }
[ "$got" = t ] || die "TLS cluster: connection over TCP was not encrypted (pg_stat_ssl.ssl=$got)"
SERVER_VERSION_NUM="$(admin_psql tls "$TLS_PORT" -c "SHOW server_version_num")" \
    || die "TLS cluster: SHOW server_version_num failed"
SERVER_VERSION="$(admin_psql tls "$TLS_PORT" -c "SHOW server_version")" \
    || die "TLS cluster: SHOW server_version failed"
[[ "$SERVER_VERSION_NUM" =~ ^[0-9]+$ ]] || die "TLS cluster: server_version_num is '$SERVER_VERSION_NUM'"
SERVER_MAJOR=$((SERVER_VERSION_NUM / 10000))
[ "$SERVER_MAJOR" = "$PG_BIN_MAJOR" ] \
    || die "TLS cluster: the server says $SERVER_VERSION, but $PG_BIN/postgres is '$PG_VERSION_TEXT'"
log "PostgreSQL $SERVER_VERSION (server_version_num $SERVER_VERSION_NUM)"

start_cluster selfsigned selfsigned "$SELFSIGNED_LOG"
SELFSIGNED_PORT="$CLUSTER_PORT"
log "self-signed TLS-only PostgreSQL cluster on 127.0.0.1:$SELFSIGNED_PORT (log $SELFSIGNED_LOG)"
# libpq trusts a self-signed server certificate that is itself the root file, host name
# checked against its CN (it has no SAN).
got="$(client_psql "host=localhost port=$SELFSIGNED_PORT sslmode=verify-full sslrootcert=$STATE_DIR/selfsigned.crt" \
    -c "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()" 2>"$STATE_DIR/check.err")" \
    || { cat "$STATE_DIR/check.err" >&2; show_tail "$SELFSIGNED_LOG"; die "self-signed cluster: verify-full connection to localhost:$SELFSIGNED_PORT with sslrootcert=$STATE_DIR/selfsigned.crt failed"; }
[ "$got" = t ] || die "self-signed cluster: connection over TCP was not encrypted (pg_stat_ssl.ssl=$got)"
# ... and refuses the other self-signed certificate, and plaintext.
if client_psql "host=localhost port=$SELFSIGNED_PORT sslmode=verify-ca sslrootcert=$STATE_DIR/other-selfsigned.crt" \
    -c "SELECT 1" >/dev/null 2>"$STATE_DIR/check.err"; then
    die "self-signed cluster: a verify-ca connection trusting only other-selfsigned.crt succeeded"
fi
grep -q 'certificate verify failed' "$STATE_DIR/check.err" \
    || { cat "$STATE_DIR/check.err" >&2; die "self-signed cluster: trusting only other-selfsigned.crt did not fail certificate verification"; }
if client_psql "host=localhost port=$SELFSIGNED_PORT sslmode=disable" \
    -c "SELECT 1" >/dev/null 2>"$STATE_DIR/check.err"; then
    die "self-signed cluster: a plaintext connection succeeded; it must be TLS only"
fi
grep -q 'no pg_hba.conf entry' "$STATE_DIR/check.err" \
    || { cat "$STATE_DIR/check.err" >&2; die "self-signed cluster: a plaintext connection failed, but not for want of a pg_hba.conf entry"; }

start_cluster plain plain "$PLAIN_LOG"
PLAIN_PORT="$CLUSTER_PORT"
log "plaintext PostgreSQL cluster on 127.0.0.1:$PLAIN_PORT (log $PLAIN_LOG)"
PGPASSWORD="$ADMIN_PASSWORD" PGCONNECT_TIMEOUT=10 "$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 \
    "host=localhost port=$PLAIN_PORT user=$ADMIN_USER dbname=postgres sslmode=disable" \
    -c "SELECT 1" >/dev/null 2>"$STATE_DIR/check.err" \
    || { cat "$STATE_DIR/check.err" >&2; show_tail "$PLAIN_LOG"; die "plaintext cluster: connection to localhost:$PLAIN_PORT failed"; }
rm -f "$STATE_DIR/check.err"

# A fourth server, like the TLS one, that one test restarts in the middle of a step
# (tests/e2e/pg_restart.rs); no other test uses it.
RESTART_LOG="$STATE_DIR/pg-restart.log"
start_cluster restart tls "$RESTART_LOG"
RESTART_PORT="$CLUSTER_PORT"
log "restartable TLS PostgreSQL cluster on 127.0.0.1:$RESTART_PORT (log $RESTART_LOG)"

# --- moto ----------------------------------------------------------------------------
MOTO_LOG="$STATE_DIR/moto.log"
: >"$MOTO_LOG"
chmod 644 "$MOTO_LOG"
http_up() {
    if command -v curl >/dev/null 2>&1; then
        curl -s -o /dev/null --max-time 2 "$1"
    else
        "$PY" -c 'import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass' "$1" >/dev/null 2>&1
    fi
}
MOTO_PORT=""
for attempt in 1 2 3 4 5; do
    port="$(free_port)"
    # sh records its own pid, then becomes moto_server (exec keeps the pid).
    # shellcheck disable=SC2016 # $$ and $@ are for the inner sh
    # moto's request recorder (used by the policy proof) writes its file into the state dir.
    (close_extra_fds && MOTO_RECORDER_FILEPATH="$STATE_DIR/moto_recording" \
        exec ${SETSID[@]+"${SETSID[@]}"} sh -c 'echo $$ >"$1"; shift; exec "$@"' sh \
        "$STATE_DIR/moto.pid" "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port") >>"$MOTO_LOG" 2>&1 </dev/null &
    bgpid=$!
    waited=0
    while :; do
        if http_up "http://127.0.0.1:$port/"; then MOTO_PORT="$port"; break 2; fi
        pid="$(cat "$STATE_DIR/moto.pid" 2>/dev/null || echo "$bgpid")"
        if ! kill -0 "$pid" 2>/dev/null; then
            if grep -q -E 'Address already in use' "$MOTO_LOG"; then
                log "moto: port $port was taken, retrying with another (attempt $attempt)"
                continue 2
            fi
            show_tail "$MOTO_LOG"
            die "moto_server exited during start-up (see $MOTO_LOG)"
        fi
        if [ "$waited" -ge "$START_TIMEOUT" ]; then
            show_tail "$MOTO_LOG"
            die "moto_server did not answer on 127.0.0.1:$port within ${START_TIMEOUT}s"
        fi
        sleep 1
        waited=$((waited + 1))
    done
done
[ -n "$MOTO_PORT" ] || { show_tail "$MOTO_LOG"; die "could not start moto_server on a free port"; }
SM_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
# Secrets Manager and KMS answer through the emulator.
"$PY" - "$SM_ENDPOINT" >"$STATE_DIR/check.err" 2>&1 <<'PYCHECK' || { cat "$STATE_DIR/check.err" >&2; show_tail "$MOTO_LOG"; die "moto_server does not answer Secrets Manager/KMS calls"; }
import sys
import boto3
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1",
          aws_access_key_id="testing", aws_secret_access_key="testing")
boto3.client("secretsmanager", **kw).list_secrets()
boto3.client("kms", **kw).list_keys()
PYCHECK
rm -f "$STATE_DIR/check.err"
log "moto_server (Secrets Manager, KMS) on $SM_ENDPOINT (log $MOTO_LOG)"

# --- env file ------------------------------------------------------------------------
{
    cat <<'COMMENT'
# pgrotate integration stack, written by integration/stack-up.sh; source this file.
# Four PostgreSQL servers on host localhost (127.0.0.1, and ::1 when usable), one admin
# (superuser) login for all, SCRAM-SHA-256 only, log_statement=all:
#   PGROTATE_PG_PORT             TLS server, certificate signed by the test CA PGROTATE_PG_CA,
#                                SAN DNS:localhost. Accepts plaintext too, except for members
#                                of the role pgrotate_tls_required (hostnossl ... reject:
#                                "pg_hba.conf rejects connection ..., no encryption").
#   PGROTATE_PG_SELFSIGNED_PORT  TLS-only server (pg_hba: hostssl lines only; plaintext gets
#                                "no pg_hba.conf entry for host ..., no encryption").
#                                Its certificate PGROTATE_PG_SELFSIGNED_CERT is self-signed by
#                                PostgreSQL's documentation recipe: CN=localhost, NO
#                                subjectAltName, basicConstraints=critical,CA:TRUE, RSA 2048,
#                                365 days, a text dump before the PEM block. libpq accepts it
#                                under verify-full when it is the root file (sslrootcert).
#   PGROTATE_PG_PLAIN_PORT       plaintext server (ssl=off).
#   PGROTATE_PG_RESTART_PORT     a server like the TLS one that the restart test restarts
#                                (crash restart) in the middle of a step; no other test uses it.
# Both refusals are SQLSTATE 28000; PostgreSQL 13 ends them with "SSL off", 14+ with
# "no encryption".
# PGROTATE_PG_OTHER_SELFSIGNED_CERT: another self-signed certificate, same recipe, another
# key, CN=localhost; no server uses it (for the "untrusted self-signed" case).
# PGROTATE_PG_MAJOR: the servers' major version; PGROTATE_PG_SERVER_VERSION: server_version_num.
COMMENT
    for kv in \
        "PGROTATE_PG_HOST=localhost" \
        "PGROTATE_PG_PORT=$TLS_PORT" \
        "PGROTATE_PG_PLAIN_PORT=$PLAIN_PORT" \
        "PGROTATE_PG_RESTART_PORT=$RESTART_PORT" \
        "PGROTATE_PG_ADMIN_USER=$ADMIN_USER" \
        "PGROTATE_PG_ADMIN_PASSWORD=$ADMIN_PASSWORD" \
        "PGROTATE_PG_CA=$STATE_DIR/ca.pem" \
        "PGROTATE_PG_LOG=$TLS_LOG" \
        "PGROTATE_PG_PLAIN_LOG=$PLAIN_LOG" \
        "PGROTATE_PG_SELFSIGNED_PORT=$SELFSIGNED_PORT" \
        "PGROTATE_PG_SELFSIGNED_CERT=$STATE_DIR/selfsigned.crt" \
        "PGROTATE_PG_SELFSIGNED_LOG=$SELFSIGNED_LOG" \
        "PGROTATE_PG_OTHER_SELFSIGNED_CERT=$STATE_DIR/other-selfsigned.crt" \
        "PGROTATE_PG_MAJOR=$SERVER_MAJOR" \
        "PGROTATE_PG_SERVER_VERSION=$SERVER_VERSION_NUM" \
        "PGROTATE_SM_ENDPOINT=$SM_ENDPOINT" \
        "AWS_ENDPOINT_URL=$SM_ENDPOINT" \
        "AWS_REGION=us-east-1" \
        "AWS_DEFAULT_REGION=us-east-1" \
        "AWS_ACCESS_KEY_ID=testing" \
        "AWS_SECRET_ACCESS_KEY=testing"; do
        printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
    done
} >"$STATE_DIR/env.tmp"
chmod 600 "$STATE_DIR/env.tmp"
mv "$STATE_DIR/env.tmp" "$STATE_DIR/env"

SUCCESS=1
log "stack is up; environment in $STATE_DIR/env:"
cat "$STATE_DIR/env"
