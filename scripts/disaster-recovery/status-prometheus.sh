#!/usr/bin/env bash
# Every few minutes: write pgrunbook's status for node_exporter's textfile collector.
#   */5 * * * *  postgres  PGRUNBOOK_REPO=s3://backups/main /opt/pgrunbook/scripts/disaster-recovery/status-prometheus.sh /var/lib/node_exporter/textfile/pgrunbook.prom
# The file is replaced atomically; the exit code is the status (0 OK, 1 warning, 2 critical, 3 unknown).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
out="${1:?usage: status-prometheus.sh OUTPUT_FILE [status options]}"
shift
"${PGRUNBOOK[@]}" status --prometheus --output "$out" "$@"
