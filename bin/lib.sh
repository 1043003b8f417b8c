# Shared by bin/run and bin/test. Everything here is idempotent and quick when already done.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=${VOXANNE_PG_BIN:-/usr/lib/postgresql/15/bin}   # bin/mutations: a private copy
PG_CONFIG=$PG_BIN/pg_config
DEV=${VOXANNE_DEV:-$ROOT/.dev}       # git-ignored: cluster, sockets, logs
PGDATA_DIR=$DEV/pgdata
SOCKET_DIR=$DEV/run
export VOXANNE_PGPORT=${VOXANNE_PGPORT:-54330}
APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 clang libclang-dev pkg-config sudo
              postgresql-15-pgtap postgresql-15-cron libtap-parser-sourcehandler-pgtap-perl wrk
              nodejs python3-venv openssl pgbouncer)

say() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
as_postgres() { runuser -u postgres -- "$@"; }
psql_dev() { as_postgres "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$VOXANNE_PGPORT" "$@"; }

# Debian packages, cargo-pgrx 0.18.1 (pgrx 0.19 needs a newer Rust) and pgrx's pg15 registration.
ensure_toolchain() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    # tests/sdk/check needs npm; a nodejs from another source may bring its own, which Debian's
    # npm package would conflict with
    command -v npm >/dev/null || missing+=(npm)
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if [[ "$(cargo pgrx --version 2>/dev/null)" != "cargo-pgrx 0.18.1" ]]; then
        say "installing cargo-pgrx 0.18.1 (about 6 minutes)"
        cargo install cargo-pgrx --version 0.18.1 --locked
    fi
    if ! grep -qs '^pg15' "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
        cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
    fi
}

# Build the extension (release) and install it into the system PostgreSQL 15, with the frozen
# install scripts of earlier versions, so an old version can be created and upgraded
# (cargo pgrx install itself copies the current version's script and the upgrade scripts).
install_extension() {
    say "building and installing voxanne_ext"
    (cd "$ROOT" && cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null)
    install -m 644 "$ROOT"/sql/voxanne_ext--0.1.0.sql "$ROOT"/sql/voxanne_ext--0.2.0.sql \
        "$("$PG_CONFIG" --sharedir)/extension/"
}

# The local cluster, owned by postgres (PostgreSQL refuses to run as root), trust auth on
# loopback and a private socket directory only.
start_cluster() {
    mkdir -p "$DEV"
    chown postgres: "$DEV"
    if [[ ! -s $PGDATA_DIR/PG_VERSION ]]; then
        say "initdb $PGDATA_DIR"
        as_postgres "$PG_BIN/initdb" -D "$PGDATA_DIR" -U postgres -E UTF8 --locale=C.UTF-8 \
            --auth=trust >/dev/null
        as_postgres mkdir -p "$SOCKET_DIR"
        cat >>"$PGDATA_DIR/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCKET_DIR'
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'   # always exists, so pg_cron never loses its database
max_connections = 200
CONF
    fi
    # the port can differ between runs (VOXANNE_PGPORT), so it is passed at start
    if ! as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
        say "starting PostgreSQL 15 on port $VOXANNE_PGPORT"
        as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$DEV/postgres.log" -w -t 60 \
            -o "-p $VOXANNE_PGPORT" start >/dev/null
    fi
}

# The Supabase API roles, as Supabase defines them, plus a login role for the relay.
create_roles() {
    psql_dev -d postgres <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticator') THEN
        CREATE ROLE authenticator LOGIN NOINHERIT;
        GRANT anon, authenticated, service_role TO authenticator;
    END IF;
    -- the relay's login: member of no role; create_database grants it what the relay calls
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'voxanne_relay') THEN
        CREATE ROLE voxanne_relay LOGIN NOINHERIT;
    END IF;
    -- a cluster made before 0.3.0 had it in service_role
    IF pg_has_role('voxanne_relay', 'service_role', 'MEMBER') THEN
        REVOKE service_role FROM voxanne_relay;
        ALTER ROLE voxanne_relay NOINHERIT;
    END IF;
END
$$;
SQL
}

# Create database $1 with the extension; with "fresh", drop it first.
create_database() {
    local db=$1 mode=${2:-keep}
    if [[ $mode == fresh ]]; then
        psql_dev -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
    fi
    if [[ -z $(psql_dev -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
        psql_dev -d postgres -c "CREATE DATABASE $db"
    fi
    psql_dev -d "$db" -c "CREATE EXTENSION IF NOT EXISTS voxanne_ext" -c "SELECT voxanne.grant_relay_role('voxanne_relay')"
}

# A PgBouncer in transaction mode (as Supavisor's port 6543) in front of the local cluster, on
# VOXANNE_PGBOUNCER_PORT, with fewer server connections than the relay suite's relays hold
# sessions, so consecutive transactions of one session land on different server connections.
PGBOUNCER_DIR=$DEV/pgbouncer
export VOXANNE_PGBOUNCER_PORT=${VOXANNE_PGBOUNCER_PORT:-54331}
start_pgbouncer() {
    stop_pgbouncer
    mkdir -p "$PGBOUNCER_DIR"
    printf '"postgres" ""\n"voxanne_relay" ""\n' >"$PGBOUNCER_DIR/users.txt"
    cat >"$PGBOUNCER_DIR/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$VOXANNE_PGPORT
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $VOXANNE_PGBOUNCER_PORT
unix_socket_dir = $PGBOUNCER_DIR
auth_type = trust
auth_file = $PGBOUNCER_DIR/users.txt
pool_mode = transaction
default_pool_size = 3
max_client_conn = 500
logfile = $PGBOUNCER_DIR/pgbouncer.log
pidfile = $PGBOUNCER_DIR/pgbouncer.pid
INI
    chown -R postgres: "$PGBOUNCER_DIR"
    say "starting PgBouncer (transaction mode) on port $VOXANNE_PGBOUNCER_PORT"
    as_postgres pgbouncer -d "$PGBOUNCER_DIR/pgbouncer.ini"
}
stop_pgbouncer() {
    if [[ -s $PGBOUNCER_DIR/pgbouncer.pid ]]; then
        kill "$(cat "$PGBOUNCER_DIR/pgbouncer.pid")" 2>/dev/null || true
        rm -f "$PGBOUNCER_DIR/pgbouncer.pid"
    fi
}
