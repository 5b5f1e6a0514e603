#!/usr/bin/env bash
# Weekly: prove the backups restore. The newest base backup and the WAL to the end of the archive
# are recovered into a scratch cluster (under --scratch-dir, which needs room for a base backup),
# checked (row counts, pg_amcheck, pg_checksums) and removed; the result is recorded in the
# repository, where `pgrunbook status` on any host alerts when it failed or is over 8 days old.
#   0 4 * * 0  postgres  PGRUNBOOK_REPO=s3://backups/main /opt/pgrunbook/scripts/disaster-recovery/restore-test-weekly.sh --profile main --scratch-dir /var/tmp
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run_locked restore-test --procedure restore-test --yes --json "$@"
