// Backups judged by age and size: the newest complete base backup, or each database's newest
// dump, against the age thresholds and the median size of the ones before it.
import type { BaseBackupEntry, DumpEntry } from '../repo/catalog.js';
import type { BackupMeasurement, CheckKind, StatusCheck, StatusThresholds } from './types.js';
import { formatAge, formatBytesShort, formatRatio } from './format-units.js';
import { gradeAbove, gradeDeviation, median, sizeCriticalShrink } from './grade.js';
import { pgrunbookCommand } from '../engine/command-name.js';

/** How many earlier backups the size of the newest one is compared with. */
export const SIZE_HISTORY = 10;

/** A backup id like 20261124T031500Z (or with a suffix) to its time. */
function timeFromId(id: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(id);
  return m ? Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) : NaN;
}

function parseTime(text: unknown): number {
  return typeof text === 'string' ? Date.parse(text) : NaN;
}

export function baseBackupTime(e: BaseBackupEntry): number {
  const t = parseTime(e.meta?.stopTime);
  return Number.isFinite(t) ? t : Number.isFinite(parseTime(e.meta?.startTime)) ? parseTime(e.meta?.startTime) : timeFromId(e.id);
}

export function dumpTime(e: DumpEntry): number {
  for (const t of [parseTime(e.meta?.stopTime), parseTime(e.meta?.startTime), timeFromId(e.id)]) if (Number.isFinite(t)) return t;
  return NaN;
}

function backupSize(e: { bytes: number; meta?: { size?: unknown } }): number {
  return typeof e.meta?.size === 'number' && e.meta.size >= 0 ? e.meta.size : e.bytes;
}

/** Newest first by time (entries with no readable time last), then by id. */
export function newestFirst<T extends { id: string }>(entries: T[], time: (e: T) => number): T[] {
  const key = (e: T) => (Number.isFinite(time(e)) ? time(e) : -Infinity);
  return [...entries].sort((a, b) => key(b) - key(a) || b.id.localeCompare(a.id));
}

export interface Judged {
  measurement: BackupMeasurement;
  age: StatusCheck;
  /** Absent when there is no complete backup to size. */
  size?: StatusCheck;
}

/** Age and size checks for one series of backups (base backups, or one database's dumps). */
export function judgeSeries<T extends BaseBackupEntry | DumpEntry>(
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
        ? `take one: ${pgrunbookCommand('--procedure backup-base')} (pass --skip base-backup if this repository holds no base backups)`
        : `take one: ${pgrunbookCommand(`--procedure backup-logical --databases ${database}`)} (or pass --skip dump)`;
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
          : `the ${kind === 'base_backup' ? 'base backup' : `dump of ${database}`} schedule is behind: check the backup job's log and run it now (${pgrunbookCommand(kind === 'base_backup' ? '--procedure backup-base' : `--procedure backup-logical --databases ${database}`)})`,
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
