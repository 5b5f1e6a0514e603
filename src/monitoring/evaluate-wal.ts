// WAL judged: what the repository holds (its newest segment's age, the newest base backup's
// recovery window) and what the server says (archive_mode, the archiver's failures, the lag
// of completed segments behind the last archived one).
import type { Catalog } from '../repo/catalog.js';
import { parseLsn, parseWalFileName, segnoOfLsn } from '../repo/walnames.js';
import type { ServerSnapshot } from './collect.js';
import type { ArchiverMeasurement, StatusCheck, StatusThresholds, WalMeasurement } from './types.js';
import { formatAge } from './format-units.js';
import { gradeAbove, unknownCheck } from './grade.js';
import { baseBackupTime, newestFirst } from './evaluate-backups.js';

/** Segment number of an archived file name, when it names a segment (history files do not). */
function segnoOfArchived(name: string | null | undefined, segmentSize: number): bigint | undefined {
  if (!name) return undefined;
  const parsed = parseWalFileName(name, segmentSize);
  return parsed?.segno;
}

export function evaluateWalRepository(catalog: Catalog, t: StatusThresholds, now: number, checks: StatusCheck[]): WalMeasurement {
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

export function evaluateRecoveryWindow(catalog: Catalog, checks: StatusCheck[]): void {
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

export function evaluateServer(server: ServerSnapshot, catalog: Catalog | undefined, t: StatusThresholds, checks: StatusCheck[]): ArchiverMeasurement | undefined {
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
