// The judgement: measured facts plus thresholds plus "now" in, checks with severities out.
// Pure (no I/O), so every level is testable with any clock.
//
// Levels (t = the configured threshold):
//   age of the newest base backup / dump:  warning over t, critical over 2t; none at all: critical
//   size of the newest backup vs the median of up to 10 before it: warning when it differs by
//     more than t percent; critical when it grew by more than 2t, or shrank by more than 2t
//     (capped at 90%: with the default 50%, a backup under a tenth of the median)
//   WAL archive lag (completed segments not yet archived): warning over t, critical over 2t
//   archiver: archive_mode off, or the last failure newer than the last success: critical
//   archived WAL age (only with --max-wal-age-hours): warning over t, critical over 2t;
//     no WAL in the repository at all: critical
//   recovery window of the newest base backup: ends at a gap, or its WAL is missing: critical
//   repository or server unreachable: critical, and the checks that needed it are unknown;
//     both unreachable: the whole status is unknown (exit 3)
//
// The rules per subject: grade.ts (levels), evaluate-backups.ts (age and size of base backups
// and dumps), evaluate-wal.ts (archived WAL, recovery window, the server's archiver and lag).
import type { RepositorySnapshot, ServerSnapshot } from './collect.js';
import { EXIT_CODE, SEVERITY_RANK, worse, type CheckKind, type Severity, type StatusCheck, type StatusReport, type StatusThresholds, type VerifyMeasurement, type WalMeasurement } from './types.js';
import { formatAge, formatRatio } from './format-units.js';
import { unknownCheck } from './grade.js';
import { baseBackupTime, dumpTime, judgeSeries } from './evaluate-backups.js';
import { evaluatePusher } from './evaluate-pusher.js';
import { evaluateRecoveryWindow, evaluateServer, evaluateWalRepository } from './evaluate-wal.js';
import { pgrunbookCommand } from '../engine/command-name.js';
import { evaluateRestoreTest } from './evaluate-restore-test.js';

export { gradeDeviation, sizeCriticalShrink } from './grade.js';
export { SIZE_HISTORY } from './evaluate-backups.js';

export interface EvaluateInput {
  repository: RepositorySnapshot;
  /** Absent when the server was not checked (--skip server / --skip wal). */
  server?: ServerSnapshot;
  thresholds: StatusThresholds;
  now: Date;
  /** Databases whose dumps are expected; absent: every database with dumps in the repository. */
  databases?: string[];
  skip?: CheckKind[];
}

/**
 * The last `catalog --verify`: critical when it found corruption, warning when it is older than
 * maxVerifyAgeDays or its record cannot be read. Never verified is a note, not an alert (a new
 * repository is healthy before its first verify), with the command to run in its summary.
 */
