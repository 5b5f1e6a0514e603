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
import type { BaseBackupEntry, Catalog, DumpEntry } from '../storage/catalog.js';
import { parseLsn, parseWalFileName, segnoOfLsn } from '../storage/walnames.js';
import type { RepositorySnapshot, ServerSnapshot } from './collect.js';
import {
  EXIT_CODE,
  SEVERITY_RANK,
  worse,
  type ArchiverMeasurement,
  type BackupMeasurement,
  type CheckKind,
  type Severity,
  type StatusCheck,
  type StatusReport,
  type StatusThresholds,
  type VerifyMeasurement,
  type WalMeasurement,
} from './types.js';
import { formatAge, formatBytesShort, formatRatio } from './format-units.js';

/** How many earlier backups the size of the newest one is compared with. */
export const SIZE_HISTORY = 10;

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

/** warning over `warnAt`, critical over twice that. */
function gradeAbove(value: number, warnAt: number): Severity {
  if (value > 2 * warnAt) return 'critical';
  if (value > warnAt) return 'warning';
  return 'ok';
}

export function sizeCriticalShrink(t: number): number {
  return Math.min(2 * t, 0.9);
}

export function gradeDeviation(ratio: number, percent: number): Severity {
  const t = percent / 100;
  if (ratio > 2 * t || ratio < -sizeCriticalShrink(t)) return 'critical';
  if (Math.abs(ratio) > t) return 'warning';
  return 'ok';
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** A backup id like 20261124T031500Z (or with a suffix) to its time. */
function timeFromId(id: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(id);
  return m ? Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) : NaN;
}

function parseTime(text: unknown): number {
  return typeof text === 'string' ? Date.parse(text) : NaN;
}

function baseBackupTime(e: BaseBackupEntry): number {
  const t = parseTime(e.meta?.stopTime);
  return Number.isFinite(t) ? t : Number.isFinite(parseTime(e.meta?.startTime)) ? parseTime(e.meta?.startTime) : timeFromId(e.id);
}

function dumpTime(e: DumpEntry): number {
  for (const t of [parseTime(e.meta?.stopTime), parseTime(e.meta?.startTime), timeFromId(e.id)]) if (Number.isFinite(t)) return t;
  return NaN;
}

function backupSize(e: { bytes: number; meta?: { size?: unknown } }): number {
  return typeof e.meta?.size === 'number' && e.meta.size >= 0 ? e.meta.size : e.bytes;
}

/** Newest first by time (entries with no readable time last), then by id. */
function newestFirst<T extends { id: string }>(entries: T[], time: (e: T) => number): T[] {
  const key = (e: T) => (Number.isFinite(time(e)) ? time(e) : -Infinity);
  return [...entries].sort((a, b) => key(b) - key(a) || b.id.localeCompare(a.id));
}

interface Judged {
  measurement: BackupMeasurement;
  age: StatusCheck;
  /** Absent when there is no complete backup to size. */
  size?: StatusCheck;
}

