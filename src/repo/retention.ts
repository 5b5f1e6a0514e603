// Retention planning, pure: given a repository's catalog and a policy, which base backups,
// dumps and WAL files may go, and why. Nothing here reads or deletes anything; the retention
// procedure feeds it the catalog and the WAL listing and carries out what it decides.
//
// The WAL rule, stated once: with K the kept complete base backups, a WAL file may go only
// when its segment number is below the smallest start segment of any K AND its timeline is
// not newer than the oldest timeline of any K. A backup needs its start segment onward on its
// own timeline and the timelines after it, so nothing a kept backup needs is ever below that
// line. History files are always kept (recovery reads them to follow timelines); with no
// complete base backup, or one whose backup.json cannot be read, no WAL goes at all.
import type { BaseBackupEntry, BaseBackupMeta, Catalog, DumpEntry, DumpMeta, RecoveryWindow } from './catalog.js';
import { baseBackupPrefix, dumpPrefix } from './layout.js';
import { parseLsn, segmentName, segnoOfLsn } from './walnames.js';
import { cutoffOf, type WalRule } from './retention-wal.js';

export * from './retention-wal.js';

export interface RetentionPolicy {
  /** Complete base backups to keep, newest first (at least 1: the newest is never deleted). */
  keepBaseBackups: number;
  /** Complete dumps younger than this many days are kept; the newest of each database always is. */
  keepDumpDays: number;
  /** Incomplete backups (no metadata file) last written longer ago than this are debris of failed runs. */
  incompleteGraceHours: number;
}

export const DEFAULT_RETENTION_POLICY: RetentionPolicy = { keepBaseBackups: 7, keepDumpDays: 7, incompleteGraceHours: 24 };

export interface RetentionInput {
  policy: RetentionPolicy;
  /** Ages of dumps and incomplete backups are measured from here. */
  now: Date;
  /** The real clock. Incomplete backups must be past the grace period by both `now` and this,
   *  so an injected future `now` can never make a running backup look abandoned. */
  clock?: Date;
  /** When each incomplete backup was last written to (its newest object's lastModified, ISO),
   *  keyed by its prefix: `basebackups/<id>/` or `dumps/<db>/<id>/`. Unknown: kept. */
  lastWrite?: Record<string, string>;
}

export interface BaseBackupDecision {
  id: string;
  complete: boolean;
  objects: number;
  bytes: number;
  /** When it finished (complete backups), or was last written to (incomplete ones). */
  time?: string;
  reason: string;
}

export interface DumpDecision extends BaseBackupDecision {
  database: string;
}

