// Recovery targets: parsing what an operator types, choosing the base backup for it, and
// proving it lies inside a recovery window before anything is stopped.
import type { BaseBackupMeta, Catalog, RecoveryWindow } from '../repo/catalog.js';
import { formatLsn, parseLsn } from '../repo/walnames.js';

export type RecoveryTarget =
  | { kind: 'latest' }
  | { kind: 'time'; time: Date; text: string; /** Microseconds since the epoch, UTC: what PostgreSQL compares commit times with. */ micros: bigint }
  | { kind: 'lsn'; lsn: bigint; text: string }
  | { kind: 'xid'; xid: string }
  | { kind: 'name'; name: string };

export const TARGET_FORMS = 'latest, an ISO 8601 time with a zone (2026-11-24T03:14:00Z or 2026-11-24T04:14:00+01:00), lsn:0/3000060, xid:1234 or name:LABEL';

export function parseTarget(text: string): RecoveryTarget | { error: string } {
  const t = text.trim();
  if (t === 'latest') return { kind: 'latest' };
  if (t.startsWith('lsn:')) {
    try {
      return { kind: 'lsn', lsn: parseLsn(t.slice(4)), text: t.slice(4) };
    } catch {
      return { error: `--target ${t}: "${t.slice(4)}" is not an LSN (expected e.g. lsn:0/3000060)` };
    }
  }
  if (t.startsWith('xid:')) {
    if (!/^\d+$/.test(t.slice(4))) return { error: `--target ${t}: a transaction id is a whole number (e.g. xid:1234)` };
    return { kind: 'xid', xid: t.slice(4) };
  }
  if (t.startsWith('name:')) {
    if (!t.slice(5)) return { error: `--target name: needs the restore point's name (e.g. name:before-migration)` };
    return { kind: 'name', name: t.slice(5) };
  }
  if (/^\d{4}-\d\d-\d\d[T ]\d\d:\d\d/.test(t)) {
    if (!/(Z|[+-]\d\d(:?\d\d)?)$/i.test(t)) {
      return { error: `--target ${t}: add a time zone, so there is no doubt which moment you mean (e.g. ${t}Z or ${t}+01:00)` };
    }
    const micros = parseTimeMicros(t);
    if (typeof micros !== 'bigint') return { error: `--target ${t}: ${micros.error}` };
    return { kind: 'time', time: new Date(Number(micros / 1000n)), text: t, micros };
  }
  return { error: `--target "${t}" is not a recovery target; use ${TARGET_FORMS}` };
}

const TIME_RE = /^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d+))?)?\s*(Z|[+-]\d\d(?::?\d\d)?)$/i;

/**
 * An ISO 8601 time with a zone as microseconds since the epoch, exactly: a JavaScript Date
 * keeps only milliseconds, and PostgreSQL's commit times have microseconds. Impossible dates
 * (February 30th) are refused rather than rolled over.
 */
/** A target already validated (the procedure's validate ran): parsed again, an error now is a bug's, thrown. */
export function validTarget(text: string): RecoveryTarget {
  const t = parseTarget(text);
  if ('error' in t) throw new Error(t.error);
  return t;
}

export function parseTimeMicros(text: string): bigint | { error: string } {
  const m = TIME_RE.exec(text.trim());
  if (!m) return { error: 'not a valid time (expected e.g. 2026-11-24T03:14:00.123456Z)' };
  const [, y, mo, d, h, mi, s = '0', frac = '', zone] = m;
  if (frac.length > 6) return { error: 'PostgreSQL keeps times to the microsecond: give at most 6 digits after the second' };
  const [Y, M, D, H, MI, S] = [y, mo, d, h, mi, s].map(Number);
  const ms = Date.UTC(Y, M - 1, D, H, MI, S);
  const check = new Date(ms);
  if (check.getUTCFullYear() !== Y || check.getUTCMonth() !== M - 1 || check.getUTCDate() !== D || H > 23 || MI > 59 || S > 59) {
    return { error: `not a valid time (there is no ${y}-${mo}-${d} ${h}:${mi}:${s.padStart(2, '0')})` };
  }
  let offsetMin = 0;
  if (zone.toUpperCase() !== 'Z') {
    const z = /^([+-])(\d\d):?(\d\d)?$/.exec(zone)!;
    offsetMin = (z[1] === '-' ? -1 : 1) * (Number(z[2]) * 60 + Number(z[3] ?? 0));
  }
  return BigInt(ms) * 1000n + BigInt(frac.padEnd(6, '0') || '0') - BigInt(offsetMin) * 60_000_000n;
}

/** `2026-11-24T03:14:00.123456Z`: always six digits, so two times compare as they read. */
export function formatMicrosIso(micros: bigint): string {
  const ms = Number(micros / 1000n);
  const frac = ((micros % 1_000_000n) + 1_000_000n) % 1_000_000n;
  return new Date(ms).toISOString().replace(/\.\d+Z$/, `.${frac.toString().padStart(6, '0')}Z`);
}