/** Age and size checks for one series of backups (base backups, or one database's dumps). */
function judgeSeries<T extends BaseBackupEntry | DumpEntry>(
  series: { kind: 'base_backup' | 'dump'; database?: string; entries: T[]; time: (e: T) => number },
  t: StatusThresholds,
  now: number,
): Judged {
  const { kind, database } = series;
  const complete = series.entries.filter((e) => e.complete && e.meta);
  const incomplete = series.entries.length - complete.length;
  const ordered = newestFirst(complete, series.time);
  const label = kind === 'base_backup' ? 'last base backup' : `dump ${database}`;
  const sizeLabel = kind === 'base_backup' ? 'base backup size' : `dump size ${database}`;
  const ageId = kind === 'base_backup' ? 'base_backup_age' : 'dump_age';
  const sizeId = kind === 'base_backup' ? 'base_backup_size' : 'dump_size';
  const checkKind: CheckKind = kind === 'base_backup' ? 'base-backup' : 'dump';
  const maxHours = kind === 'base_backup' ? t.maxBaseBackupAgeHours : t.maxDumpAgeHours;
  const warnAt = maxHours * 3600;
  const incompleteNote = incomplete ? `; ${incomplete} incomplete (no ${kind === 'base_backup' ? 'backup.json' : 'dump.json'}) ignored` : '';
  const measurement: BackupMeasurement = { kind, database, comparedWith: 0, complete: complete.length, incomplete };
  const base = { kind: checkKind, ...(database !== undefined ? { database } : {}) };

  if (!ordered.length) {
    const what = kind === 'base_backup' ? 'no complete base backup in the repository' : `no complete dump of ${database} in the repository`;
    const hint =
      kind === 'base_backup'
        ? 'take one: pgrunbook --procedure backup-base (pass --skip base-backup if this repository holds no base backups)'
        : `take one: pgrunbook --procedure backup-logical --databases ${database} (or pass --skip dump)`;
    return {
      measurement,
      age: { id: ageId, ...base, title: label, status: 'critical', summary: what + incompleteNote, hint, unit: 'seconds', warningAt: warnAt, criticalAt: 2 * warnAt },
    };
  }

  const newest = ordered[0];
  const at = series.time(newest);
  measurement.id = newest.id;
  let age: StatusCheck;
  if (Number.isFinite(at)) {
    const ageSeconds = Math.max(0, Math.round((now - at) / 1000));
    measurement.endedAt = new Date(at).toISOString();
    measurement.ageSeconds = ageSeconds;
    const status = gradeAbove(ageSeconds, warnAt);
    age = {
      id: ageId,
      ...base,
      title: label,
      status,
      summary: `${newest.id} ended ${formatAge(ageSeconds)} ago (warning over ${formatAge(warnAt)}, critical over ${formatAge(2 * warnAt)})${incompleteNote}`,
      hint:
        status === 'ok'
          ? undefined
          : `the ${kind === 'base_backup' ? 'base backup' : `dump of ${database}`} schedule is behind: check the backup job's log and run it now (${kind === 'base_backup' ? 'pgrunbook --procedure backup-base' : `pgrunbook --procedure backup-logical --databases ${database}`})`,
      value: ageSeconds,
      unit: 'seconds',
      warningAt: warnAt,
      criticalAt: 2 * warnAt,
    };
  } else {
    age = { id: ageId, ...base, title: label, status: 'unknown', summary: `${newest.id}: its metadata has no readable time${incompleteNote}`, unit: 'seconds' };
  }

  const sizeBytes = backupSize(newest);
  measurement.sizeBytes = sizeBytes;
  const previous = ordered.slice(1, 1 + SIZE_HISTORY).map(backupSize);
  measurement.comparedWith = previous.length;
  let size: StatusCheck;
  const pct = t.sizeDeviationPercent;
  if (!previous.length) {
    size = { id: sizeId, ...base, title: sizeLabel, status: 'ok', summary: `${formatBytesShort(sizeBytes)}; the first one, nothing to compare with yet` };
  } else {
    const med = median(previous);
    measurement.medianBytes = med;
    if (med <= 0) {
      size = { id: sizeId, ...base, title: sizeLabel, status: sizeBytes > 0 ? 'warning' : 'ok', summary: `${formatBytesShort(sizeBytes)}; the earlier ones were empty` };
    } else {
      const ratio = (sizeBytes - med) / med;
      measurement.deviationRatio = ratio;
      const status = gradeDeviation(ratio, pct);
      const shrinkCrit = sizeCriticalShrink(pct / 100);
      size = {
        id: sizeId,
        ...base,
        title: sizeLabel,
        status,
        summary: `${formatBytesShort(sizeBytes)}, ${formatRatio(ratio)} against the median ${formatBytesShort(med)} of the ${previous.length} before it (warning beyond ±${pct}%, critical over +${2 * pct}% or under -${Math.round(shrinkCrit * 100)}%)`,
        hint:
          status === 'ok'
            ? undefined
            : ratio < 0
              ? 'much smaller than usual: check that the backup finished and covers everything (a dropped table, a failed run, the wrong database?)'
              : 'much larger than usual: check for unexpected data growth (bloat, a runaway table) and storage headroom',
        value: ratio,
        unit: 'ratio',
        warningAt: pct / 100,
        criticalAt: (2 * pct) / 100,
      };
    }
  }
  return { measurement, age, size };
}

function unknownCheck(id: string, kind: CheckKind, title: string, why: string, database?: string): StatusCheck {
  return { id, kind, title, status: 'unknown', summary: why, ...(database !== undefined ? { database } : {}) };
}

