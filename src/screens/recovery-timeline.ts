// The recovery timeline as plain data and text: what the repository's catalog can restore,
// laid out on a time axis one character per column (the rows: recovery-timeline-layout.ts),
// and a cursor moving along it. No Ink, no React, no I/O: the target picker draws these
// strings and feeds keys to these functions.
//
// The rule for "which backup, and is it inside a window" is chooseBackup's (restore/target.ts)
// applied to usableWindows(catalog), so the picker offers exactly what the pitr preflight
// accepts. One difference is stated on screen: until the last commit of a window has been
// read from the archived WAL, the window's end is when its last segment was archived (no
// commit can be later than that; the preflight may still find the last commit earlier).
import type { Catalog, WalGap, WalTimeline } from '../repo/catalog.js';
import { formatLsn, parseLsn } from '../repo/walnames.js';
import { windowEndSegment } from '../services/recovery-timeline.js';
import { chooseBackup, describeTarget, parseTarget, usableWindows, type RecoveryTarget, type WindowBounds } from '../restore/target.js';

export const MARK = {
  backup: 'B',
  unusableBackup: '!',
  covered: '━',
  gap: '╳',
  missing: '·',
  cursor: '▲',
} as const;

export interface TimelineWindow {
  backupId: string;
  /** The backup's stop time (ms): targets must be after it. */
  from: number;
  /** The window's end (ms): the last commit when read from the WAL, else when its last segment was archived. */
  to: number;
  /** `to` is the last commit read from the archived WAL (what the preflight uses). */
  toExact: boolean;
  fromLsn: string;
  toLsn: string;
  timeline: number;
  timelines: number[];
  /** The last segment of the window's gap-free WAL (the key for its last-commit time). */
  lastSegment?: string;
  endedByGap?: WalGap;
  /** What chooseBackup is given for this window. */
  bounds: WindowBounds;
}

export interface TimelineBackup {
  id: string;
  stopTime: number;
  stopLsn: string;
  timeline: number;
  usable: boolean;
  /** Why it opens no window. */
  problem?: string;
}

export interface TimelineModel {
  store: string;
  /** Usable windows, newest backup first (usableWindows' order). */
  windows: TimelineWindow[];
  /** Complete base backups, oldest first. */
  backups: TimelineBackup[];
  /** Base backups without their backup.json (never offered). */
  incomplete: number;
  gaps: WalGap[];
  timelines: WalTimeline[];
  walFiles: number;
  /** The axis, ms: every window and backup plus a little room either side. */
  start: number;
  end: number;
}

/**
 * The model the picker draws. `lastCommits` maps a window's last segment name to the time of
 * the last commit found in it (ISO), as read from the archived WAL.
 */
export function buildTimelineModel(catalog: Catalog, lastCommits: Record<string, string> = {}): TimelineModel {
  const windows: TimelineWindow[] = usableWindows(catalog).map(({ window, backup }) => {
    const from = Date.parse(backup.stopTime);
    const lastSegment = windowEndSegment(window);
    const exact = lastSegment ? lastCommits[lastSegment] : undefined;
    const approx = window.toArchivedAt ? Date.parse(window.toArchivedAt) : from;
    const to = exact !== undefined ? Date.parse(exact) : approx;
    const bounds: WindowBounds = { window, backup, lastCommitTime: to > from ? new Date(to) : undefined };
    return {
      backupId: backup.id,
      from,
      to: Math.max(from, to),
      toExact: exact !== undefined,
      fromLsn: window.fromLsn,
      toLsn: window.toLsn,
      timeline: window.timeline,
      timelines: window.timelines,
      lastSegment,
      endedByGap: window.endedByGap,
      bounds,
    };
  });
  const backups: TimelineBackup[] = catalog.baseBackups
    .filter((b) => b.complete && b.meta)
    .map((b) => {
      const w = catalog.windows.find((x) => x.backupId === b.id);
      return {
        id: b.id,
        stopTime: Date.parse(b.meta!.stopTime),
        stopLsn: b.meta!.stopLsn,
        timeline: b.meta!.timeline,
        usable: Boolean(w && !w.unusable),
        problem: w?.unusable,
      };
    })
    .filter((b) => Number.isFinite(b.stopTime))
    .sort((a, b) => a.stopTime - b.stopTime);

  const times = [...windows.flatMap((w) => [w.from, w.to]), ...backups.map((b) => b.stopTime)].filter(Number.isFinite);
  let start = times.length ? Math.min(...times) : Date.now();
  let end = times.length ? Math.max(...times) : start;
  const span = end - start;
  // Room either side, so "before the oldest backup" and "after the archive" have columns too.
  const pad = span > 0 ? Math.max(1000, span * 0.04) : 30 * 60_000;
  start -= pad;
  end += pad;
  return {
    store: catalog.store,
    windows,
    backups,
    incomplete: catalog.baseBackups.filter((b) => !b.complete).length,
    gaps: catalog.gaps,
    timelines: catalog.wal.timelines,
    walFiles: catalog.wal.files,
    start,
    end,
  };
}

