// The WAL side of retention, pure: the rule's verdict on one key under wal/, and the tallies the
// retention procedure keeps while it walks the WAL listing (what goes, what stays, and which
// stretches of WAL the kept base backups can still replay). The rule itself is drawn by
// planRetention (retention.ts).
import type { ListEntry } from '../storage/types.js';
import { parseWalKey } from './layout.js';
import { parseWalFileName, segmentName } from './walnames.js';

/** WAL below this line is needed by no kept base backup. JSON-safe (segment numbers as names). */
export interface WalRule {
  /** Files whose segment number is below this segment's number may go ... */
  beforeSegment: string;
  /** ... on this timeline and older ones. */
  maxTimeline: number;
  /** The kept base backup whose start segment draws the line. */
  oldestKeptBackup: string;
  segmentSize: number;
}

/** The rule's line as a segment number. */
export function cutoffOf(rule: WalRule): bigint {
  return parseWalFileName(rule.beforeSegment, rule.segmentSize)!.segno!;
}

export type WalVerdict =
  | { expire: true; timeline: number; segno: bigint; kind: 'segment' | 'backup-label' | 'partial' }
  | { expire: false; timeline?: number; segno?: bigint; kind?: 'segment' | 'backup-label' | 'partial' | 'history' };

/** Whether one key under wal/ falls below the rule's line. History files and unknown keys never do. */
export function walVerdict(key: string, rule: WalRule | undefined, segmentSize: number, cutoff = rule ? cutoffOf(rule) : undefined): WalVerdict {
  const parsed = parseWalKey(key);
  const name = parsed ? parseWalFileName(parsed.name, segmentSize) : undefined;
  if (!name) return { expire: false };
  if (name.kind === 'history') return { expire: false, timeline: name.timeline, kind: 'history' };
  const base = { timeline: name.timeline, segno: name.segno!, kind: name.kind };
  if (rule && cutoff !== undefined && name.timeline <= rule.maxTimeline && name.segno! < cutoff) return { expire: true, ...base };
  return { expire: false, ...base };
}

/** A stretch of consecutive segment numbers on one timeline, as WAL file names. */
export interface WalRun {
  timeline: number;
  from: string;
  to: string;
  files: number;
  bytes: number;
}

class RunBuilder {
  private readonly open = new Map<number, { from: bigint; to: bigint; files: number; bytes: number }>();
  private readonly done: { timeline: number; from: bigint; to: bigint; files: number; bytes: number }[] = [];

  constructor(private readonly segmentSize: number) {}

  add(timeline: number, segno: bigint, bytes: number): void {
    const run = this.open.get(timeline);
    if (run && (segno === run.to || segno === run.to + 1n)) {
      run.to = segno;
      run.files++;
      run.bytes += bytes;
      return;
    }
    if (run) this.done.push({ timeline, ...run });
    this.open.set(timeline, { from: segno, to: segno, files: 1, bytes });
  }

  runs(): WalRun[] {
    const all = [...this.done, ...[...this.open].map(([timeline, r]) => ({ timeline, ...r }))];
    all.sort((a, b) => a.timeline - b.timeline || (a.from < b.from ? -1 : a.from > b.from ? 1 : 0));
    return all.map((r) => ({ timeline: r.timeline, from: segmentName(r.timeline, r.from, this.segmentSize), to: segmentName(r.timeline, r.to, this.segmentSize), files: r.files, bytes: r.bytes }));
  }
}

export interface WalTallySummary {
  expired: { files: number; bytes: number; runs: WalRun[] };
  /** Segments that stay: after retention, every one of them must still be there. */
  kept: { files: number; bytes: number; runs: WalRun[] };
  /** History files (always kept). */
  histories: string[];
}

/**
 * Sorts a WAL listing into what goes and what stays, as runs of consecutive segments, so a
 * listing of any length takes memory in proportion to its gaps, not its files.
 */
