// Typed WAL replay progress reaches subscribers as the step reported it: the runner copies
// ProgressUpdate.replay into the progress event, and a replay that pauses or is promoted is
// never throttled away (the TUI draws "paused at" from it at once).
import { describe, expect, it } from 'vitest';
import { runProcedure } from '../src/engine/runner.js';
import { headlessAnswerer } from '../src/engine/confirm.js';
import type { Procedure, RunEvent } from '../src/engine/types.js';

const replaying: Procedure = {
  id: 'replaying',
  title: 'Replaying',
  summary: 'reports replay progress',
  group: 'other',
  params: [],
  steps: [
    {
      id: 'replay',
      title: 'Replay',
      kind: 'action',
      async run(ctx) {
        ctx.progress({ done: 1, total: 4, unit: 'bytes', replay: { lsn: '0/1000000', targetLsn: '0/4000000' } });
        // Within the throttle interval: dropped, as any progress would be.
        ctx.progress({ done: 2, total: 4, unit: 'bytes', replay: { lsn: '0/2000000', targetLsn: '0/4000000' } });
        // Paused: goes out at once although the interval has not passed.
        ctx.progress({ done: 3, total: 4, unit: 'bytes', replay: { lsn: '0/3000000', targetLsn: '0/4000000', commitTime: '2026-01-01T10:29:58.123456Z', paused: true } });
        ctx.progress({ done: 3, total: 4, unit: 'bytes' });
      },
    },
  ],
};

describe('replay progress', () => {
  it('reaches the subscriber typed, and a pause is not throttled', async () => {
    const events: RunEvent[] = [];
    const summary = await runProcedure({
      procedure: replaying,
      params: {},
      answer: headlessAnswerer({ yes: false }),
      journalPath: false,
      progressIntervalMs: 60_000,
      onEvent: (e) => events.push(e),
    });
    expect(summary.status).toBe('ok');
    const progress = events.flatMap((e) => (e.type === 'progress' ? [e] : []));
    expect(progress.map((p) => [p.done, p.replay])).toEqual([
      [1, { lsn: '0/1000000', targetLsn: '0/4000000' }],
      [3, { lsn: '0/3000000', targetLsn: '0/4000000', commitTime: '2026-01-01T10:29:58.123456Z', paused: true }],
    ]);
    expect(progress[1]).toMatchObject({ stepId: 'replay', total: 4, unit: 'bytes' });
  });
});
