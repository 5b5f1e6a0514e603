# Shared by the cron entry points: find pgrunbook, and never let two runs of one job overlap.
# shellcheck shell=bash
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -n "${PGRUNBOOK_BIN:-}" ]]; then
  PGRUNBOOK=("$PGRUNBOOK_BIN")
elif [[ -f "$here/../../dist/cli.js" ]]; then
  PGRUNBOOK=(node "$here/../../dist/cli.js")
elif command -v pgrunbook >/dev/null 2>&1; then
  PGRUNBOOK=(pgrunbook)
else
  echo "$(basename "$0"): pgrunbook not found: install it, build this checkout (npm install), or set PGRUNBOOK_BIN" >&2
  exit 2
fi

# run_locked JOB ARGS...: run pgrunbook under an exclusive lock named after the job, so a slow
# run is never overlapped by the next one from cron; a run that finds the lock taken exits 75.
run_locked() {
  local job="$1"
  shift
  local lockdir="${PGRUNBOOK_LOCK_DIR:-${XDG_RUNTIME_DIR:-/tmp}}"
  exec 9>"$lockdir/pgrunbook-$job.lock"
  if ! flock -n 9; then
    echo "$(basename "$0"): another $job run is still going (lock $lockdir/pgrunbook-$job.lock); skipping this one" >&2
    exit 75
  fi
  "${PGRUNBOOK[@]}" "$@"
}