/** What recovery_target_time wants: `2026-11-24 03:14:00.123456+00`. */
export function formatMicrosForPostgres(micros: bigint): string {
  return formatMicrosIso(micros).replace('T', ' ').replace('Z', '+00');
}

export function describeTarget(t: RecoveryTarget): string {
  switch (t.kind) {
    case 'latest':
      return 'the end of the archived WAL (latest)';
    case 'time':
      return `time ${formatMicrosIso(t.micros)}`;
    case 'lsn':
      return `LSN ${formatLsn(t.lsn)}`;
    case 'xid':
      return `transaction ${t.xid}`;
    case 'name':
      return `restore point "${t.name}"`;
  }
}

/** Where a target sits, once known: an LSN and/or a time. */
export interface TargetPosition {
  lsn?: bigint;
  time?: Date;
}

/** A usable window with what bounds it in time: the last commit in its WAL. */
export interface WindowBounds {
  window: RecoveryWindow;
  backup: BaseBackupMeta;
  /** Timestamp of the last commit found in the window's WAL (recovery to a time needs a commit after it). */
  lastCommitTime?: Date;
}

export function usableWindows(catalog: Catalog): { window: RecoveryWindow; backup: BaseBackupMeta }[] {
  const out: { window: RecoveryWindow; backup: BaseBackupMeta }[] = [];
  for (const w of catalog.windows) {
    if (w.unusable) continue;
    const backup = catalog.baseBackups.find((b) => b.id === w.backupId)?.meta;
    if (backup) out.push({ window: w, backup });
  }
  // Newest backup first: the shortest replay.
  return out.sort((a, b) => (parseLsn(b.backup.stopLsn) > parseLsn(a.backup.stopLsn) ? 1 : -1));
}

export function describeWindows(bounds: WindowBounds[]): string {
  if (!bounds.length) return 'there is no usable recovery window (no complete base backup with its WAL)';
  return bounds
    .map((b) => {
      const end = b.lastCommitTime ? `last commit ${b.lastCommitTime.toISOString()}` : `archived until ${b.window.toArchivedAt ?? '?'}`;
      const gap = b.window.endedByGap ? ` (then a gap: ${b.window.endedByGap.from} missing)` : '';
      return `from ${b.backup.stopTime} (${b.window.fromLsn}, end of backup ${b.backup.id}) to ${end} (${b.window.toLsn})${gap}`;
    })
    .join('; ');
}

export class TargetOutsideWindowError extends Error {
  readonly hint: string;
  constructor(message: string, windows: WindowBounds[]) {
    super(`${message}. Recovery windows: ${describeWindows(windows)}`);
    this.name = 'TargetOutsideWindowError';
    this.hint = 'pick a target inside a recovery window (pgrunbook catalog shows them), or restore the missing WAL into the repository first';
  }
}

/**
 * The newest base backup that ends before the target and whose gap-free WAL reaches it.
 * Throws, naming the windows, when none does.
 */
export function chooseBackup(target: RecoveryTarget, position: TargetPosition, windows: WindowBounds[]): WindowBounds {
  if (!windows.length) throw new TargetOutsideWindowError('nothing to restore from', windows);
  if (target.kind === 'latest') return windows[0];
  for (const w of windows) {
    const fromLsn = parseLsn(w.window.fromLsn);
    const toLsn = parseLsn(w.window.toLsn);
    const fromTime = new Date(w.backup.stopTime);
    if (position.lsn !== undefined) {
      if (position.lsn >= fromLsn && position.lsn <= toLsn) return w;
      continue;
    }
    if (position.time !== undefined) {
      // Replay to a time stops at the first commit after it: one must exist in the window.
      if (position.time > fromTime && w.lastCommitTime && position.time < w.lastCommitTime) return w;
    }
  }
  const where = position.lsn !== undefined ? `LSN ${formatLsn(position.lsn)}` : position.time ? position.time.toISOString() : describeTarget(target);
  const oldest = windows[windows.length - 1];
  const newest = windows[0];
  let why = 'is not inside any recovery window';
  if (position.time && position.time <= new Date(oldest.backup.stopTime)) why = 'is before the end of the oldest base backup';
  else if (position.time && newest.lastCommitTime && position.time >= newest.lastCommitTime) why = 'is after the last commit in the archived WAL (in the future, or WAL not archived yet)';
  else if (position.lsn !== undefined && position.lsn < parseLsn(oldest.window.fromLsn)) why = 'is before the end of the oldest base backup';
  else if (position.lsn !== undefined && position.lsn > parseLsn(newest.window.toLsn)) why = 'is beyond the archived WAL';
  if (windows.some((w) => w.window.endedByGap)) why += ' (a gap in the WAL archive cuts a window short)';
  throw new TargetOutsideWindowError(`target ${describeTarget(target)} (${where}) ${why}`, windows);
}
