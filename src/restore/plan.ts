// Planning a point-in-time recovery before anything is touched: choose the timeline and the
// base backup, walk the WAL path from the backup to the target reading every segment with
// its checksum (the one read that must not be skipped), find where the target lies to the
// record and microsecond, and say exactly what replay must reach. Nothing here stops,
// moves or writes anything outside a temporary directory, which is removed on every path.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ObjectStore } from '../storage/types.js';
import type { BaseBackupMeta, Catalog } from '../repo/catalog.js';
import { formatLsn, parseLsn, segnoOfLsn } from '../repo/walnames.js';
import type { WalRecord } from '../postgres/programs/waldump.js';
import { describeTarget, formatMicrosIso, type RecoveryTarget } from './target.js';
import { describePath, newestTimeline, onPath, SegmentIndex, timelinePath } from './timelines.js';
import { UnreachableTargetError } from './errors.js';
import { PathWalker, readHistories } from './walker.js';

export { RepositoryCorruptError, UnreachableTargetError } from './errors.js';

export interface PlannedObject {
  key: string;
  sha256: string;
  size: number;
  compression: string;
}

/** What replay must show when it stops; compared after replay, a difference is exit 3. */
export interface ReplayExpectation {
  /** pg_last_wal_replay_lsn() must be greater than this (the last record that must be replayed starts here). */
  replayedPast?: string;
  /** pg_last_wal_replay_lsn() must not be greater than this (the first record that must not be replayed starts here). */
  notPast?: string;
  /** pg_last_xact_replay_timestamp() in microseconds must equal this (the last commit or abort to keep). */
  lastXactMicros?: string;
  /** The recovery stops by pausing at a recovery target (PostgreSQL's own stop), not at the end of WAL. */
  pausesAtTarget: boolean;
}

export interface RecoveryPlan {
  target: string;
  exclusive: boolean;
  backupId: string;
  backupStopTime: string;
  backupStopLsn: string;
  backupTimeline: number;
  systemIdentifier?: string;
  /** The timeline recovery follows, and whether that is PostgreSQL's 'latest'. */
  timeline: number;
  timelineSetting: string;
  path: string;
  dataObject: PlannedObject;
  manifestObject?: PlannedObject;
  /** Extra recovery settings the target needs (recovery_target_*). */
  settings: [string, string][];
  expect: ReplayExpectation;
  /** For the progress bar: where replay starts and is expected to end. */
  replayEndLsn: string;
  /** What was read and checked. */
  walSegments: number;
  walBytes: number;
  lastSegment?: string;
  /** Printed in the report: the target as found in the WAL. */
  targetDetail: string;
  windows: string;
  /** The path's timelines, for naming the segment replay waits for. */
  pathParts: { timeline: number; begin: string; end?: string }[];
  clusterName?: string;
}

export type PlanProgress = (p: { done: number; total: number; unit: 'bytes' }) => void

export interface PlanInput {
  store: ObjectStore;
  catalog: Catalog;
  target: RecoveryTarget;
  exclusive?: boolean;
  timeline?: number;
  backupId?: string;
  signal?: AbortSignal;
  log: (message: string, level?: 'info' | 'warn') => void;
  progress: PlanProgress;
  /** Reads an object to its end, failing if its SHA-256 differs (the repository's verified read). */
  /** Reads and checksums the chosen backup's objects (called once, after the choice, before any WAL past it). */
  readBackup: (c: { meta: BaseBackupMeta }, signal: AbortSignal) => Promise<void>;
  onWalSegment?: (name: string, count: number) => void;
  /** See WalkerInput.keepSegment; the file is in `workParent` (a rename from there stays on one file system). */
  keepSegment?: (file: string, name: string) => Promise<boolean>;
  /** Where the walk's scratch directory goes (default: the system's temp directory). */
  workParent?: string;
}

interface Candidate {
  meta: BaseBackupMeta;
  stop: bigint;
  start: bigint;
}

