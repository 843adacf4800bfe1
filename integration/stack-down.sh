#!/usr/bin/env bash
# Stops exactly what integration/stack-up.sh started (recorded in the state dir:
# $PGROTATE_STACK_DIR, default <repo>/.stack) and removes its temp dir. Idempotent: exits 0
# when nothing runs. Keeps the logs and certificates in the state dir for post-mortems;
# removes the env file so a stale one cannot be sourced.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
STATE_DIR="${PGROTATE_STACK_DIR:-$REPO/.stack}"

log() { printf 'stack-down: %s\n' "$*" >&2; }

if [ ! -d "$STATE_DIR" ]; then
    log "nothing to stop (no $STATE_DIR)"
    exit 0
fi

is_root() { [ "$(id -u)" -eq 0 ]; }
failed=0

# True if PID is alive and its command line contains WORD (guards against pid reuse).
pid_is() {
    local pid="$1" word="$2"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$word"
}

# Sends TERM, waits up to $3 seconds, then KILL.
stop_pid() {
    local pid="$1" word="$2" timeout="${3:-15}" i=0
    pid_is "$pid" "$word" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    while pid_is "$pid" "$word"; do
        if [ "$i" -ge "$((timeout * 10))" ]; then
            log "pid $pid ($word) did not stop after ${timeout}s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.1
        i=$((i + 1))
    done
    if pid_is "$pid" "$word"; then
        log "pid $pid ($word) is still running"
        return 1
    fi
    return 0
}

# --- moto --------------------------------------------------------------------------
if [ -f "$STATE_DIR/moto.pid" ]; then
    pid="$(cat "$STATE_DIR/moto.pid" 2>/dev/null || true)"
    if pid_is "$pid" moto_server; then
        log "stopping moto_server (pid $pid)"
        stop_pid "$pid" moto_server 10 || failed=1
    fi
    [ "$failed" -ne 0 ] || rm -f "$STATE_DIR/moto.pid"
fi

# --- PostgreSQL clusters -----------------------------------------------------------
PG_BIN="$(cat "$STATE_DIR/pg-bin" 2>/dev/null || true)"
PG_CTL=""
if [ -n "$PG_BIN" ] && [ -x "$PG_BIN/pg_ctl" ]; then PG_CTL="$PG_BIN/pg_ctl"; fi

# Runs pg_ctl as the owner of the data dir (pg_ctl refuses to run as root).
pg_ctl_as_owner() {
    local data="$1"; shift
    local run=()
    if is_root; then
        local uid gid
        uid="$(stat -c %u "$data")" gid="$(stat -c %g "$data")"
        [ "$uid" -ne 0 ] || return 1
        run=(setpriv "--reuid=$uid" "--regid=$gid" --clear-groups --)
    fi
    (cd / && exec ${run[@]+"${run[@]}"} "$PG_CTL" -D "$data" "$@")
}

# Every cluster stack-up.sh records (tls, selfsigned, plain), known names first.
names=(tls selfsigned plain)
for f in "$STATE_DIR"/pg-*.datadir "$STATE_DIR"/pg-*.pid; do
    [ -e "$f" ] || continue
    n="${f##*/pg-}" n="${n%.*}"
    case " ${names[*]} " in *" $n "*) ;; *) names+=("$n") ;; esac
done
for name in "${names[@]}"; do
    datafile="$STATE_DIR/pg-$name.datadir"
    pidfile="$STATE_DIR/pg-$name.pid"
    [ -f "$datafile" ] || [ -f "$pidfile" ] || continue
    data="$(cat "$datafile" 2>/dev/null || true)"
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    if [ -n "$data" ] && [ -f "$data/postmaster.pid" ]; then
        pid="$(head -n1 "$data/postmaster.pid" 2>/dev/null || echo "$pid")"
    fi
    if pid_is "$pid" postgres; then
        log "stopping the $name PostgreSQL cluster (pid $pid, data $data)"
        stopped=0
        if [ -n "$PG_CTL" ] && [ -n "$data" ] && [ -d "$data" ]; then
            if pg_ctl_as_owner "$data" stop -m fast -w -t 30 >/dev/null 2>&1 \
                || pg_ctl_as_owner "$data" stop -m immediate -w -t 10 >/dev/null 2>&1; then
                stopped=1
            fi
        fi
        if [ "$stopped" -ne 1 ] || pid_is "$pid" postgres; then
            # SIGINT is PostgreSQL's "fast shutdown".
            kill -INT "$pid" 2>/dev/null || true
            stop_pid "$pid" postgres 15 || { failed=1; continue; }
        fi
    fi
    rm -f "$datafile" "$pidfile"
done

# --- temp dir ------------------------------------------------------------------------
if [ -f "$STATE_DIR/tmpdir" ]; then
    tmp="$(cat "$STATE_DIR/tmpdir" 2>/dev/null || true)"
    if [ "$failed" -ne 0 ]; then
        log "keeping $tmp: some process did not stop"
    else
        case "$(basename -- "$tmp")" in
            pgrotate-stack.*)
                if [ -d "$tmp" ]; then
                    log "removing $tmp"
                    rm -rf -- "$tmp"
                fi
                ;;
            *) log "not removing unexpected temp dir path '$tmp'" ;;
        esac
        rm -f "$STATE_DIR/tmpdir"
    fi
fi

rm -f "$STATE_DIR/env" "$STATE_DIR/env.tmp" "$STATE_DIR/check.err"
if [ "$failed" -ne 0 ]; then
    log "some processes did not stop"
    exit 1
fi
log "stack is down"
