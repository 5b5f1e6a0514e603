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
import { pgrunbookCommand } from '../engine/command-name.js';

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
      hint: `set up WAL archiving into this repository (${pgrunbookCommand('--procedure wal-archiving')}); pass --skip wal if you rely on dumps only`,
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
  const recovery = recoveryState(f);
  const role = recovery ? ` (${recovery.words})` : '';
  checks.push({
    id: 'server',
    kind: 'server',
    title: 'server',
    // A recovery paused at its target is a restore waiting for a decision: nobody can write yet.
    status: recovery?.kind === 'paused-at-target' ? 'warning' : 'ok',
    summary: `PostgreSQL ${f.version}${role} at ${server.endpoint}`,
    hint: recovery?.kind === 'paused-at-target' ? recovery.hint : undefined,
  });
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
      hint: `enable it with ${pgrunbookCommand('--procedure wal-archiving')} (archive_mode needs a restart); pass --skip wal if you rely on dumps only`,
    });
  } else if (f.inRecovery && f.archiveMode !== 'always') {
    checks.push(unknownCheck('wal_archiver', 'server', 'WAL archiver', recovery!.archiverWords));
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
    checks.push(unknownCheck('wal_archive_lag', 'server', 'WAL archive lag', recovery?.lagWords ?? 'the server reports no current WAL position'));
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

export interface RecoveryState {
  kind: 'paused-at-target' | 'paused' | 'recovering-to-target' | 'standby';
  /** For the server line: "recovery paused at its target (time ...): promote or run pitr again". */
  words: string;
  archiverWords: string;
  lagWords: string;
  hint?: string;
}

/**
 * What a server in recovery is doing, in the operator's words. A recovery with a target that has
 * paused is a PITR waiting for a decision, not a standby whose primary archives the WAL.
 */
export function recoveryState(f: ServerSnapshot['facts'] & object): RecoveryState | undefined {
  if (!f.inRecovery) return undefined;
  const r = f.recovery;
  const at = r?.replayTime ? `, last replayed commit ${r.replayTime.toISOString()}` : '';
  if (r?.paused && r.target && !r.streaming) {
    return {
      kind: 'paused-at-target',
      words: `recovery paused at its target (${r.target}${at}): promote or run pitr again`,
      archiverWords: 'recovery is paused at its target: nothing is written or archived until it is promoted',
      lagWords: 'recovery is paused at its target: there is no WAL to archive until it is promoted',
      hint: `check the data (read-only queries work), then ${pgrunbookCommand('--procedure promote')}; or run ${pgrunbookCommand('--procedure pitr')} again with another target`,
    };
  }
  if (r?.paused) {
    return {
      kind: 'paused',
      words: `in recovery, replay paused${at}: resume it (SELECT pg_wal_replay_resume()) or promote`,
      archiverWords: 'replay is paused: this server archives nothing while in recovery',
      lagWords: 'replay is paused: there is no WAL to archive while in recovery',
    };
  }
  if (r?.target && !r.streaming) {
    return {
      kind: 'recovering-to-target',
      words: `recovering to its target (${r.target}${at})`,
      archiverWords: 'the server is replaying towards its recovery target: nothing is archived until it is promoted',
      lagWords: 'the server is replaying towards its recovery target: there is no WAL to archive yet',
    };
  }
  return {
    kind: 'standby',
    words: 'standby',
    archiverWords: 'the server is a standby: its primary archives the WAL; point --host at the primary',
    lagWords: 'the server is a standby: measure the lag on the primary',
  };
}
