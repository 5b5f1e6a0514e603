// The last restore-test, from its records in the repository: critical when the newest one
// failed, warning when the newest passed one is older than maxRestoreTestAgeDays, critical when
// there has been none for that long (the repository's oldest base backup is older). A repository
// younger than that gets a note: it has time for its first test.
import { pgrunbookCommand } from '../engine/command-name.js';
import type { Catalog } from '../repo/catalog.js';
import type { RepositorySnapshot } from './collect.js';
import { baseBackupTime } from './evaluate-backups.js';
import { formatAge } from './format-units.js';
import type { RestoreTestMeasurement, Severity, StatusCheck, StatusThresholds } from './types.js';

export function evaluateRestoreTest(repository: RepositorySnapshot, catalog: Catalog, t: StatusThresholds, now: number, checks: StatusCheck[]): RestoreTestMeasurement {
  const base = { id: 'last_restore_test', kind: 'repository' as const, title: 'last restore test' };
  const warnAt = (t.maxRestoreTestAgeDays ?? 8) * 86_400;
  const h = repository.restoreTests;
  const newest = h?.newest;
  const success = h?.newestSuccess;
  const ageOf = (iso: string | undefined) => (iso && Number.isFinite(Date.parse(iso)) ? Math.max(0, Math.round((now - Date.parse(iso)) / 1000)) : undefined);
  const m: RestoreTestMeasurement = {
    ...(newest ? { lastAt: newest.finishedAt, lastOk: newest.ok, durationSeconds: newest.timings?.totalSeconds, rpoSeconds: newest.rpoSeconds, backupId: newest.backup?.id } : {}),
    ...(newest?.failure ? { lastFailure: newest.failure } : {}),
    ...(success ? { lastSuccessAt: success.finishedAt, lastSuccessAgeSeconds: ageOf(success.finishedAt) } : {}),
  };
  const run = `run ${pgrunbookCommand('--procedure restore-test')} (schedule it weekly: scripts/disaster-recovery/restore-test-weekly.sh)`;
  if (newest && !newest.ok) {
    checks.push({
      ...base,
      status: 'critical',
      summary: `FAILED ${formatAge(ageOf(newest.finishedAt) ?? 0)} ago on ${newest.host} (base backup ${newest.backup?.id ?? '?'}): ${newest.failure ?? 'see its record'}`,
      hint: `the backups did not restore cleanly: read the record (restore-tests/), fix the cause (a damaged object: take a new base backup), then ${run}`,
      value: m.lastSuccessAgeSeconds,
      unit: 'seconds',
      warningAt: warnAt,
    });
    return m;
  }
  if (success) {
    const age = m.lastSuccessAgeSeconds;
    const status: Severity = age === undefined || age > warnAt ? 'warning' : 'ok';
    checks.push({
      ...base,
      status,
      summary: `passed ${age !== undefined ? `${formatAge(age)} ago` : 'at an unreadable time'} on ${success.host}: base backup ${success.backup?.id ?? '?'}, RTO ${success.timings.totalSeconds} s, RPO ${success.rpoSeconds ?? '?'} s (warning over ${formatAge(warnAt)})`,
      hint: status === 'ok' ? undefined : `the last proof that the backups restore is old: ${run}`,
      value: age,
      unit: 'seconds',
      warningAt: warnAt,
    });
    return m;
  }
  const times = catalog.baseBackups.filter((b) => b.complete).map(baseBackupTime).filter(Number.isFinite);
  const repoAge = times.length ? Math.max(0, Math.round((now - Math.min(...times)) / 1000)) : undefined;
  const overdue = repoAge !== undefined && repoAge > warnAt;
  checks.push({
    ...base,
    status: overdue ? 'critical' : 'ok',
    summary: overdue ? `never: no restore test in the ${formatAge(repoAge)} since the oldest base backup` : `none yet (note): ${run}`,
    hint: overdue ? `nobody has proven these backups restore: ${run}` : undefined,
  });
  return m;
}
