#!/usr/bin/env bash
# Starts the local integration stack, all on 127.0.0.1 and random free ports:
#   1. a TLS PostgreSQL cluster (SCRAM only, server cert for DNS:localhost signed by a
#      CA generated here, log_statement=all to <state>/pg-tls.log)
#   2. a plaintext PostgreSQL cluster (SCRAM only, ssl=off, log to <state>/pg-plain.log)
#   3. moto_server as the Secrets Manager / KMS emulator (log to <state>/moto.log)
# then writes <state>/env (export lines for `source`) and prints it.
#
# State dir: $PGROTATE_STACK_DIR, default <repo>/.stack. The clusters' data dirs live in a
# mktemp -d directory whose path is recorded in the state dir. A stack already running from
# the same state dir is stopped first. integration/stack-down.sh stops everything.
#
# As root, initdb/postgres run as an unprivileged OS user ($PGROTATE_PG_OS_USER, default
# `postgres` if it exists, else a `pgrotate` system user created here, else `nobody`).
#
# Other environment: PGROTATE_VENV (default <repo>/.venv), PGROTATE_PG_BIN (directory with
# initdb/postgres; default the newest /usr/lib/postgresql/*/bin), PGROTATE_START_TIMEOUT
# (seconds to wait for each service, default 60).
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
PG_BIN="${PGROTATE_PG_BIN:-}"
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
printf '%s\n' "$PG_BIN" >"$STATE_DIR/pg-bin"
PSQL="$PG_BIN/psql"; [ -x "$PSQL" ] || PSQL="$(command -v psql)" || die "psql not found"
PG_ISREADY="$PG_BIN/pg_isready"; [ -x "$PG_ISREADY" ] || PG_ISREADY="$(command -v pg_isready)" || die "pg_isready not found"
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

# --- PostgreSQL clusters -----------------------------------------------------------
# start_cluster NAME SSL(on|off) LOGFILE  -> sets CLUSTER_PORT
start_cluster() {
    local name="$1" ssl="$2" logfile="$3"
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
    if [ "$ssl" = on ]; then
        cat >>"$data/postgresql.conf" <<CONF
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_min_protocol_version = 'TLSv1.2'
CONF
        cp "$STATE_DIR/server.crt" "$data/server.crt"
        cp "$STATE_DIR/server.key" "$data/server.key"
        chmod 600 "$data/server.key" "$data/server.crt"
        if is_root; then chown "$PG_UID:$PG_GID" "$data/server.key" "$data/server.crt"; fi
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
PLAIN_LOG="$STATE_DIR/pg-plain.log"

start_cluster tls on "$TLS_LOG"
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

start_cluster plain off "$PLAIN_LOG"
PLAIN_PORT="$CLUSTER_PORT"
log "plaintext PostgreSQL cluster on 127.0.0.1:$PLAIN_PORT (log $PLAIN_LOG)"
PGPASSWORD="$ADMIN_PASSWORD" PGCONNECT_TIMEOUT=10 "$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 \
    "host=localhost port=$PLAIN_PORT user=$ADMIN_USER dbname=postgres sslmode=disable" \
    -c "SELECT 1" >/dev/null 2>"$STATE_DIR/check.err" \
    || { cat "$STATE_DIR/check.err" >&2; show_tail "$PLAIN_LOG"; die "plaintext cluster: connection to localhost:$PLAIN_PORT failed"; }
rm -f "$STATE_DIR/check.err"

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
    printf '# pgrotate integration stack, written by integration/stack-up.sh; source this file.\n'
    for kv in \
        "PGROTATE_PG_HOST=localhost" \
        "PGROTATE_PG_PORT=$TLS_PORT" \
        "PGROTATE_PG_PLAIN_PORT=$PLAIN_PORT" \
        "PGROTATE_PG_ADMIN_USER=$ADMIN_USER" \
        "PGROTATE_PG_ADMIN_PASSWORD=$ADMIN_PASSWORD" \
        "PGROTATE_PG_CA=$STATE_DIR/ca.pem" \
        "PGROTATE_PG_LOG=$TLS_LOG" \
        "PGROTATE_PG_PLAIN_LOG=$PLAIN_LOG" \
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
