#!/bin/sh
# One-shot job (temporal-schema service): create Temporal's two PostgreSQL databases and bring
# their schemas to the version this admin-tools image ships. Safe to run on every `up`:
#   create         fails harmlessly when the database already exists;
#   setup-schema   only writes the 0.0 baseline into a database that has no version yet;
#   update-schema  applies just the versioned migrations that are missing.
# Connection comes from the SQL_* variables temporal-sql-tool reads itself
# (SQL_PLUGIN, SQL_HOST, SQL_PORT, SQL_USER, SQL_PASSWORD), set in the compose file.
set -eu

SCHEMA_DIR=/etc/temporal/schema/postgresql/v12

migrate() {
    db="$1"
    versioned="$2"
    echo "== database $db"
    if ! temporal-sql-tool --db "$db" create; then
        echo "   could not create $db: it most likely exists already (the next step would fail otherwise)"
    fi
    temporal-sql-tool --db "$db" setup-schema -v 0.0
    temporal-sql-tool --db "$db" update-schema -d "$SCHEMA_DIR/$versioned"
}

migrate "${DBNAME:-temporal}" temporal/versioned
migrate "${VISIBILITY_DBNAME:-temporal_visibility}" visibility/versioned
echo "Temporal schema is up to date"
