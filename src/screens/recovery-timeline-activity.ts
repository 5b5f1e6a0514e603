// What happened in the WAL, on the picker's axis: one row per timeline with its commits per
// minute as a sparkline, a row of named restore points, and the commits a cursor steps
// through (the path of one timeline: its ancestors' commits up to each branch point, then
// its own). Pure: data from the recovery-timeline service in, strings and lists out.
import type { ActivityCommit, ActivityRestorePoint, WalActivity } from '../services/recovery-timeline.js';
import { parseLsn } from '../repo/walnames.js';
import { columnMs, columnOf, type TimelineModel } from './recovery-timeline.js';

/** Zero (inside the timeline's commits) is ·, then eight heights. */
export const SPARK = '▁▂▃▄▅▆▇█';
export const NO_COMMITS = '·';
export const RESTORE_POINT = 'R';

export interface TimelineActivityRow {
  timeline: number;
  /** `width` characters: the sparkline between the timeline's first and last commit, blank outside. */
  row: string;
  commits: number;
  /** Where it branched off its parent, when it did. */
  branchedFrom?: { timeline: number; lsn: string };
}

export interface ActivityLayout {
  rows: TimelineActivityRow[];
  /** R at each restore point's column; empty when there are none. */
  points: string;
  /** The highest rate drawn as █, commits per minute. */
  peakPerMinute: number;
}

export function layoutActivity(model: TimelineModel, activity: WalActivity, width: number): ActivityLayout {
  const w = Math.max(10, width);
  const minutesPerColumn = Math.max(1 / 60, columnMs(model, w) / 60_000);
  const timelines = [...new Set([...model.timelines.map((t) => t.timeline), ...activity.commits.map((c) => c.timeline)])].sort((a, b) => a - b);
  const counts = new Map<number, number[]>();
  for (const tl of timelines) counts.set(tl, Array(w).fill(0));
  for (const c of activity.commits) {
    if (c.aborted) continue;
    counts.get(c.timeline)![columnOf(model, c.ms, w)]++;
  }
  const peak = Math.max(0, ...[...counts.values()].flat()) / minutesPerColumn;
  const rows = timelines.map((tl): TimelineActivityRow => {
    const own = activity.commits.filter((c) => c.timeline === tl && !c.aborted);
    const row: string[] = Array(w).fill(' ');
    if (own.length) {
      const first = columnOf(model, own[0].ms, w);
      const last = columnOf(model, own[own.length - 1].ms, w);
      const cs = counts.get(tl)!;
      for (let col = first; col <= last; col++) {
        const rate = cs[col] / minutesPerColumn;
        row[col] = cs[col] === 0 ? NO_COMMITS : SPARK[Math.max(0, Math.min(SPARK.length - 1, Math.ceil((rate / peak) * SPARK.length) - 1))];
      }
    }
    const parent = model.timelines.find((t) => t.timeline === tl)?.history?.at(-1);
    return { timeline: tl, row: row.join(''), commits: own.length, branchedFrom: parent ? { timeline: parent.timeline, lsn: parent.switchLsn } : undefined };
  });
  const points: string[] = Array(w).fill(' ');
  for (const p of activity.restorePoints) if (p.ms !== undefined) points[columnOf(model, p.ms, w)] = RESTORE_POINT;
  return { rows, points: points.join('').trim() ? points.join('') : '', peakPerMinute: Math.round(peak * 10) / 10 };
}

/** The newest timeline: what recovery follows by default. */
export function newestTimeline(model: TimelineModel, activity?: WalActivity): number | undefined {
  const all = [...model.timelines.map((t) => t.timeline), ...(activity?.commits.map((c) => c.timeline) ?? [])];
  return all.length ? Math.max(...all) : undefined;
}

/**
 * The commits recovery along `timeline` replays, oldest first: each ancestor's up to where the
 * next timeline branched off it, then the timeline's own. Aborted transactions are left out
 * (there is nothing to stop before).
 */
export function commitPath(model: TimelineModel, activity: WalActivity, timeline: number): ActivityCommit[] {
  const history = model.timelines.find((t) => t.timeline === timeline)?.history ?? [];
  const out: ActivityCommit[] = [];
  let from = 0n;
  for (const h of history) {
    const until = parseLsn(h.switchLsn);
    out.push(...activity.commits.filter((c) => c.timeline === h.timeline && !c.aborted && parseLsn(c.lsn) >= from && parseLsn(c.lsn) < until));
    from = until;
  }
  out.push(...activity.commits.filter((c) => c.timeline === timeline && !c.aborted && parseLsn(c.lsn) >= from));
  return out;
}

/** Restore points along a timeline's path, as commitPath chooses commits. */
export function restorePointsOn(model: TimelineModel, activity: WalActivity, timeline: number): ActivityRestorePoint[] {
  const history = model.timelines.find((t) => t.timeline === timeline)?.history ?? [];
  const on = new Set([...history.map((h) => h.timeline), timeline]);
  return activity.restorePoints.filter((p) => on.has(p.timeline));
}

/** "just before xid 1234 (commit at 2026-11-24 03:14:00.123456Z)" */
export function describeCommitTarget(c: ActivityCommit): string {
  return `just before xid ${c.xid} (commit at ${c.time.replace('T', ' ')})`;
}