export class WalTally {
  private readonly expiredRuns: RunBuilder;
  private readonly keptRuns: RunBuilder;
  private readonly cutoff?: bigint;
  readonly expired = { files: 0, bytes: 0 };
  readonly kept = { files: 0, bytes: 0 };
  readonly histories: string[] = [];

  constructor(
    private readonly rule: WalRule | undefined,
    private readonly segmentSize: number,
  ) {
    this.expiredRuns = new RunBuilder(segmentSize);
    this.keptRuns = new RunBuilder(segmentSize);
    this.cutoff = rule ? cutoffOf(rule) : undefined;
  }

  add(entry: Pick<ListEntry, 'key' | 'size'>): WalVerdict {
    const v = walVerdict(entry.key, this.rule, this.segmentSize, this.cutoff);
    if (v.expire) {
      this.expired.files++;
      this.expired.bytes += entry.size;
      this.expiredRuns.add(v.timeline, v.segno, entry.size);
    } else {
      this.kept.files++;
      this.kept.bytes += entry.size;
      if (v.kind === 'segment') this.keptRuns.add(v.timeline!, v.segno!, entry.size);
      if (v.kind === 'history') this.histories.push(parseWalKey(entry.key)!.name);
    }
    return v;
  }

  summary(): WalTallySummary {
    return {
      expired: { ...this.expired, runs: this.expiredRuns.runs() },
      kept: { ...this.kept, runs: this.keptRuns.runs() },
      histories: [...this.histories],
    };
  }
}

/**
 * Checks a WAL listing against runs that must be complete: after feeding every entry, `missing()`
 * names each run with segments absent. Memory in proportion to the runs.
 */
export class WalCoverage {
  private readonly byTimeline = new Map<number, { from: bigint; to: bigint; seen: bigint; run: WalRun }[]>();
  private readonly lastCounted = new Map<number, bigint>();
  private readonly historiesSeen = new Set<string>();

  constructor(
    runs: WalRun[],
    private readonly histories: string[],
    private readonly segmentSize: number,
  ) {
    for (const run of runs) {
      const from = parseWalFileName(run.from, segmentSize)!.segno!;
      const to = parseWalFileName(run.to, segmentSize)!.segno!;
      let list = this.byTimeline.get(run.timeline);
      if (!list) this.byTimeline.set(run.timeline, (list = []));
      list.push({ from, to, seen: 0n, run });
    }
    for (const list of this.byTimeline.values()) list.sort((a, b) => (a.from < b.from ? -1 : 1));
  }

  add(key: string): void {
    const parsed = parseWalKey(key);
    const name = parsed ? parseWalFileName(parsed.name, this.segmentSize) : undefined;
    if (!name) return;
    if (name.kind === 'history') {
      this.historiesSeen.add(name.name);
      return;
    }
    if (name.kind !== 'segment') return;
    const segno = name.segno!;
    // The same segment stored twice (plain and .gz) counts once; listings are sorted, so the copies are adjacent.
    if (this.lastCounted.get(name.timeline) === segno) return;
    const list = this.byTimeline.get(name.timeline);
    if (!list) return;
    let lo = 0;
    let hi = list.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = list[mid];
      if (segno < r.from) hi = mid - 1;
      else if (segno > r.to) lo = mid + 1;
      else {
        r.seen++;
        this.lastCounted.set(name.timeline, segno);
        return;
      }
    }
  }

  /** Runs with missing segments (how many), and history files that are gone. */
  missing(): { runs: { run: WalRun; missing: number }[]; histories: string[] } {
    const runs: { run: WalRun; missing: number }[] = [];
    for (const list of this.byTimeline.values()) {
      for (const r of list) {
        const want = r.to - r.from + 1n;
        if (r.seen < want) runs.push({ run: r.run, missing: Number(want - r.seen) });
      }
    }
    return { runs, histories: this.histories.filter((h) => !this.historiesSeen.has(h)) };
  }
}

/**
 * What may still go, now that the repository may have changed since the plan was confirmed (a
 * resumed run, another job): only what both plans expire, and the more cautious WAL line.
 * `dropped` says what the confirmed plan had that is no longer expired, and why.
 */