// ---------------------------------------------------------------------------------------
// Axis geometry

/** ms between two columns of an axis `width` columns wide. */
export function columnMs(model: Pick<TimelineModel, 'start' | 'end'>, width: number): number {
  return (model.end - model.start) / Math.max(1, width - 1);
}

export function columnOf(model: Pick<TimelineModel, 'start' | 'end'>, t: number, width: number): number {
  const w = Math.max(1, width);
  if (model.end <= model.start) return 0;
  return Math.max(0, Math.min(w - 1, Math.round(((t - model.start) / (model.end - model.start)) * (w - 1))));
}

export function timeOfColumn(model: Pick<TimelineModel, 'start' | 'end'>, col: number, width: number): number {
  return model.start + col * columnMs(model, width);
}

/** Cursor times are whole seconds unless a column is shorter than two seconds. */
function quantum(model: TimelineModel, width: number): number {
  return columnMs(model, width) >= 2000 ? 1000 : 1;
}

function snap(model: TimelineModel, t: number, width: number): number {
  const q = quantum(model, width);
  return Math.max(model.start, Math.min(model.end, Math.round(t / q) * q));
}

export type CursorMove = 'left' | 'right' | 'bigLeft' | 'bigRight' | 'home' | 'end';

/** Columns a big step (Shift+arrow, PgUp/PgDn) moves. */
export const BIG_STEP = 10;

/** The earliest and latest times a time target can take: just after the oldest backup, just before the newest end. */
export function recoverableRange(model: TimelineModel, width: number): { first: number; last: number } | undefined {
  if (!model.windows.length) return undefined;
  const q = quantum(model, width);
  const spans = model.windows.filter((w) => w.to > w.from);
  if (!spans.length) return undefined;
  const first = Math.min(...spans.map((w) => w.from)) + q;
  const last = Math.max(...spans.map((w) => w.to)) - q;
  return first <= last ? { first, last } : undefined;
}

/** Where the cursor starts: the given time if there is one, else the latest recoverable time. */
export function initialCursor(model: TimelineModel, width: number, preferred?: number): number {
  if (preferred !== undefined && Number.isFinite(preferred)) return Math.max(model.start, Math.min(model.end, preferred));
  const range = recoverableRange(model, width);
  return range ? range.last : snap(model, model.end, width);
}

export function moveCursor(model: TimelineModel, cursor: number, width: number, move: CursorMove): number {
  const range = recoverableRange(model, width);
  switch (move) {
    case 'home':
      return range ? range.first : model.start;
    case 'end':
      return range ? range.last : model.end;
    default: {
      const cols = move === 'left' ? -1 : move === 'right' ? 1 : move === 'bigLeft' ? -BIG_STEP : BIG_STEP;
      const col = columnOf(model, cursor, width) + cols;
      const clamped = Math.max(0, Math.min(width - 1, col));
      let t = snap(model, timeOfColumn(model, clamped, width), width);
      // Land somewhere new even when rounding pulls back into the same column.
      if (t === cursor && clamped !== columnOf(model, cursor, width)) t = cursor + Math.sign(cols) * quantum(model, width);
      return Math.max(model.start, Math.min(model.end, t));
    }
  }
}

