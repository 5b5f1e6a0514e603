// Watching a recovering server replay WAL up to the plan's target: where replay is (as typed
// progress), pausing it at the end of the archived WAL, noticing when it waits for a segment
// the repository no longer has intact, and comparing where it stopped with what the plan said.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ConnectionSettings } from '../config/connection.js';
import type { ProgressUpdate } from '../engine/types.js';
import { pgCtlStatus } from '../postgres/pgctl.js';
import { pauseReplay, replayStatus, type ReplayStatus } from '../postgres/recovery.js';
import type { Repository } from '../repo/repository.js';
import { delay } from '../storage/retry.js';
import { fetchWal, WalCorruptError } from '../repo/walarchive.js';
import { lsnOfSegno, parseLsn, segmentName, segnoOfLsn } from '../repo/walnames.js';
import type { RecoveryPlan } from './plan.js';
import { formatMicrosIso } from './target.js';
import { SegmentIndex, segmentOnPath, type PathPart } from './timelines.js';

export type { ReplayStatus } from '../postgres/recovery.js';

/** How watching replay ended (it throws when the server stops or time runs out). */
export type ReplayOutcome =
  /** Something other than pgrunbook ended recovery before the comparison. */
  | { kind: 'left-recovery'; currentLsn?: string }
  /** Paused: at the target, or at the end of the archived WAL; `problems` is what differs from the plan. */
  | { kind: 'paused'; status: ReplayStatus; problems: string[] }
  /** Replay waits for WAL the repository no longer has intact; paused where it stands. */
  | { kind: 'stalled'; status: ReplayStatus; why: string };

export type WatchOptions = {
  conn: ConnectionSettings;
  pgdata: string;
  plan: RecoveryPlan;
  openRepo: () => Promise<Repository>;
  timeoutSec: number;
  signal: AbortSignal;
  /** Each poll of a server still in recovery. */
  onPoll: (s: ReplayStatus) => void;
  /** The error to throw when the server stopped during recovery, from what the last poll said. */
  stoppedError: (message: string) => Error;
};

const STALL_MS = 8_000;
const POLL_MS = 300;

export async function watchReplay(o: WatchOptions): Promise<ReplayOutcome> {
  const p = o.plan;
  const deadline = Date.now() + o.timeoutSec * 1000;
  let lastLsn = -1n;
  let lastProgressAt = Date.now();
  let lastStallCheck = 0;
  for (;;) {
    o.signal.throwIfAborted();
    const s = await replayStatus(o.conn).catch((e: Error) => ({ error: e.message }));
    if ('error' in s) {
      const up = await pgCtlStatus(o.pgdata).catch(() => ({ running: false }));
      if (!up.running) throw o.stoppedError(s.error);
    } else {
      if (!s.inRecovery) return { kind: 'left-recovery', currentLsn: s.currentLsn };
      o.onPoll(s);
      const at = s.replayLsn ? parseLsn(s.replayLsn) : 0n;
      if (at > lastLsn) {
        lastLsn = at;
        lastProgressAt = Date.now();
      }
      const paused = s.pauseState === 'paused';
      // Replay to the end of the archived WAL has no target of PostgreSQL's to pause at: pause it here.
      const reachedEnd = !p.expect.pausesAtTarget && p.expect.replayedPast !== undefined && at > parseLsn(p.expect.replayedPast);
      if (reachedEnd && !paused) {
        await pauseReplay(o.conn);
        continue;
      }
      if (paused) return { kind: 'paused', status: s, problems: compareWithPlan(p, s) };
      // No progress for a while: is the WAL replay waits for still there and intact?
      if (Date.now() - lastProgressAt > STALL_MS && Date.now() - lastStallCheck > STALL_MS) {
        lastStallCheck = Date.now();
        const why = await whyReplayWaits(o, s.replayLsn ?? p.backupStopLsn);
        if (why) {
          await pauseReplay(o.conn).catch(() => undefined);
          return { kind: 'stalled', status: s, why };
        }
      }
    }
    if (Date.now() > deadline) throw new Error(`replay did not reach the target within ${o.timeoutSec} s; the server is still recovering (check its log). Raise --replay-timeout and --resume to keep waiting.`);
    await delay(POLL_MS, o.signal);
  }
}

/** Replay's position as typed progress: bytes replayed since the backup's end, against the plan's end. */
export function replayProgress(p: RecoveryPlan, s: { replayLsn?: string; replayTime?: string }, flags: { paused?: boolean; promoted?: boolean } = {}): ProgressUpdate {
  const from = parseLsn(p.backupStopLsn);
  const to = parseLsn(p.replayEndLsn);
  const at = s.replayLsn ? parseLsn(s.replayLsn) : from;
  return {
    done: Math.max(0, Number(at - from)),
    total: Math.max(1, Number(to - from)),
    unit: 'bytes',
    replay: { lsn: s.replayLsn ?? p.backupStopLsn, targetLsn: p.replayEndLsn, commitTime: s.replayTime, ...flags },
  };
}

/** What replay reached against what the plan said it must: each difference, in words. */
export function compareWithPlan(p: RecoveryPlan, s: ReplayStatus): string[] {
  const problems: string[] = [];
  const at = s.replayLsn ? parseLsn(s.replayLsn) : 0n;
  if (p.expect.replayedPast && !(at > parseLsn(p.expect.replayedPast))) problems.push(`replay stopped at ${s.replayLsn ?? '?'}, before the record at ${p.expect.replayedPast} that the target needs`);
  if (p.expect.notPast && at > parseLsn(p.expect.notPast)) problems.push(`replay went on to ${s.replayLsn}, past ${p.expect.notPast} where the target ends`);
  if (p.expect.lastXactMicros && s.replayMicros !== p.expect.lastXactMicros) {
    problems.push(`the last replayed commit is ${s.replayMicros ? formatMicrosIso(BigInt(s.replayMicros)) : 'none'}, the plan's is ${formatMicrosIso(BigInt(p.expect.lastXactMicros))}`);
  }
  return problems;
}

/** Replay has not moved for a while: name the segment it waits for if the repository no longer has it intact. */
async function whyReplayWaits(o: WatchOptions, replayLsn: string): Promise<string | undefined> {
  const p = o.plan;
  const repo = await o.openRepo();
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgrunbook-replaywait-'));
  try {
    const catalog = await repo.catalog();
    const ss = catalog.segmentSize;
    const tlPath: PathPart[] = p.pathParts.map((x) => ({ timeline: x.timeline, begin: parseLsn(x.begin), end: x.end === undefined ? undefined : parseLsn(x.end) }));
    const segno = segnoOfLsn(parseLsn(replayLsn), ss);
    for (const s of [segno, segno + 1n]) {
      const start = lsnOfSegno(s, ss);
      if (parseLsn(p.replayEndLsn) < start) break;
      const step = segmentOnPath(tlPath, new SegmentIndex(catalog, ss), s);
      if (step.kind === 'end') {
        const timeline = tlPath.find((x) => start >= x.begin && (x.end === undefined || start < x.end))?.timeline ?? p.timeline;
        return `WAL segment ${segmentName(timeline, s, ss)} is missing from the repository (it was there at preflight)`;
      }
      try {
        const r = await fetchWal(repo.store, step.segment.name, path.join(dir, step.segment.name), { signal: o.signal });
        if (r.status === 'missing') return `WAL segment ${step.segment.name} is missing from the repository (it was there at preflight)`;
      } catch (e) {
        if (e instanceof WalCorruptError) return `WAL segment ${step.segment.name} is corrupt in the repository: ${e.message}`;
        throw e;
      }
    }
    return undefined;
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
    await repo.close();
  }
}