export interface RetentionPlan {
  now: string;
  policy: RetentionPolicy;
  expire: { baseBackups: BaseBackupDecision[]; dumps: DumpDecision[] };
  keep: { baseBackups: BaseBackupDecision[]; dumps: DumpDecision[] };
  wal: { rule?: WalRule; keepAllReason?: string };
  warnings: string[];
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** A backup id made by backupId(): 20261124T031500Z[-suffix]. */
function idTime(id: string): number | undefined {
  const m = /^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z/.exec(id);
  if (!m) return undefined;
  const t = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
  return Number.isNaN(t) ? undefined : t;
}

function parseTime(text: unknown): number | undefined {
  if (typeof text !== 'string' || !text) return undefined;
  const t = Date.parse(text);
  return Number.isNaN(t) ? undefined : t;
}

/** When a backup or dump finished: its stop time, else its start time, else its id's stamp. */
function finishedAt(meta: { stopTime?: unknown; startTime?: unknown } | undefined, id: string): number | undefined {
  return parseTime(meta?.stopTime) ?? parseTime(meta?.startTime) ?? idTime(id);
}

function iso(t: number | undefined): string | undefined {
  return t === undefined ? undefined : new Date(t).toISOString();
}

function ageText(ms: number): string {
  if (ms >= 2 * DAY) return `${(ms / DAY).toFixed(1)} days`;
  if (ms >= 2 * HOUR) return `${(ms / HOUR).toFixed(1)} hours`;
  return `${Math.max(0, Math.round(ms / 60_000))} minutes`;
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

export { baseBackupPrefix, dumpPrefix } from './layout.js';

/** Newest first; backups without a readable time sort last (treated as oldest). */
function newestFirst<T extends { id: string }>(items: T[], time: (x: T) => number | undefined): T[] {
  return [...items].sort((a, b) => (time(b) ?? -Infinity) - (time(a) ?? -Infinity) || b.id.localeCompare(a.id));
}

export function planRetention(catalog: Catalog, input: RetentionInput): RetentionPlan {
  const { policy } = input;
  if (!Number.isInteger(policy.keepBaseBackups) || policy.keepBaseBackups < 1) {
    throw new Error(`keep-base-backups must be a whole number of at least 1 (the newest complete base backup is never deleted), got ${policy.keepBaseBackups}`);
  }
  if (!(policy.keepDumpDays >= 0)) throw new Error(`keep-dump-days must be 0 or more, got ${policy.keepDumpDays}`);
  if (!(policy.incompleteGraceHours > 0)) throw new Error(`the incomplete-backup grace period must be more than 0 hours, got ${policy.incompleteGraceHours}`);
  const now = input.now.getTime();
  // Debris age by the earlier of the two clocks: never call a running backup abandoned.
  const debrisNow = Math.min(now, (input.clock ?? input.now).getTime());
  const lastWrite = input.lastWrite ?? {};
  const plan: RetentionPlan = {
    now: input.now.toISOString(),
    policy: { ...policy },
    expire: { baseBackups: [], dumps: [] },
    keep: { baseBackups: [], dumps: [] },
    wal: {},
    warnings: [],
  };

  const incomplete = (prefix: string, what: string, problem: string | undefined): { expire: boolean; time?: string; reason: string } => {
    if (problem) {
      plan.warnings.push(`${what}: ${problem}; left alone, look at it by hand`);
      return { expire: false, reason: `its metadata exists but could not be read (${problem}); never deleted automatically` };
    }
    const written = parseTime(lastWrite[prefix]);
    if (written === undefined) return { expire: false, reason: 'incomplete, and when it was last written is unknown: it may still be in progress' };
    const age = debrisNow - written;
    if (age >= policy.incompleteGraceHours * HOUR) {
      return { expire: true, time: iso(written), reason: `incomplete (no metadata file): debris of a failed run, last written ${iso(written)} (${ageText(age)} ago, grace ${policy.incompleteGraceHours} h)` };
    }
    return { expire: false, time: iso(written), reason: `incomplete, last written ${ageText(age)} ago (within the ${policy.incompleteGraceHours} h grace): it may still be in progress` };
  };

  // Base backups: the N newest complete ones stay.
  const complete = newestFirst(
    catalog.baseBackups.filter((b): b is BaseBackupEntry & { meta: BaseBackupMeta } => b.complete && Boolean(b.meta)),
    (b) => finishedAt(b.meta, b.id),
  );
  const kept = complete.slice(0, policy.keepBaseBackups);
  const keptIds = kept.map((b) => b.id);
  complete.forEach((b, i) => {
    const d: BaseBackupDecision = { id: b.id, complete: true, objects: b.objects, bytes: b.bytes, time: iso(finishedAt(b.meta, b.id)), reason: '' };
    if (i === 0) {
      d.reason = 'the newest complete base backup (never deleted)';
      plan.keep.baseBackups.push(d);
    } else if (i < policy.keepBaseBackups) {
      d.reason = `one of the ${plural(policy.keepBaseBackups, 'newest complete base backup')} kept`;
      plan.keep.baseBackups.push(d);
    } else {
      d.reason = `older than the ${plural(policy.keepBaseBackups, 'newest complete base backup')} kept (${keptIds.join(', ')})`;
      plan.expire.baseBackups.push(d);
    }
  });
  for (const b of catalog.baseBackups) {
    if (b.complete && b.meta) continue;
    const r = incomplete(baseBackupPrefix(b.id), `base backup ${b.id}`, b.problem);
    const d: BaseBackupDecision = { id: b.id, complete: false, objects: b.objects, bytes: b.bytes, time: r.time, reason: r.reason };
    (r.expire ? plan.expire.baseBackups : plan.keep.baseBackups).push(d);
  }

  // Dumps: per database, those younger than N days, and always the newest complete one.
  const byDb = new Map<string, (DumpEntry & { meta: DumpMeta })[]>();
  for (const d of catalog.dumps) {
    if (!d.complete || !d.meta) continue;
    let list = byDb.get(d.database);
    if (!list) byDb.set(d.database, (list = []));
    list.push(d as DumpEntry & { meta: DumpMeta });
  }
  for (const [database, list] of [...byDb].sort((a, b) => a[0].localeCompare(b[0]))) {
    newestFirst(list, (d) => finishedAt(d.meta, d.id)).forEach((d, i) => {
      const t = finishedAt(d.meta, d.id);
      const decision: DumpDecision = { database, id: d.id, complete: true, objects: d.objects, bytes: d.bytes, time: iso(t), reason: '' };
      if (i === 0) {
        decision.reason = `the newest complete dump of ${database} (never deleted)`;
        plan.keep.dumps.push(decision);
      } else if (t === undefined) {
        decision.reason = 'its dump.json has no readable time, so its age is unknown; kept';
        plan.warnings.push(`dump ${database}/${d.id}: no readable startTime/stopTime in dump.json; kept`);
        plan.keep.dumps.push(decision);
      } else if (now - t > policy.keepDumpDays * DAY) {
        decision.reason = `${ageText(now - t)} old, older than ${plural(policy.keepDumpDays, 'day')}`;
        plan.expire.dumps.push(decision);
      } else {
        decision.reason = `${ageText(Math.max(0, now - t))} old, within ${plural(policy.keepDumpDays, 'day')}`;
        plan.keep.dumps.push(decision);
      }
    });
  }
  for (const d of catalog.dumps) {
    if (d.complete && d.meta) continue;
    const r = incomplete(dumpPrefix(d.database, d.id), `dump ${d.database}/${d.id}`, d.problem);
    const decision: DumpDecision = { database: d.database, id: d.id, complete: false, objects: d.objects, bytes: d.bytes, time: r.time, reason: r.reason };
    (r.expire ? plan.expire.dumps : plan.keep.dumps).push(decision);
  }

  plan.wal = walRuleFor(catalog, kept);
  for (const w of catalog.windows) {
    if (keptIds.includes(w.backupId) && w.unusable) plan.warnings.push(`kept base backup ${w.backupId} cannot be restored: ${w.unusable}`);
  }
  assertPlanSafe(plan, catalog);
  return plan;
}

function walRuleFor(catalog: Catalog, kept: (BaseBackupEntry & { meta: BaseBackupMeta })[]): RetentionPlan['wal'] {
  if (kept.length === 0) return { keepAllReason: 'no complete base backup in the repository: every WAL file is kept' };
  const unreadable = catalog.baseBackups.find((b) => b.problem);
  if (unreadable) {
    return { keepAllReason: `base backup ${unreadable.id}'s metadata cannot be read (${unreadable.problem}), so the WAL it needs is unknown: every WAL file is kept` };
  }
  let oldest: { id: string; segno: bigint; timeline: number } | undefined;
  let maxTimeline = Infinity;
  for (const b of kept) {
    let segno: bigint;
    try {
      segno = segnoOfLsn(parseLsn(String(b.meta.startLsn)), catalog.segmentSize);
    } catch {
      return { keepAllReason: `kept base backup ${b.id} has no valid startLsn in backup.json (${JSON.stringify(b.meta.startLsn)}): every WAL file is kept` };
    }
    const timeline = Number(b.meta.timeline);
    if (!Number.isInteger(timeline) || timeline < 1) {
      return { keepAllReason: `kept base backup ${b.id} has no valid timeline in backup.json (${JSON.stringify(b.meta.timeline)}): every WAL file is kept` };
    }
    if (!oldest || segno < oldest.segno) oldest = { id: b.id, segno, timeline };
    maxTimeline = Math.min(maxTimeline, timeline);
  }
  return {
    rule: {
      beforeSegment: segmentName(oldest!.timeline, oldest!.segno, catalog.segmentSize),
      maxTimeline,
      oldestKeptBackup: oldest!.id,
      segmentSize: catalog.segmentSize,
    },
  };
}

export function narrowPlan(confirmed: RetentionPlan, current: RetentionPlan): { plan: RetentionPlan; dropped: string[] } {
  const dropped: string[] = [];
  const currentBackups = new Map(current.expire.baseBackups.map((b) => [b.id, b]));
  const keptBackups = new Map(current.keep.baseBackups.map((b) => [b.id, b]));
  const baseBackups = confirmed.expire.baseBackups.filter((b) => {
    if (currentBackups.has(b.id)) return true;
    const k = keptBackups.get(b.id);
    dropped.push(`base backup ${b.id}: ${k ? `now kept: ${k.reason}` : 'already gone'}`);
    return false;
  });
  const dumpKey = (d: { database: string; id: string }) => `${d.database}/${d.id}`;
  const currentDumps = new Map(current.expire.dumps.map((d) => [dumpKey(d), d]));
  const keptDumps = new Map(current.keep.dumps.map((d) => [dumpKey(d), d]));
  const dumps = confirmed.expire.dumps.filter((d) => {
    if (currentDumps.has(dumpKey(d))) return true;
    const k = keptDumps.get(dumpKey(d));
    dropped.push(`dump ${dumpKey(d)}: ${k ? `now kept: ${k.reason}` : 'already gone'}`);
    return false;
  });
  let wal: RetentionPlan['wal'];
  const a = confirmed.wal.rule;
  const b = current.wal.rule;
  if (!a || !b) {
    wal = { keepAllReason: current.wal.keepAllReason ?? confirmed.wal.keepAllReason ?? 'no WAL rule' };
    if (a) dropped.push(`WAL: ${wal.keepAllReason}`);
  } else {
    const ca = cutoffOf(a);
    const cb = cutoffOf(b);
    const lower = cb < ca ? b : a;
    wal = { rule: { ...lower, maxTimeline: Math.min(a.maxTimeline, b.maxTimeline) } };
    if (cb < ca) dropped.push(`WAL: the line moved back to ${b.beforeSegment} (start of ${b.oldestKeptBackup})`);
  }
  return {
    plan: { ...confirmed, expire: { baseBackups, dumps }, wal, warnings: [...current.warnings] },
    dropped,
  };
}

/** The invariants no policy may break; a violation is a bug, and stops the run before any delete. */
export function assertPlanSafe(plan: RetentionPlan, catalog: Catalog): void {
  const complete = newestFirst(
    catalog.baseBackups.filter((b) => b.complete && b.meta),
    (b) => finishedAt(b.meta, b.id),
  );
  const newest = complete[0];
  if (newest && plan.expire.baseBackups.some((b) => b.id === newest.id)) {
    throw new Error(`internal error: the retention plan would delete the newest complete base backup ${newest.id}; nothing was deleted`);
  }
  for (const b of plan.expire.baseBackups) {
    const entry = catalog.baseBackups.find((e) => e.id === b.id);
    if (entry?.problem) throw new Error(`internal error: the retention plan would delete base backup ${b.id}, whose metadata could not be read; nothing was deleted`);
  }
  const dbs = new Set(catalog.dumps.map((d) => d.database));
  for (const db of dbs) {
    const newestDump = newestFirst(
      catalog.dumps.filter((d) => d.database === db && d.complete && d.meta),
      (d) => finishedAt(d.meta, d.id),
    )[0];
    if (newestDump && plan.expire.dumps.some((d) => d.database === db && d.id === newestDump.id)) {
      throw new Error(`internal error: the retention plan would delete the newest complete dump of ${db} (${newestDump.id}); nothing was deleted`);
    }
  }
  const rule = plan.wal.rule;
  if (rule) {
    const cutoff = cutoffOf(rule);
    for (const b of complete) {
      if (plan.expire.baseBackups.some((e) => e.id === b.id)) continue;
      const start = segnoOfLsn(parseLsn(String(b.meta!.startLsn)), rule.segmentSize);
      if (start < cutoff && Number(b.meta!.timeline) <= rule.maxTimeline) {
        throw new Error(`internal error: the retention plan would delete WAL that kept base backup ${b.id} needs; nothing was deleted`);
      }
    }
  }
}

/** Compare a kept backup's recovery window after retention with before: it may grow, never shrink. */
export function compareWindows(before: RecoveryWindow, after: RecoveryWindow | undefined): { ok: boolean; detail: string } {
  if (!after) return { ok: false, detail: `base backup ${before.backupId} no longer has a recovery window (is it still complete?)` };
  if (after.fromLsn !== before.fromLsn) return { ok: false, detail: `starts at ${after.fromLsn}, was ${before.fromLsn}` };
  if (after.unusable && !before.unusable) return { ok: false, detail: `now unusable: ${after.unusable}` };
  if (before.unusable) return { ok: true, detail: `unusable before and after (${before.unusable}); retention did not change that` };
  const was = parseLsn(before.toLsn);
  const now = parseLsn(after.toLsn);
  if (now < was) {
    return { ok: false, detail: `now ends at ${after.toLsn}, was ${before.toLsn}${after.endedByGap ? ` (gap at ${after.endedByGap.from})` : ''}` };
  }
  const prefixSame = before.timelines.every((t, i) => after.timelines[i] === t);
  if (!prefixSame) return { ok: false, detail: `runs through timelines ${after.timelines.join(' -> ')}, was ${before.timelines.join(' -> ')}` };
  return {
    ok: true,
    detail: now === was ? `${after.fromLsn} .. ${after.toLsn}, unchanged` : `${after.fromLsn} .. ${after.toLsn} (was .. ${before.toLsn}; extended by WAL archived meanwhile)`,
  };
}

/** Totals of what a plan deletes, for the confirmation. */
export function planTotals(plan: RetentionPlan, wal: { files: number; bytes: number }): {
  baseBackups: number;
  incompleteBaseBackups: number;
  dumps: number;
  walFiles: number;
  objects: number;
  bytes: number;
} {
  const bb = plan.expire.baseBackups;
  const dd = plan.expire.dumps;
  return {
    baseBackups: bb.length,
    incompleteBaseBackups: bb.filter((b) => !b.complete).length,
    dumps: dd.length,
    walFiles: wal.files,
    objects: bb.reduce((s, b) => s + b.objects, 0) + dd.reduce((s, d) => s + d.objects, 0) + wal.files,
    bytes: bb.reduce((s, b) => s + b.bytes, 0) + dd.reduce((s, d) => s + d.bytes, 0) + wal.bytes,
  };
}
