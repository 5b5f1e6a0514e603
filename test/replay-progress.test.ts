// pitr's replay step reports typed progress (ProgressUpdate.replay) and compares where replay
// stopped with the plan: both are pure functions of the plan and a replay status.
import { describe, expect, it } from 'vitest';
import { compareWithPlan, replayProgress } from '../src/restore/replay.js';
import type { RecoveryPlan } from '../src/restore/plan.js';

const plan = {
  target: '2026-11-24T03:14:00Z',
  backupStopLsn: '0/3000100',
  replayEndLsn: '0/3000500',
  expect: { replayedPast: '0/3000400', notPast: '0/3000500', lastXactMicros: '1795922040000000', pausesAtTarget: true },
} as unknown as RecoveryPlan;

describe('replay progress', () => {
  it('counts bytes replayed since the backup ended against the planned end, with the LSNs and commit time', () => {
    const u = replayProgress(plan, { replayLsn: '0/3000300', replayTime: '2026-11-24T03:13:59.123456Z' });
    expect(u).toEqual({ done: 0x200, total: 0x400, unit: 'bytes', replay: { lsn: '0/3000300', targetLsn: '0/3000500', commitTime: '2026-11-24T03:13:59.123456Z' } });
  });

  it('says paused or promoted when told, and starts at the backup end before replay reports a position', () => {
    expect(replayProgress(plan, { replayLsn: '0/3000480' }, { paused: true }).replay).toEqual({ lsn: '0/3000480', targetLsn: '0/3000500', commitTime: undefined, paused: true });
    const start = replayProgress(plan, {}, { promoted: true });
    expect(start.done).toBe(0);
    expect(start.replay).toMatchObject({ lsn: '0/3000100', promoted: true });
  });
});

describe('compareWithPlan', () => {
  it('accepts a stop between the last record kept and the first not kept, at the planned commit', () => {
    expect(compareWithPlan(plan, { inRecovery: true, replayLsn: '0/3000480', replayMicros: '1795922040000000' })).toEqual([]);
  });

  it('names each difference: short of the target, past it, another last commit', () => {
    expect(compareWithPlan(plan, { inRecovery: true, replayLsn: '0/3000400', replayMicros: '1795922040000000' })[0]).toContain('before the record at 0/3000400');
    const past = compareWithPlan(plan, { inRecovery: true, replayLsn: '0/3000600', replayMicros: '1795922050000000' });
    expect(past).toHaveLength(2);
    expect(past[0]).toContain('past 0/3000500');
    expect(past[1]).toContain('the last replayed commit is');
  });
});
