#!/usr/bin/env bash
# Daily, after the base backup: expire old base backups, dumps and the WAL no kept backup needs.
#   30 4 * * *  postgres  PGRUNBOOK_REPO=s3://backups/main /opt/pgrunbook/scripts/disaster-recovery/retention-daily.sh --keep-base-backups 7 --keep-dump-days 7
# The retention step is destructive: it needs --confirm with the repository URL (without its
# ?query). This script passes PGRUNBOOK_RETENTION_CONFIRM, or PGRUNBOOK_REPO without its query.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
confirm="${PGRUNBOOK_RETENTION_CONFIRM:-${PGRUNBOOK_REPO%%\?*}}"
if [[ -z "$confirm" ]]; then
  echo "retention-daily.sh: set PGRUNBOOK_REPO (or PGRUNBOOK_RETENTION_CONFIRM to the repository URL without its query)" >&2
  exit 2
fi
run_locked retention --procedure retention --yes --confirm "$confirm" --json "$@"