/** Segment number of an archived file name, when it names a segment (history files do not). */
function segnoOfArchived(name: string | null | undefined, segmentSize: number): bigint | undefined {
  if (!name) return undefined;
  const parsed = parseWalFileName(name, segmentSize);
  return parsed?.segno;
}

function evaluateWalRepository(catalog: Catalog, t: StatusThresholds, now: number, checks: StatusCheck[]): WalMeasurement {
  const timelines = catalog.wal.timelines;
  const m: WalMeasurement = { repositoryFiles: catalog.wal.files, gaps: catalog.gaps.length };
  if (!timelines.length) {
    checks.push({
      id: 'wal_archived_age',
      kind: 'wal',
      title: 'archived WAL',
      status: 'critical',
      summary: 'no WAL segment in the repository: point-in-time recovery is impossible',
      hint: 'set up WAL archiving into this repository (pgrunbook --procedure wal-archiving); pass --skip wal if you rely on dumps only',
    });
    return m;
  }
  const newest = timelines.reduce((a, b) => (Date.parse(b.lastArchivedAt) > Date.parse(a.lastArchivedAt) ? b : a));
  // The highest segment over all timelines (timeline first in the name, so compare by number).
  const highest = timelines[timelines.length - 1];
  m.lastArchivedSegment = highest.last;
  m.lastArchivedAt = newest.lastArchivedAt;
  const ageSeconds = Math.max(0, Math.round((now - Date.parse(newest.lastArchivedAt)) / 1000));
  m.ageSeconds = ageSeconds;
  const warnAt = t.maxWalAgeHours !== undefined ? t.maxWalAgeHours * 3600 : undefined;
  const status = warnAt !== undefined ? gradeAbove(ageSeconds, warnAt) : 'ok';
  checks.push({
    id: 'wal_archived_age',
    kind: 'wal',
    title: 'archived WAL',
    status,
    summary: `newest segment ${highest.last} archived ${formatAge(ageSeconds)} ago${warnAt !== undefined ? ` (warning over ${formatAge(warnAt)}, critical over ${formatAge(2 * warnAt)})` : ''}; ${catalog.wal.files} files`,
    hint: status === 'ok' ? undefined : 'no WAL has arrived lately: check archive_command and the server log (an idle server switches segments only with archive_timeout)',
    value: ageSeconds,
    unit: 'seconds',
    ...(warnAt !== undefined ? { warningAt: warnAt, criticalAt: 2 * warnAt } : {}),
  });
  return m;
}

function evaluateRecoveryWindow(catalog: Catalog, checks: StatusCheck[]): void {
  const complete = newestFirst(
    catalog.baseBackups.filter((b) => b.complete && b.meta),
    baseBackupTime,
  );
  if (!complete.length) return;
  const newest = complete[0];
  const window = catalog.windows.find((w) => w.backupId === newest.meta!.id) ?? catalog.windows.find((w) => w.backupId === newest.id);
  if (!window) return;
  const base = { id: 'recovery_window', kind: 'wal' as const, title: 'recovery window' };
  if (window.unusable) {
    checks.push({ ...base, status: 'critical', summary: `newest base backup ${newest.id} cannot be restored: ${window.unusable}`, hint: 'take a new base backup now, and check WAL archiving' });
  } else if (window.endedByGap) {
    const g = window.endedByGap;
    checks.push({
      ...base,
      status: 'critical',
      summary: `from ${newest.id}, recovery stops at the gap at ${g.from} (${g.missing} segment${g.missing > 1 ? 's' : ''} missing); later changes cannot be recovered`,
      hint: 'take a new base backup now so that recovery does not need the missing WAL; then find out why segments went missing',
    });
  } else {
    checks.push({ ...base, status: 'ok', summary: `from ${newest.id} (${window.fromTime}) to ${window.toLsn}${window.toArchivedAt ? ` (archived ${window.toArchivedAt})` : ''}` });
  }
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
      hint: 'run pgrunbook catalog --verify to check the repository and record a new result',
    });
    return { exists: true, error: repository.lastVerifyError };
  }
  const v = repository.lastVerify;
  if (!v) {
    checks.push({ ...base, status: 'ok', summary: 'never verified (note): run pgrunbook catalog --verify to read every object back against its checksum' });
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
      hint: 'do not rely on those objects: take a new base backup / dump now; see pgrunbook catalog --verify for the full list, and run it again once repaired',
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
    hint: status === 'ok' ? undefined : 'the last proof that the backups can be read back is old: run pgrunbook catalog --verify (schedule it, e.g. weekly)',
    value: ageSeconds,
    unit: 'seconds',
    warningAt: warnAt,
  });
  return m;
}

