#!/usr/bin/env bash
# Local PostgreSQL for development and tests, without Docker.
#
#   deploy/local/postgres.sh start|stop|status
#
# Runs a private cluster (never the distribution's default one) on 127.0.0.1.
#   CARBON_PG_PORT     port (default 5432)
#   CARBON_PG_DIR      data directory (default: /var/tmp/carbon-postgres as root,
#                      else ${XDG_CACHE_HOME:-~/.cache}/carbon/postgres); kept out of
#                      the repository, whose checkout may be unreadable to the server
#   CARBON_PG_BIN      directory holding initdb/pg_ctl (default: newest Debian install)
#   CARBON_PG_TIMEOUT  seconds start/stop may take (default 60)
# Progress goes to stderr; start and status print the SQLAlchemy URL on stdout, so
#   url=$(deploy/local/postgres.sh start)
# works. status exits 0 when running, 3 when not.
set -euo pipefail

PORT="${CARBON_PG_PORT:-5432}"
TIMEOUT="${CARBON_PG_TIMEOUT:-60}"
if [[ $EUID -eq 0 ]]; then
    PGDIR="${CARBON_PG_DIR:-/var/tmp/carbon-postgres}"
else
    PGDIR="${CARBON_PG_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/carbon/postgres}"
fi
PGDIR="${PGDIR%/}"
LOG="$PGDIR/server.log"
LOCK="$PGDIR.lock"
ROLE=carbon
PASSWORD=carbon
DATABASE=carbon_test

say() { echo "postgres: $*" >&2; }
die() { echo "postgres: error: $*" >&2; exit 1; }
url() { echo "postgresql+psycopg://$ROLE:$PASSWORD@127.0.0.1:$1/$DATABASE"; }

[[ $PORT =~ ^[0-9]+$ ]] || die "CARBON_PG_PORT must be a number, got '$PORT'"