// ---------------------------------------------------------------------------------------
// Which backup a target uses, and why one is refused

export type Choice = { ok: true; window: TimelineWindow; note?: string } | { ok: false; reason: string };

/** "2026-11-24T03:14:00Z", with milliseconds only when there are some. */
export function isoTime(t: number): string {
  return new Date(t).toISOString().replace(/\.000Z$/, 'Z');
}

/** "2026-11-24 03:14:00Z" for labels. */
export function labelTime(t: number): string {
  return isoTime(t).replace('T', ' ');
}

/** "17:13:37Z → 17:13:47Z" on one day (the date is on the axis), full times across days. */
export function timeSpan(from: number, to: number): string {
  const a = labelTime(from);
  const b = labelTime(to);
  return a.slice(0, 10) === b.slice(0, 10) ? `${a.slice(11)} → ${b.slice(11)}` : `${a} → ${b}`;
}

function windowOf(model: TimelineModel, bounds: WindowBounds): TimelineWindow {
  return model.windows.find((w) => w.bounds === bounds)!;
}

function gapBefore(model: TimelineModel, t: number): WalGap | undefined {
  // The newest window that ends before t and was ended by a gap: t falls into that hole.
  const ended = model.windows.filter((w) => w.to <= t && w.endedByGap).sort((a, b) => b.to - a.to)[0];
  return ended?.endedByGap;
}

export function describeGap(gap: WalGap): string {
  return gap.missing > 1 ? `${gap.from}..${gap.to} (${gap.missing} segments) missing` : `${gap.from} missing`;
}

/** chooseBackup's answer for a time, with a short reason when it refuses. */
export function chooseForTime(model: TimelineModel, t: number): Choice {
  if (!model.windows.length) return { ok: false, reason: 'there is no usable recovery window (no complete base backup with its WAL)' };
  const time = new Date(t);
  const target: RecoveryTarget = { kind: 'time', time, text: time.toISOString(), micros: BigInt(t) * 1000n };
  try {
    const chosen = windowOf(model, chooseBackup(target, { time }, model.windows.map((w) => w.bounds)));
    return { ok: true, window: chosen, note: chosen.toExact ? undefined : 'the window ends when its last WAL segment was archived; the preflight checks that a commit follows the target' };
  } catch {
    const oldest = model.windows.reduce((a, b) => (b.from < a.from ? b : a));
    const newest = model.windows.reduce((a, b) => (b.to > a.to ? b : a));
    if (t <= oldest.from) return { ok: false, reason: `before the end of the oldest base backup (${oldest.backupId}, ended ${isoTime(oldest.from)})` };
    if (t >= newest.to) {
      return {
        ok: false,
        reason: newest.toExact
          ? `after the last commit in the archived WAL (${isoTime(newest.to)}): in the future, or its WAL is not archived yet`
          : `after the end of the archived WAL (last segment archived ${isoTime(newest.to)})`,
      };
    }
    const gap = gapBefore(model, t);
    // WAL after a gap is only usable from a base backup taken after it.
    if (gap) return { ok: false, reason: `in a gap of the WAL archive (timeline ${gap.timeline}: ${describeGap(gap)})` };
    return { ok: false, reason: 'not inside any recovery window' };
  }
}