function evaluateVerify(repository: RepositorySnapshot, t: StatusThresholds, now: number, checks: StatusCheck[]): VerifyMeasurement {
  const base = { id: 'last_verify', kind: 'repository' as const, title: 'last verify' };
  const warnAt = (t.maxVerifyAgeDays ?? 8) * 86_400;
  if (repository.lastVerifyError) {
    checks.push({
      ...base,
      status: 'warning',
      summary: `verify/last.json cannot be read: ${repository.lastVerifyError}`,
      hint: `run ${pgrunbookCommand('catalog --verify')} to check the repository and record a new result`,
    });
    return { exists: true, error: repository.lastVerifyError };
  }
  const v = repository.lastVerify;
  if (!v) {
    checks.push({ ...base, status: 'ok', summary: `never verified (note): run ${pgrunbookCommand('catalog --verify')} to read every object back against its checksum` });
    return { exists: false };
  }
  const at = Date.parse(v.finishedAt);
  const ageSeconds = Number.isFinite(at) ? Math.max(0, Math.round((now - at) / 1000)) : undefined;
  const badObjects = typeof v.counts?.bad === 'number' ? v.counts.bad : (v.bad?.length ?? 0);
  const m: VerifyMeasurement = {
    exists: true,
    finishedAt: v.finishedAt,
    ageSeconds,
    ok: v.ok,
    objects: v.counts?.objects,
    bytes: v.counts?.bytes,
    badObjects,
    bad: (v.bad ?? []).slice(0, 10).map((b) => ({ key: b.key, problem: b.problem, detail: b.detail })),
    since: v.scope?.since,
    durationMs: v.durationMs,
  };
  const when = ageSeconds !== undefined ? `${formatAge(ageSeconds)} ago (${v.finishedAt})` : `at an unreadable time (${String(v.finishedAt)})`;
  const scope = v.scope?.since ? `, objects since ${v.scope.since}` : '';
  if (!v.ok) {
    const named = (v.bad ?? []).slice(0, 3).map((b) => `${b.key} (${b.problem})`);
    checks.push({
      ...base,
      status: 'critical',
      summary: `CORRUPTION: the verify ${when} found ${badObjects} bad object${badObjects === 1 ? '' : 's'}: ${named.join(', ')}${badObjects > named.length ? ', ...' : ''}`,
      hint: `do not rely on those objects: take a new base backup / dump now; see ${pgrunbookCommand('catalog --verify')} for the full list, and run it again once repaired`,
      value: ageSeconds,
      unit: 'seconds',
      warningAt: warnAt,
    });
    return m;
  }
  const status: Severity = ageSeconds === undefined ? 'warning' : ageSeconds > warnAt ? 'warning' : 'ok';
  checks.push({
    ...base,
    status,
    summary: `intact ${when}: ${v.counts?.objects ?? '?'} objects${scope} (warning over ${formatAge(warnAt)})`,
    hint: status === 'ok' ? undefined : `the last proof that the backups can be read back is old: run ${pgrunbookCommand('catalog --verify')} (schedule it, e.g. weekly)`,
    value: ageSeconds,
    unit: 'seconds',
    warningAt: warnAt,
  });
  return m;
}

