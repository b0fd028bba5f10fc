#!/usr/bin/env bash
# Makes sure a PostgreSQL server for the tests runs on loopback and prints its URL: installs
# Debian's `postgresql` when missing, starts its cluster, and creates the `cada_test` role (which
# may create databases: each test makes its own and drops it). Idempotent.
set -euo pipefail

# Only the URL goes to stdout, which callers capture: whatever the tools print goes to stderr (e.g.
# pg_ctlcluster's "Removed stale pid file." on a machine imaged while its cluster ran). No extra
# descriptor holds stdout, or the server started here would keep the caller's `$(...)` open.
prepare() {
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
    echo "test-postgres: installing postgresql"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql
  fi
  # Installed without a cluster (e.g. its data directory was removed): make one.
  if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
    version="$(ls /usr/lib/postgresql | sort -n | tail -n 1)"
    echo "test-postgres: creating cluster $version/main"
    $sudo pg_createcluster "$version" main >/dev/null
  fi
  # The first cluster (e.g. `15 main`).
  read -r version cluster port status _ < <(pg_lsclusters -h | head -n 1)
  if [ "$status" != "online" ]; then
    echo "test-postgres: starting cluster $version/$cluster on port $port"
    if ! $sudo pg_ctlcluster "$version" "$cluster" start; then
      # A machine imaged while its cluster ran keeps the socket's lock file, naming a pid that
      # another process may hold after boot: drop it when that pid is no postgres, then retry.
      lock="/var/run/postgresql/.s.PGSQL.$port.lock"
      pid="$(head -n 1 "$lock" 2>/dev/null || true)"
      if [ -n "$pid" ] && [ "$(ps -o comm= -p "$pid" 2>/dev/null)" != "postgres" ]; then
        echo "test-postgres: removing the stale $lock (pid $pid)"
        $sudo rm -f "$lock"
      fi
      sleep 2
      $sudo pg_ctlcluster "$version" "$cluster" start
    fi
  fi
  as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
  }
  # Debian's pg_hba.conf takes password logins (scram-sha-256) on 127.0.0.1.
  as_postgres psql -q -p "$port" -v ON_ERROR_STOP=1 -d postgres >/dev/null <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cada_test') THEN
    CREATE ROLE cada_test LOGIN CREATEDB PASSWORD 'cada_test';
  END IF;
END $$;
SQL
}
prepare >&2
echo "postgres://cada_test:cada_test@127.0.0.1:$port/postgres"
