// Timelines as recovery sees them: the path of a target timeline through its ancestors (from
// its .history file), which archived file holds each segment on that path, and where the
// path has holes. PostgreSQL reads a segment from the newest timeline on the path that began
// at or before it; the segment a timeline branched in exists on both, and the child's copy
// is the one that carries the path on.
import type { Catalog } from '../repo/catalog.js';
import { formatLsn, lsnOfSegno, parseWalFileName, segmentName, segnoOfLsn, type TimelineHistoryEntry } from '../repo/walnames.js';

export interface PathPart {
  timeline: number;
  /** First LSN on this timeline along the path (0 for the root). */
  begin: bigint;
  /** Where the next timeline branched off; undefined for the target timeline itself. */
  end?: bigint;
}

/** The ancestors of `target` and itself, oldest first. */
export function timelinePath(target: number, histories: Map<number, TimelineHistoryEntry[]>): PathPart[] {
  const out: PathPart[] = [];
  let begin = 0n;
  for (const e of histories.get(target) ?? []) {
    out.push({ timeline: e.timeline, begin, end: e.switchLsn });
    begin = e.switchLsn;
  }
  out.push({ timeline: target, begin });
  return out;
}

/** Is the point `lsn` of timeline `tli` on this path (so recovery along it passes there)? */
export function onPath(path: PathPart[], tli: number, lsn: bigint): boolean {
  return path.some((p) => p.timeline === tli && lsn >= p.begin && (p.end === undefined || lsn <= p.end));
}

/** Which segments of which timeline the archive holds, from the catalog's per-timeline runs and gaps. */
export class SegmentIndex {
  private readonly byTli = new Map<number, { first: bigint; last: bigint; gaps: [bigint, bigint][] }>();
  constructor(
    catalog: Catalog,
    readonly segmentSize: number,
  ) {
    for (const t of catalog.wal.timelines) {
      const seg = (name: string) => parseWalFileName(name, segmentSize)!.segno!;
      this.byTli.set(t.timeline, { first: seg(t.first), last: seg(t.last), gaps: t.gaps.map((g) => [seg(g.from), seg(g.to)]) });
    }
  }
  has(tli: number, segno: bigint): boolean {
    const t = this.byTli.get(tli);
    if (!t || segno < t.first || segno > t.last) return false;
    return !t.gaps.some(([a, b]) => segno >= a && segno <= b);
  }
  last(tli: number): bigint | undefined {
    return this.byTli.get(tli)?.last;
  }
  timelines(): number[] {
    return [...this.byTli.keys()];
  }
}

/** One segment to read on the way to a target. */
export interface PathSegment {
  timeline: number;
  segno: bigint;
  name: string;
  /** Records at or after this LSN in this file belong to an abandoned timeline: ignore them. */
  validBefore?: bigint;
}

export type PathStep = { kind: 'segment'; segment: PathSegment } | { kind: 'end'; reason: 'gap'; missing: string } | { kind: 'end'; reason: 'archive-end' };

/**
 * The file that carries the path at `segno`, or why there is none: the newest timeline on
 * the path that had begun by then; in the segment where a timeline began, its parent's copy
 * serves up to the branch point when the child's is not archived (yet).
 */
export function segmentOnPath(path: PathPart[], index: SegmentIndex, segno: bigint): PathStep {
  const ss = index.segmentSize;
  for (let i = path.length - 1; i >= 0; i--) {
    const part = path[i];
    const beginSeg = segnoOfLsn(part.begin, ss);
    if (beginSeg > segno) continue;
    if (part.end !== undefined && segnoOfLsn(part.end, ss) < segno) break; // past its branch point: not on the path
    if (index.has(part.timeline, segno)) return { kind: 'segment', segment: { timeline: part.timeline, segno, name: segmentName(part.timeline, segno, ss) } };
    // The branch segment, when the child's copy is missing: the parent's copy up to the branch.
    if (beginSeg === segno && i > 0 && index.has(path[i - 1].timeline, segno)) {
      return { kind: 'segment', segment: { timeline: path[i - 1].timeline, segno, name: segmentName(path[i - 1].timeline, segno, ss), validBefore: part.begin } };
    }
    // Missing here: is there anything later on the path? Then this is a gap, not the end.
    for (let j = path.length - 1; j >= i; j--) {
      const last = index.last(path[j].timeline);
      if (last !== undefined && last > segno && (path[j].end === undefined || segnoOfLsn(path[j].end!, ss) > segno)) {
        return { kind: 'end', reason: 'gap', missing: segmentName(part.timeline, segno, ss) };
      }
    }
    return { kind: 'end', reason: 'archive-end' };
  }
  return { kind: 'end', reason: 'archive-end' };
}

/** The newest timeline the archive knows of (segments or a .history file). */
export function newestTimeline(index: SegmentIndex, histories: Map<number, TimelineHistoryEntry[]>): number {
  return Math.max(1, ...index.timelines(), ...histories.keys());
}

export function describePath(path: PathPart[]): string {
  return path.map((p) => (p.end === undefined ? `timeline ${p.timeline}` : `timeline ${p.timeline} until ${formatLsn(p.end)}`)).join(', then ');
}

export function lsnOfSegment(segno: bigint, segmentSize: number): bigint {
  return lsnOfSegno(segno, segmentSize);
}
