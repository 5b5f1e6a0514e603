#!/usr/bin/env bash
# Daily: a base backup (pg_basebackup, WAL included, manifest verified) into the repository.
#   30 2 * * *  postgres  PGRUNBOOK_REPO=s3://backups/main /opt/pgrunbook/scripts/disaster-recovery/backup-base-daily.sh --profile main
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run_locked backup-base --procedure backup-base --yes --json "$@"