export async function planRecovery(input: PlanInput): Promise<RecoveryPlan> {
  const { store, catalog, target } = input;
  const ss = catalog.segmentSize;
  const index = new SegmentIndex(catalog, ss);
  const work = await fsp.mkdtemp(path.join(input.workParent ?? os.tmpdir(), input.workParent ? '.pgrunbook-walscan-' : 'pgrunbook-walscan-'));
  try {
    const histories = await readHistories(store, catalog, work, input.signal);
    const explicitTimeline = input.timeline;
    const tli = explicitTimeline ?? newestTimeline(index, histories);
    if (explicitTimeline !== undefined && !index.timelines().includes(tli) && !histories.has(tli) && tli !== 1) {
      throw new UnreachableTargetError(`--timeline ${tli}: the repository has no WAL and no history file of timeline ${tli}`, `timelines in the repository: ${[...new Set([...index.timelines(), ...histories.keys()])].sort((a, b) => a - b).join(', ')}`);
    }
    const tlPath = timelinePath(tli, histories);

    // Base backups that recovery along this path can start from.
    const candidates: Candidate[] = [];
    for (const b of catalog.baseBackups) {
      if (!b.complete || !b.meta?.objects?.data) continue;
      const window = catalog.windows.find((w) => w.backupId === b.id);
      if (window?.unusable) continue;
      const stop = parseLsn(b.meta.stopLsn);
      if (!onPath(tlPath, b.meta.timeline, stop)) continue;
      if (input.backupId && b.id !== input.backupId) continue;
      candidates.push({ meta: b.meta, stop, start: parseLsn(b.meta.startLsn) });
    }
    candidates.sort((a, b) => (a.stop < b.stop ? 1 : a.stop > b.stop ? -1 : 0)); // newest first
    if (!candidates.length) {
      const why = input.backupId ? `--backup ${input.backupId} is not a complete base backup on ${describePath(tlPath)}` : `no complete base backup lies on ${describePath(tlPath)}`;
      throw new UnreachableTargetError(`nothing to restore from: ${why}`, 'take a base backup (pgrunbook --procedure backup-base), or pick the timeline with --timeline N; pgrunbook catalog lists backups and timelines');
    }

    const windows = candidates.map((c) => `${c.meta.id}: from ${c.meta.stopLsn}`).join('; ');
    // The WAL path is checked while the chosen backup is read (for pitr: unpacked into its staging
    // directory), each on its own: the first to fail stops the other.
    const stopWalk = new AbortController();
    const walkSignal = input.signal ? AbortSignal.any([input.signal, stopWalk.signal]) : stopWalk.signal;
    const walk = new PathWalker({ ...input, signal: walkSignal }, index, tlPath, work);
    const whileBackupIsRead = async <T>(c: Candidate, walkPath: () => Promise<T>): Promise<T> => {
      const stopBackup = new AbortController();
      const backup = input.readBackup(c, input.signal ? AbortSignal.any([input.signal, stopBackup.signal]) : stopBackup.signal);
      let backupError: unknown;
      let walkFailed = false;
      const backupDone = backup.then(
        () => undefined,
        (err: unknown) => {
          if (walkFailed) return; // stopped by us below: the walk's failure is the cause
          backupError = err;
          stopWalk.abort();
        },
      );
      let walked: T;
      try {
        walked = await walkPath();
      } catch (err) {
        walkFailed = true;
        stopBackup.abort();
        await backupDone;
        // The backup's own failure (corrupt, another cluster's) stopped the walk: it is the cause.
        if (backupError !== undefined) throw backupError;
        throw err;
      }
      await backupDone;
      if (backupError !== undefined) throw backupError;
      return walked;
    };

    let chosen: Candidate;
    let expect: ReplayExpectation;
    let settings: [string, string][] = [];
    let replayEnd: bigint;
    let targetDetail: string;
    const exclusive = Boolean(input.exclusive);

    switch (target.kind) {
      case 'latest': {
        chosen = candidates[0];
        const first = startSegment(chosen, ss);
        const end = await whileBackupIsRead(chosen, () => walk.toEnd(first));
        if (end.gap) {
          throw new UnreachableTargetError(
            `latest cannot be reached: WAL segment ${end.gap} is missing from the repository, and later WAL exists; replay would stop at the gap and lose every commit after it`,
            `either recover to the end of the gap-free part (--target lsn:${formatLsn(end.lastRecordEnd ?? chosen.stop)}), or put ${end.gap} back into the repository (the old primary's pg_wal may still have it) and run again`,
          );
        }
        if (end.clipAt !== undefined) {
          // The newest timeline has no segment of its own yet: replay along its parent up to the branch.
          settings = [['recovery_target_lsn', formatLsn(end.clipAt)], ['recovery_target_inclusive', 'off']];
          expect = { notPast: formatLsn(end.clipAt), replayedPast: end.lastRecordStart, pausesAtTarget: true };
          replayEnd = end.clipAt;
          targetDetail = `the end of the archived WAL on ${describePath(tlPath)}: timeline ${tli} has no segment archived yet, so up to its branch point ${formatLsn(end.clipAt)}`;
        } else {
          // Without the last record there is nothing to compare replay with: a run would wait for
          // an end it cannot recognise. Refused before anything is touched.
          if (!end.lastRecordStart) {
            throw new UnreachableTargetError(
              `the end of the archived WAL could not be found: pg_waldump read no record in ${end.lastSegment ?? 'the last segment'}`,
              `recover to an explicit position instead (--target lsn:...; pgrunbook catalog shows the archived WAL), and check that segment with pgrunbook catalog --verify`,
            );
          }
          expect = { replayedPast: end.lastRecordStart, pausesAtTarget: false };
          replayEnd = parseLsn(end.lastRecordStart);
          targetDetail = `the end of the archived WAL: last record at ${end.lastRecordStart ?? '?'} in ${end.lastSegment ?? '?'} on timeline ${tli}`;
        }
        break;
      }
      case 'lsn': {
        const c = candidates.find((x) => x.stop <= target.lsn);
        if (!c) throw outside(`LSN ${formatLsn(target.lsn)} is before the end of the oldest usable base backup`, candidates);
        chosen = c;
        const first = startSegment(chosen, ss);
        const r = await whileBackupIsRead(c, () => walk.toLsn(first, target.lsn));
        if (r.gap) throw outside(`LSN ${formatLsn(target.lsn)} lies beyond a gap in the WAL archive (WAL segment ${r.gap} is missing)`, candidates);
        if (!r.reached) throw outside(`LSN ${formatLsn(target.lsn)} is beyond the archived WAL on ${describePath(tlPath)} (it ends near ${r.lastRecordStart ?? chosen.meta.stopLsn})`, candidates);
        settings = [['recovery_target_lsn', formatLsn(target.lsn)]];
        if (exclusive) settings.push(['recovery_target_inclusive', 'off']);
        expect = exclusive ? { notPast: formatLsn(target.lsn), pausesAtTarget: true } : { replayedPast: formatLsn(target.lsn - 1n), pausesAtTarget: true };
        replayEnd = target.lsn;
        targetDetail = `LSN ${formatLsn(target.lsn)} on timeline ${tli}`;
        break;
      }
      case 'time': {
        const c = candidates.find((x) => Date.parse(x.meta.stopTime) * 1000 < Number(target.micros));
        if (!c) throw outside(`time ${formatMicrosIso(target.micros)} is before the end of the oldest usable base backup`, candidates);
        chosen = c;
        // Keep the last commit at or before the target (inclusive) and stop before the first after it.
        let lastKept: Extract<WalRecord, { kind: 'commit' | 'abort' }> | undefined;
        let firstAfter: Extract<WalRecord, { kind: 'commit' | 'abort' }> | undefined;
        const first = startSegment(chosen, ss);
        const r = await whileBackupIsRead(c, () => walk.scan(first, (rec) => {
          if (rec.kind !== 'commit' && rec.kind !== 'abort') return false;
          const stops = exclusive ? rec.micros >= target.micros : rec.micros > target.micros;
          if (stops) {
            firstAfter = rec;
            return true;
          }
          lastKept = rec;
          return false;
        }));
        if (!firstAfter) {
          if (r.gap) throw outside(`time ${formatMicrosIso(target.micros)} cannot be proven: a gap in the WAL archive (WAL segment ${r.gap} is missing) comes before any commit after it`, candidates);
          throw outside(
            `time ${formatMicrosIso(target.micros)} is after the last commit in the archived WAL${lastKept ? ` (${formatMicrosIso(lastKept.micros)}, transaction ${lastKept.xid})` : ''}: recovery to a time stops at the first commit after it, and there is none yet (archive the newest WAL with SELECT pg_switch_wal(), or use --target latest)`,
            candidates,
          );
        }
        const stop = firstAfter as Extract<WalRecord, { kind: 'commit' | 'abort' }>;
        const kept = lastKept as Extract<WalRecord, { kind: 'commit' | 'abort' }> | undefined;
        settings = [['recovery_target_time', '']]; // filled by the caller from the target's own text (microseconds kept)
        if (exclusive) settings.push(['recovery_target_inclusive', 'off']);
        expect = { notPast: stop.lsn, lastXactMicros: kept ? kept.micros.toString() : undefined, replayedPast: kept ? kept.lsn : undefined, pausesAtTarget: true };
        replayEnd = parseLsn(stop.lsn);
        targetDetail =
          `${describeTarget(target)}: keeps ${kept ? `transaction ${kept.xid} (${kept.kind} at ${formatMicrosIso(kept.micros)}, ${kept.lsn})` : 'no transaction after the backup'}` +
          `, stops before transaction ${stop.xid} (${stop.kind} at ${formatMicrosIso(stop.micros)}, ${stop.lsn})`;
        break;
      }
      case 'xid':
      case 'name': {
        // Where is it? Walk the path from the oldest candidate; the backup is chosen after.
        const oldest = candidates[candidates.length - 1];
        let found: WalRecord | undefined;
        const match = (rec: WalRecord) =>
          target.kind === 'name' ? rec.kind === 'restore-point' && rec.name === target.name : (rec.kind === 'commit' || rec.kind === 'abort') && rec.xid === target.xid;
        const r = await walk.scan(startSegment(oldest, ss), (rec) => {
          if (match(rec)) {
            found = rec;
            return true;
          }
          return false;
        });
        if (!found) {
          const elsewhere = explicitTimeline === undefined ? await walk.searchOtherTimelines(tlPath, match) : undefined;
          if (elsewhere) {
            throw new UnreachableTargetError(
              `${describeTarget(target)} lies on timeline ${elsewhere.timeline} at ${elsewhere.lsn}, a branch that the newest timeline ${tli} abandoned (${describePath(tlPath)}); recovering along timeline ${tli} would never reach it`,
              `if you really mean that abandoned history, pass --timeline ${elsewhere.timeline} explicitly`,
            );
          }
          if (r.gap) throw outside(`${describeTarget(target)} was not found before a gap in the WAL archive (WAL segment ${r.gap} is missing)`, candidates);
          throw outside(`${describeTarget(target)} was not found in the archived WAL on ${describePath(tlPath)}`, candidates);
        }
        const rec = found as WalRecord;
        if (target.kind === 'xid' && rec.kind === 'abort') {
          throw new UnreachableTargetError(`transaction ${target.xid} aborted (at ${rec.lsn}); it committed nothing to recover to`, 'pick the transaction that committed, or a time or LSN');
        }
        const at = parseLsn(rec.lsn);
        const c = candidates.find((x) => x.stop <= at);
        if (!c) throw outside(`${describeTarget(target)} at ${rec.lsn} is before the end of the oldest usable base backup`, candidates);
        chosen = c;
        await input.readBackup(chosen, walkSignal);
        if (target.kind === 'xid') {
          settings = [['recovery_target_xid', target.xid]];
          const commit = rec as Extract<WalRecord, { kind: 'commit' | 'abort' }>;
          expect = { replayedPast: rec.lsn, lastXactMicros: exclusive ? undefined : commit.micros.toString(), pausesAtTarget: true };
          targetDetail = `transaction ${target.xid}: committed at ${formatMicrosIso(commit.micros)}, ${rec.lsn} on timeline ${tli}`;
        } else {
          settings = [['recovery_target_name', target.name]];
          expect = { replayedPast: rec.lsn, pausesAtTarget: true };
          targetDetail = `restore point "${target.name}" at ${rec.lsn} on timeline ${tli}`;
        }
        if (exclusive) {
          settings.push(['recovery_target_inclusive', 'off']);
          expect = { notPast: rec.lsn, pausesAtTarget: true };
        }
        replayEnd = at;
        break;
      }
    }

    const data = chosen.meta.objects!.data!;
    const manifest = chosen.meta.objects?.manifest;
    return {
      target: input.target.kind === 'latest' ? 'latest' : String((input.target as { text?: string }).text ?? describeTarget(input.target)),
      exclusive,
      backupId: chosen.meta.id,
      backupStopTime: chosen.meta.stopTime,
      backupStopLsn: chosen.meta.stopLsn,
      backupTimeline: chosen.meta.timeline,
      systemIdentifier: chosen.meta.systemIdentifier,
      timeline: tli,
      timelineSetting: explicitTimeline === undefined ? 'latest' : String(tli),
      path: describePath(tlPath),
      dataObject: { key: data.key, sha256: data.sha256, size: data.size, compression: data.compression },
      manifestObject: manifest ? { key: manifest.key, sha256: manifest.sha256, size: manifest.size, compression: 'none' } : undefined,
      settings,
      expect,
      replayEndLsn: formatLsn(replayEnd),
      walSegments: walk.segmentsRead,
      walBytes: walk.bytesRead,
      lastSegment: walk.lastSegment,
      targetDetail,
      windows,
      pathParts: tlPath.map((x) => ({ timeline: x.timeline, begin: formatLsn(x.begin), end: x.end === undefined ? undefined : formatLsn(x.end) })),
    };
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
}

function startSegment(c: Candidate, ss: number): bigint {
  // The backup's own WAL from its start is needed unless it carries it in pg_wal.
  return segnoOfLsn(c.meta.includesWal ? c.stop : c.start, ss);
}

function outside(message: string, candidates: Candidate[]): UnreachableTargetError {
  const windows = candidates.map((c) => `${c.meta.id} (ended ${c.meta.stopTime}, ${c.meta.stopLsn})`).join('; ');
  return new UnreachableTargetError(`${message}. Recovery windows start at the end of these base backups: ${windows}`, 'pick a target inside a recovery window (pgrunbook catalog shows them), or restore the missing WAL into the repository first');
}