# PostgreSQL refuses to run as root, so root drives the server as the postgres user.
# Starting from / avoids "could not change directory" when the caller's cwd is private.
as_owner() {
    if [[ $EUID -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

find_bin() {
    local dir
    if [[ -n ${CARBON_PG_BIN:-} ]]; then
        [[ -x $CARBON_PG_BIN/pg_ctl ]] || die "CARBON_PG_BIN=$CARBON_PG_BIN holds no pg_ctl"
        echo "$CARBON_PG_BIN"; return
    fi
    # An existing cluster must keep the major version that created it.
    if [[ -f $PGDIR/PG_VERSION && -x /usr/lib/postgresql/$(<"$PGDIR/PG_VERSION")/bin/pg_ctl ]]; then
        echo "/usr/lib/postgresql/$(<"$PGDIR/PG_VERSION")/bin"; return
    fi
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl ]]; then
        echo "$dir"; return
    fi
    if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        dirname "$(command -v pg_ctl)"; return
    fi
}

install_postgres() {
    [[ $EUID -eq 0 ]] || die "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH).
  Install them first, e.g.:  sudo apt-get install -y postgresql
  or point CARBON_PG_BIN at the directory holding initdb and pg_ctl."
    command -v apt-get >/dev/null || die "PostgreSQL server binaries not found and apt-get is unavailable; install PostgreSQL (initdb, pg_ctl) and set CARBON_PG_BIN"
    say "installing PostgreSQL from the Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    # Keep the package from creating and starting its own cluster on port 5432.
    apt-get install -y postgresql-common >&2
    if [[ -f /etc/postgresql-common/createcluster.conf ]]; then
        sed -i -E 's/^#?[[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' \
            /etc/postgresql-common/createcluster.conf
    fi
    apt-get install -y postgresql >&2
}

BIN=""
need_bin() {
    BIN=$(find_bin)
    if [[ -z $BIN ]]; then
        install_postgres
        BIN=$(find_bin)
        [[ -n $BIN ]] || die "PostgreSQL was installed but initdb/pg_ctl are still not found"
    fi
}

# Client tools come from the server's directory when present, else from PATH.
client() {
    local tool=$1; shift
    if [[ -x $BIN/$tool ]]; then "$BIN/$tool" "$@"; else "$tool" "$@"; fi
}

running() {
    [[ -f $PGDIR/PG_VERSION ]] && as_owner "$BIN/pg_ctl" status -D "$PGDIR" >/dev/null 2>&1
}

# Port of our running server, read from postmaster.pid (line 4).
running_port() { sed -n 4p "$PGDIR/postmaster.pid" 2>/dev/null || true; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

take_lock() {
    mkdir -p "$(dirname "$PGDIR")"
    exec 9>>"$LOCK"
    # Parallel test workers may all call start at once; one does the work.
    flock -w $((TIMEOUT * 3)) 9 || die "timed out waiting for $LOCK (another start/stop is stuck?)"
}

show_log() {
    if [[ -f $LOG ]]; then
        echo "---- last lines of $LOG ----" >&2
        tail -n 30 "$LOG" >&2 || true
    fi
}

init_cluster() {
    local tmp="$PGDIR.init"
    if [[ -e $PGDIR ]]; then
        # An empty directory (e.g. a mount point prepared by hand) is fine to fill.
        [[ -d $PGDIR && -z $(ls -A "$PGDIR") ]] \
            || die "$PGDIR exists but is not a PostgreSQL data directory; remove it or set CARBON_PG_DIR"
    fi
    say "initialising a new cluster in $PGDIR"
    # Build in a side directory and rename, so an interrupted initdb leaves no half cluster.
    rm -rf "$tmp"
    mkdir -p "$tmp"
    chmod 700 "$tmp"
    if [[ $EUID -eq 0 ]]; then
        chown postgres:postgres "$tmp"
        as_owner test -x "$(dirname "$PGDIR")" \
            || die "the postgres user cannot reach $(dirname "$PGDIR"); choose a CARBON_PG_DIR it can traverse"
    fi
    as_owner "$BIN/initdb" -D "$tmp" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >"$tmp.log" 2>&1 \
        || { cat "$tmp.log" >&2; rm -rf "$tmp" "$tmp.log"; die "initdb failed"; }
    rm -f "$tmp.log"
    echo "include_if_exists = 'carbon.conf'" >>"$tmp/postgresql.conf"
    if [[ -e $PGDIR ]]; then rmdir "$PGDIR"; fi
    mv "$tmp" "$PGDIR"
}

# Rewritten on every start so CARBON_PG_PORT and the data directory path always apply.
write_settings() {
    local conf="$PGDIR/carbon.conf"
    cat >"$conf" <<EOF
# Written by deploy/local/postgres.sh on each start; edits are lost.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$PGDIR'
unix_socket_permissions = 0700
# Sized for a development/test machine with 2 cores.
max_connections = 200
shared_buffers = 256MB
effective_cache_size = 1GB
work_mem = 8MB
maintenance_work_mem = 128MB
max_worker_processes = 4
max_parallel_workers = 2
max_parallel_workers_per_gather = 1
max_wal_size = 2GB
# Durability stays on so benchmarks measure what production would do.
fsync = on
synchronous_commit = on
full_page_writes = on
timezone = 'UTC'
log_timezone = 'UTC'
log_line_prefix = '%m [%p] %q%u@%d '
log_min_duration_statement = 1000
EOF
    if [[ $EUID -eq 0 ]]; then chown postgres:postgres "$conf"; fi
}

# Superuser statements go through the private unix socket (trust), never over TCP.
admin_sql() {
    client psql -X -q -v ON_ERROR_STOP=1 -h "$PGDIR" -p "$PORT" -U postgres -d postgres "$@"
}

ensure_role_and_database() {
    admin_sql >/dev/null <<EOF
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') THEN
        CREATE ROLE $ROLE LOGIN SUPERUSER PASSWORD '$PASSWORD';
    ELSE
        ALTER ROLE $ROLE LOGIN SUPERUSER PASSWORD '$PASSWORD';
    END IF;
END
\$\$;
SELECT 'CREATE DATABASE $DATABASE OWNER $ROLE ENCODING ''UTF8'' TEMPLATE template0'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DATABASE')
\gexec
EOF
}

wait_ready() {
    local deadline=$((SECONDS + TIMEOUT))
    until client pg_isready -q -h 127.0.0.1 -p "$PORT" -d postgres; do
        if ((SECONDS >= deadline)); then
            show_log
            die "server did not accept connections on 127.0.0.1:$PORT within ${TIMEOUT}s"
        fi
        sleep 0.5
    done
}

check_login() {
    PGPASSWORD=$PASSWORD PGCONNECT_TIMEOUT=10 client psql -X -q -At -w \
        -h 127.0.0.1 -p "$PORT" -U "$ROLE" -d "$DATABASE" -c 'SELECT 1' >/dev/null 2>&1
}

cmd_start() {
    take_lock
    need_bin
    if running; then
        local actual
        actual=$(running_port)
        [[ $actual == "$PORT" ]] \
            || die "the server in $PGDIR is already running on port $actual, not $PORT; stop it first"
        say "already running (data $PGDIR)"
    else
        if port_in_use; then
            if client pg_isready -q -h 127.0.0.1 -p "$PORT"; then
                die "port $PORT on 127.0.0.1 is taken by another PostgreSQL server (not the one in $PGDIR).
  Stop it (e.g. 'pg_ctlcluster <version> main stop') or use another port: CARBON_PG_PORT=5433 $0 start"
            fi
            die "port $PORT on 127.0.0.1 is taken by another program; free it or set CARBON_PG_PORT"
        fi
        [[ -f $PGDIR/PG_VERSION ]] || init_cluster
        write_settings
        say "starting PostgreSQL $(<"$PGDIR/PG_VERSION") on 127.0.0.1:$PORT (data $PGDIR, log $LOG)"
        # 9>&- keeps the server from inheriting the lock, which would block every later call.
        as_owner "$BIN/pg_ctl" start -D "$PGDIR" -l "$LOG" -w -t "$TIMEOUT" -s 9>&- >&2 \
            || { show_log; die "pg_ctl could not start the server"; }
    fi
    wait_ready
    ensure_role_and_database || { show_log; die "could not create role $ROLE / database $DATABASE"; }
    check_login || { show_log; die "server is up but '$ROLE' cannot log in over TCP on 127.0.0.1:$PORT"; }
    say "ready"
    url "$PORT"
}

cmd_stop() {
    take_lock
    if [[ ! -f $PGDIR/PG_VERSION ]]; then
        say "not running (no cluster in $PGDIR)"; return 0
    fi
    need_bin
    if ! running; then
        say "not running (data $PGDIR)"; return 0
    fi
    say "stopping (data $PGDIR)"
    as_owner "$BIN/pg_ctl" stop -D "$PGDIR" -m fast -w -t "$TIMEOUT" -s >&2 \
        || { show_log; die "pg_ctl could not stop the server"; }
    say "stopped"
}

cmd_status() {
    if [[ ! -f $PGDIR/PG_VERSION ]]; then
        say "not running (no cluster in $PGDIR)"; return 3
    fi
    BIN=$(find_bin)
    if [[ -z $BIN ]] || ! running; then
        say "not running (data $PGDIR)"; return 3
    fi
    local actual
    actual=$(running_port)
    say "running (pid $(sed -n 1p "$PGDIR/postmaster.pid"), port $actual, data $PGDIR, log $LOG)"
    url "$actual"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