export function evaluateStatus(input: EvaluateInput): StatusReport {
  const { repository, server, thresholds: t } = input;
  const now = input.now.getTime();
  const skip = new Set(input.skip ?? []);
  const checks: StatusCheck[] = [];
  const measurements: StatusReport['measurements'] = { dumps: [] };
  const catalog = repository.catalog;

  // The repository itself.
  if (!catalog) {
    checks.push({
      id: 'repository',
      kind: 'repository',
      title: 'repository',
      status: 'critical',
      summary: `unreachable: ${repository.error ?? 'unknown error'}`,
      hint: 'backups cannot be checked (and probably not written either): check the URL, the credentials and the network',
    });
  } else {
    const complete = catalog.baseBackups.filter((b) => b.complete).length;
    const dumps = catalog.dumps.filter((d) => d.complete).length;
    checks.push({ id: 'repository', kind: 'repository', title: 'repository', status: 'ok', summary: `${complete} base backup${complete === 1 ? '' : 's'}, ${dumps} dump${dumps === 1 ? '' : 's'}, ${catalog.wal.files} WAL files` });
    measurements.verify = evaluateVerify(repository, t, now, checks);
    measurements.restoreTest = evaluateRestoreTest(repository, catalog, t, now, checks);
  }

  // Base backups.
  if (!skip.has('base-backup')) {
    if (!catalog) {
      checks.push(unknownCheck('base_backup_age', 'base-backup', 'last base backup', 'unknown: the repository is unreachable'));
    } else {
      const j = judgeSeries({ kind: 'base_backup', entries: catalog.baseBackups, time: baseBackupTime }, t, now);
      measurements.baseBackup = j.measurement;
      checks.push(j.age, ...(j.size ? [j.size] : []));
    }
  }

  // Dumps, per database.
  if (!skip.has('dump')) {
    if (!catalog) {
      checks.push(unknownCheck('dump_age', 'dump', 'dumps', 'unknown: the repository is unreachable'));
    } else {
      const found = [...new Set(catalog.dumps.map((d) => d.database))].sort();
      const databases = input.databases?.length ? input.databases : found;
      if (!databases.length) {
        checks.push({
          id: 'dump_age',
          kind: 'dump',
          title: 'dumps',
          status: 'critical',
          summary: 'no dump in the repository',
          hint: `take them: ${pgrunbookCommand('--procedure backup-logical')} (pass --skip dump if this repository holds no dumps)`,
        });
      }
      for (const database of databases) {
        const j = judgeSeries({ kind: 'dump', database, entries: catalog.dumps.filter((d) => d.database === database), time: dumpTime }, t, now);
        measurements.dumps.push(j.measurement);
        checks.push(j.age, ...(j.size ? [j.size] : []));
      }
    }
  }

  // WAL: what the repository holds, then what the server says.
  let wal: WalMeasurement | undefined;
  if (!skip.has('wal')) {
    if (catalog) {
      wal = evaluateWalRepository(catalog, t, now, checks);
      if (!skip.has('base-backup')) evaluateRecoveryWindow(catalog, checks);
    } else {
      checks.push(unknownCheck('wal_archived_age', 'wal', 'archived WAL', 'unknown: the repository is unreachable'));
    }
    if (server) {
      const archiver = evaluateServer(server, catalog, t, checks);
      if (archiver) wal = { ...(wal ?? { repositoryFiles: 0, gaps: 0 }), server: archiver };
      if (server.pusher) wal = { ...(wal ?? { repositoryFiles: 0, gaps: 0 }), pusher: evaluatePusher(server.pusher, server.facts?.readyCount, now, checks) };
    }
  }
  if (wal) measurements.wal = wal;

  // The verdict. Nothing reachable at all: nothing can be said (Nagios UNKNOWN).
  const nothingReachable = !catalog && (!server?.facts);
  let status: Severity = 'ok';
  for (const c of checks) status = worse(status, c.status);
  if (nothingReachable) status = 'unknown';

  const problems = checks.filter((c) => c.status !== 'ok').sort((a, b) => SEVERITY_RANK[b.status] - SEVERITY_RANK[a.status]);
  const headline = nothingReachable
    ? `UNKNOWN: cannot reach the repository (${repository.error ?? '?'})${server ? ` nor the server (${server.error ?? '?'})` : ''}`
    : problems.length
      ? `${status.toUpperCase()}: ${problems
          .slice(0, 4)
          .map((c) => `${c.title} ${shortProblem(c)}`)
          .join('; ')}${problems.length > 4 ? `; and ${problems.length - 4} more` : ''}`
      : `OK: ${checks.length} checks passed`;

  return {
    status,
    exitCode: EXIT_CODE[status],
    generatedAt: input.now.toISOString(),
    headline,
    repository: { url: repository.url, reachable: Boolean(catalog), ...(repository.error ? { error: repository.error } : {}) },
    ...(server
      ? { server: { endpoint: server.endpoint, reachable: Boolean(server.facts), ...(server.error ? { error: server.error } : {}), ...(server.facts ? { version: server.facts.version } : {}) } }
      : {}),
    thresholds: t,
    skipped: [...skip],
    checks,
    measurements,
  };
}

/** A few words for the headline: "5 h old", "+900%", "failing", "12 segments". */
export function shortProblem(c: StatusCheck): string {
  if (c.status === 'unknown') return 'unknown';
  if (c.id === 'wal_pusher') return 'failing to push';
  if (c.id === 'last_verify') return c.status === 'critical' ? c.summary.replace(/^CORRUPTION: the verify .*? found /, 'found ') : c.value !== undefined ? `${formatAge(c.value)} old` : 'unreadable';
  if (c.unit === 'seconds' && c.value !== undefined) return `${formatAge(c.value)} old`;
  if (c.unit === 'ratio' && c.value !== undefined) return formatRatio(c.value);
  if (c.unit === 'segments' && c.value !== undefined) return `${c.value} segments behind`;
  if (c.id === 'wal_archiver') return c.summary.startsWith('failing') ? 'failing' : 'off';
  if (c.id === 'repository' || c.id === 'server') return 'unreachable';
  if (c.summary.startsWith('no ')) return 'missing';
  return c.status;
}