function evaluateServer(server: ServerSnapshot, catalog: Catalog | undefined, t: StatusThresholds, checks: StatusCheck[]): ArchiverMeasurement | undefined {
  const f = server.facts;
  if (!f) {
    checks.push({
      id: 'server',
      kind: 'server',
      title: 'server',
      status: 'critical',
      summary: `unreachable: ${server.error ?? 'no answer'}`,
      hint: 'WAL archive lag and archiver failures could not be checked; pass --skip server to check the repository only',
    });
    checks.push(unknownCheck('wal_archive_lag', 'server', 'WAL archive lag', 'unknown: the server is unreachable'));
    checks.push(unknownCheck('wal_archiver', 'server', 'WAL archiver', 'unknown: the server is unreachable'));
    return undefined;
  }
  checks.push({ id: 'server', kind: 'server', title: 'server', status: 'ok', summary: `PostgreSQL ${f.version}${f.inRecovery ? ' (standby)' : ''} at ${server.endpoint}` });
  const a = f.archiver;
  const iso = (d: Date | null) => (d ? d.toISOString() : undefined);
  const failing = a.lastFailedTime !== null && (a.lastArchivedTime === null || a.lastFailedTime.getTime() > a.lastArchivedTime.getTime());
  const m: ArchiverMeasurement = {
    archiveMode: f.archiveMode,
    inRecovery: f.inRecovery,
    currentLsn: f.currentLsn ?? undefined,
    currentWalFile: f.currentWalFile ?? undefined,
    archivedCount: a.archivedCount,
    failedCount: a.failedCount,
    lastArchivedWal: a.lastArchivedWal ?? undefined,
    lastArchivedTime: iso(a.lastArchivedTime),
    lastFailedWal: a.lastFailedWal ?? undefined,
    lastFailedTime: iso(a.lastFailedTime),
    statsReset: iso(a.statsReset),
    failing,
  };

  // The archiver.
  const archiving = f.archiveMode === 'on' || f.archiveMode === 'always';
  if (!archiving) {
    checks.push({
      id: 'wal_archiver',
      kind: 'server',
      title: 'WAL archiver',
      status: 'critical',
      summary: `WAL archiving is off (archive_mode = ${f.archiveMode}): nothing after the last base backup can be recovered`,
      hint: 'enable it with pgrunbook --procedure wal-archiving (archive_mode needs a restart); pass --skip wal if you rely on dumps only',
    });
  } else if (f.inRecovery && f.archiveMode !== 'always') {
    checks.push(unknownCheck('wal_archiver', 'server', 'WAL archiver', 'the server is a standby: its primary archives the WAL; point --host at the primary'));
  } else if (failing) {
    checks.push({
      id: 'wal_archiver',
      kind: 'server',
      title: 'WAL archiver',
      status: 'critical',
      summary: `failing: ${a.failedCount} failure${a.failedCount === 1 ? '' : 's'}, last ${a.lastFailedWal ?? '?'} at ${iso(a.lastFailedTime)}; ${a.lastArchivedTime ? `no success since ${iso(a.lastArchivedTime)} (${a.lastArchivedWal})` : 'nothing archived since the statistics were reset'}`,
      hint: "archive_command is failing: the server log has its error (for pgrunbook wal-push, the message says what to fix); WAL piles up in pg_wal until it succeeds",
    });
  } else {
    checks.push({
      id: 'wal_archiver',
      kind: 'server',
      title: 'WAL archiver',
      status: 'ok',
      summary: `${a.archivedCount} archived${a.lastArchivedWal ? `, last ${a.lastArchivedWal} at ${iso(a.lastArchivedTime)}` : ''}${a.failedCount ? `; ${a.failedCount} earlier failure${a.failedCount === 1 ? '' : 's'}, recovered` : ''}`,
    });
  }

  // The lag: completed segments between the current position and the last archived one.
  if (f.inRecovery || !f.currentLsn) {
    checks.push(unknownCheck('wal_archive_lag', 'server', 'WAL archive lag', 'the server is a standby: measure the lag on the primary'));
    return m;
  }
  const seg = f.walSegmentSize;
  const current = segnoOfLsn(parseLsn(f.currentLsn), seg);
  const lagFrom = (archived: bigint | undefined) => (archived === undefined ? undefined : Number(current - archived - 1n > 0n ? current - archived - 1n : 0n));
  const archiverSeg = segnoOfArchived(a.lastArchivedWal, seg);
  m.archiverLagSegments = lagFrom(archiverSeg);
  // Cross-check: the newest segment the repository holds on this timeline or an earlier one.
  if (catalog) {
    let newest: bigint | undefined;
    for (const tl of catalog.wal.timelines) {
      if (f.timeline !== undefined && tl.timeline > f.timeline) continue;
      const s = segnoOfArchived(tl.last, catalog.segmentSize);
      if (s !== undefined && (newest === undefined || s > newest)) newest = s;
    }
    m.repositoryLagSegments = lagFrom(newest);
  }
  const lags = [m.archiverLagSegments, m.repositoryLagSegments].filter((x): x is number => x !== undefined);
  const warnAt = t.maxArchiveLagSegments;
  if (!archiving) {
    checks.push(unknownCheck('wal_archive_lag', 'server', 'WAL archive lag', 'not measured: archiving is off'));
  } else if (!lags.length) {
    checks.push({
      id: 'wal_archive_lag',
      kind: 'server',
      title: 'WAL archive lag',
      status: failing ? 'critical' : 'unknown',
      summary: `current segment ${f.currentWalFile}; no segment archived yet (since the statistics were reset) and none in the repository`,
    });
  } else {
    const lag = Math.max(...lags);
    const status = gradeAbove(lag, warnAt);
    const parts = [
      m.archiverLagSegments !== undefined ? `${m.archiverLagSegments} behind the archiver's last (${a.lastArchivedWal})` : undefined,
      m.repositoryLagSegments !== undefined ? `${m.repositoryLagSegments} behind the repository's newest` : undefined,
    ].filter(Boolean);
    checks.push({
      id: 'wal_archive_lag',
      kind: 'server',
      title: 'WAL archive lag',
      status,
      summary: `${lag} segment${lag === 1 ? '' : 's'} waiting at ${f.currentWalFile}: ${parts.join(', ')} (warning over ${warnAt}, critical over ${2 * warnAt})`,
      hint:
        status === 'ok'
          ? undefined
          : m.repositoryLagSegments !== undefined && (m.archiverLagSegments ?? 0) < m.repositoryLagSegments
            ? 'the archiver reports success but the repository lacks the segments: archive_command may write somewhere else than this repository'
            : 'archiving is falling behind or failing: check archive_command in the server log, and the free space in pg_wal',
      value: lag,
      unit: 'segments',
      warningAt: warnAt,
      criticalAt: 2 * warnAt,
    });
  }
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
          hint: 'take them: pgrunbook --procedure backup-logical (pass --skip dump if this repository holds no dumps)',
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
    }
  }
  if (wal) measurements.wal = wal;

  // The verdict. Nothing reachable at all: nothing can be said (Nagios UNKNOWN).
  const nothingReachable = !catalog && (!server || !server.facts);
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
  if (c.id === 'last_verify') return c.status === 'critical' ? c.summary.replace(/^CORRUPTION: the verify .*? found /, 'found ') : c.value !== undefined ? `${formatAge(c.value)} old` : 'unreadable';
  if (c.unit === 'seconds' && c.value !== undefined) return `${formatAge(c.value)} old`;
  if (c.unit === 'ratio' && c.value !== undefined) return formatRatio(c.value);
  if (c.unit === 'segments' && c.value !== undefined) return `${c.value} segments behind`;
  if (c.id === 'wal_archiver') return c.summary.startsWith('failing') ? 'failing' : 'off';
  if (c.id === 'repository' || c.id === 'server') return 'unreachable';
  if (c.summary.startsWith('no ')) return 'missing';
  return c.status;
}
