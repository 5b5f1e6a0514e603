#!/usr/bin/env bash
# Hourly: pg_dump of every database (or the profile's list) into the repository.
#   0 * * * *  postgres  PGRUNBOOK_REPO=s3://backups/main /opt/pgrunbook/scripts/disaster-recovery/backup-logical-hourly.sh --profile main
# Extra arguments go to the procedure (e.g. --databases app,billing --parallel 2). Exit codes: pgrunbook's.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run_locked backup-logical --procedure backup-logical --yes --json "$@"
