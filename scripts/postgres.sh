#!/usr/bin/env bash
# Sourced by scripts/test.sh. Makes sure a PostgreSQL server responds on
# 127.0.0.1:5432, starting the machine's clusters or installing Debian's
# server when none responds, creates a database for this run and exports
# SEALCAST_TEST_POSTGRES with its URL. The store's tests create databases
# of their own on the same server; when the run ends, this drops the run's
# database and every database the end-to-end tests created.

pg_host=127.0.0.1
pg_port=5432
pg_user="${SEALCAST_TEST_PG_USER:-postgres}"
pg_password="${SEALCAST_TEST_PG_PASSWORD:-}"

pg_ready() {
    command -v pg_isready >/dev/null && pg_isready -q -h "$pg_host" -p "$pg_port"
}

pg_start_clusters() {
    if command -v pg_lsclusters >/dev/null; then
        pg_lsclusters --no-header | while read -r version name _; do
            pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start || true
        done
    fi
}

if ! pg_ready; then
    pg_start_clusters
fi
if ! pg_ready && ! command -v pg_lsclusters >/dev/null; then
    echo "no PostgreSQL server responds on $pg_host:$pg_port: installing Debian's" >&2
    install_debian_package postgresql
    pg_start_clusters
    if [[ -z "$pg_password" ]]; then
        # A fresh Debian cluster requires a password on TCP connections.
        pg_password=sealcast-test
        runuser -u postgres -- psql -q -c "ALTER USER postgres PASSWORD '$pg_password'"
    fi
fi
for _ in $(seq 60); do
    pg_ready && break
    sleep 0.5
done
if ! pg_ready; then
    echo "PostgreSQL does not respond on $pg_host:$pg_port" >&2
    exit 1
fi

export PGHOST="$pg_host" PGPORT="$pg_port" PGUSER="$pg_user"
if [[ -n "$pg_password" ]]; then
    export PGPASSWORD="$pg_password"
    pg_credentials="$pg_user:$pg_password"
else
    pg_credentials="$pg_user"
fi

pg_run_database="sealcast_test_$$"
pg_drop_test_databases() {
    psql -q -d postgres -At -c "SELECT datname FROM pg_database
        WHERE datname = '$pg_run_database' OR datname LIKE 'sealcast\_e2e\_%'" |
        while read -r name; do
            psql -q -d postgres -c "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" || true
        done
}
trap pg_drop_test_databases EXIT
createdb "$pg_run_database"
export SEALCAST_TEST_POSTGRES="postgres://$pg_credentials@$pg_host:$pg_port/$pg_run_database"
