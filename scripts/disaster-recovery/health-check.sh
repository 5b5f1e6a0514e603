#!/usr/bin/env bash
# Post-restore / periodic health check: runs pgrunbook's `verify` procedure headless and
# exits with its code (0 healthy, 1 a check could not run, e.g. server unreachable,
# 2 bad usage, 3 verification failed).
#
#   health-check.sh [--profile NAME] [--critical-tables db:schema.table[:min],...] [--json] [...]
#
# Connection settings follow libpq: PGHOST, PGPORT, PGUSER, PGPASSWORD or ~/.pgpass.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -n "${PGRUNBOOK_BIN:-}" ]]; then
  cmd=("$PGRUNBOOK_BIN")
elif [[ -f "$here/../../dist/cli.js" ]]; then
  cmd=(node "$here/../../dist/cli.js")
elif command -v pgrunbook >/dev/null 2>&1; then
  cmd=(pgrunbook)
else
  echo "health-check.sh: pgrunbook not found: install it (npm install -g pgrunbook), build this checkout (npm install), or set PGRUNBOOK_BIN" >&2
  exit 2
fi

"${cmd[@]}" --procedure verify "$@"
exit $?