/** chooseBackup's answer for an LSN. */
export function chooseForLsn(model: TimelineModel, lsn: bigint): Choice {
  if (!model.windows.length) return { ok: false, reason: 'there is no usable recovery window (no complete base backup with its WAL)' };
  const target: RecoveryTarget = { kind: 'lsn', lsn, text: formatLsn(lsn) };
  try {
    return { ok: true, window: windowOf(model, chooseBackup(target, { lsn }, model.windows.map((w) => w.bounds))) };
  } catch {
    const oldest = model.windows.reduce((a, b) => (parseLsn(b.fromLsn) < parseLsn(a.fromLsn) ? b : a));
    const newest = model.windows.reduce((a, b) => (parseLsn(b.toLsn) > parseLsn(a.toLsn) ? b : a));
    if (lsn < parseLsn(oldest.fromLsn)) return { ok: false, reason: `before the end of the oldest base backup (${oldest.backupId}, ${oldest.fromLsn})` };
    if (lsn > parseLsn(newest.toLsn)) return { ok: false, reason: `beyond the archived WAL (it ends at ${newest.toLsn})` };
    const gaps = model.windows.filter((w) => w.endedByGap && parseLsn(w.toLsn) <= lsn).map((w) => w.endedByGap!);
    if (gaps.length) return { ok: false, reason: `in a gap of the WAL archive (timeline ${gaps[0].timeline}: ${describeGap(gaps[0])})` };
    return { ok: false, reason: 'not inside any recovery window' };
  }
}

export type TargetCheck = { ok: true; target: string; summary: string; backupId?: string } | { ok: false; error: string };

/**
 * A typed target: valid syntax (parseTarget) and, when the catalog is known, inside a
 * window for the kinds the catalog can place (time, LSN, latest). xid and name targets are
 * found by the preflight step, which reads the archived WAL.
 */
export function checkTarget(model: TimelineModel | undefined, text: string): TargetCheck {
  const parsed = parseTarget(text);
  if ('error' in parsed) return { ok: false, error: parsed.error };
  const target = text.trim();
  if (!model) return { ok: true, target, summary: `${describeTarget(parsed)}; not checked against the catalog (it could not be read): the preflight step checks it` };
  switch (parsed.kind) {
    case 'latest': {
      if (!model.windows.length) return { ok: false, error: 'there is no usable recovery window (no complete base backup with its WAL)' };
      const w = model.windows[0];
      return { ok: true, target, backupId: w.backupId, summary: `replay all archived WAL (to ${w.toLsn}) from base backup ${w.backupId}` };
    }
    case 'time': {
      const c = chooseForTime(model, parsed.time.getTime());
      return c.ok ? { ok: true, target, backupId: c.window.backupId, summary: `${describeTarget(parsed)} from base backup ${c.window.backupId}` } : { ok: false, error: `${describeTarget(parsed)} is ${c.reason}` };
    }
    case 'lsn': {
      const c = chooseForLsn(model, parsed.lsn);
      return c.ok ? { ok: true, target, backupId: c.window.backupId, summary: `${describeTarget(parsed)} from base backup ${c.window.backupId}` } : { ok: false, error: `${describeTarget(parsed)} is ${c.reason}` };
    }
    case 'xid':
    case 'name':
      if (!model.windows.length) return { ok: false, error: 'there is no usable recovery window (no complete base backup with its WAL)' };
      return { ok: true, target, summary: `${describeTarget(parsed)}: the preflight step finds it in the archived WAL and picks the backup` };
  }
}

/** Where a target sits, for placing the cursor: a time target's time. */
export function targetTime(text: string): number | undefined {
  const parsed = parseTarget(text);
  return 'kind' in parsed && parsed.kind === 'time' ? parsed.time.getTime() : undefined;
}

/** One line per timeline: its segments, gaps and where it branched. */
export function describeTimelines(model: TimelineModel): string[] {
  return model.timelines.map((t) => {
    const parent = t.history?.at(-1);
    const branched = parent ? `, branched from ${parent.timeline} at ${parent.switchLsn}` : '';
    const gaps = t.gaps.length ? `, ${t.gaps.length} gap${t.gaps.length === 1 ? '' : 's'}` : '';
    return `timeline ${t.timeline}: ${t.segments} segments ${t.first}..${t.last.slice(-8)}${gaps}${branched}, last archived ${isoTime(Date.parse(t.lastArchivedAt))}`;
  });
}
