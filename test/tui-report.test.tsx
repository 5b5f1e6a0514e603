// The report and failure screens at 80x24: the headline (FAILED, the step, the cause in one
// line) stays on top however long the error is, the body wraps (no "…" where it matters) and
// scrolls, and the advice comes from the typed failure (pitr's advise), not from its text.
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, render } from 'ink-testing-library';
import { stripAnsi, waitForFrame } from './helpers/ink.js';
import { tempDir } from './helpers/temp.js';
import { runProcedure } from '../src/engine/runner.js';
import type { Procedure, RunSummary } from '../src/engine/types.js';
import { TargetOutsideWindowError } from '../src/restore/target.js';
import { pitrAdvice } from '../src/procedures/pitr-advice.js';
import { KeysProvider } from '../src/screens/keys.js';
import { AppThemeProvider } from '../src/screens/theme.js';
import { Report, reportBody, reportHeadline } from '../src/screens/report.js';
import { wrapText } from '../src/screens/scroll.js';

afterEach(() => cleanup());

const KEYS = { pageDown: '\x1B[6~', pageUp: '\x1B[5~', down: '\x1B[B', end: '\x1B[F', home: '\x1B[H' };

/** A pitr-shaped procedure: the stop step moves the data directory aside, the replay step throws `error`. */
function pitrLike(pgdata: string, error: Error, stall = false): Procedure {
  return {
    id: 'pitr',
    title: 'Point-in-time recovery',
    summary: 'test',
    group: 'restore',
    params: [{ name: 'target', type: 'string', description: 'target' }],
    advise: (failure, run) => pitrAdvice(failure, run as Parameters<typeof pitrAdvice>[1]),
    steps: [
      { id: 'preflight', title: 'Prove the target is recoverable', kind: 'check', run: async (ctx) => void Object.assign(ctx.state, { plan: { targetDetail: 'xid 1234', timeline: 2, timelineSetting: 'latest' } }) },
      { id: 'stop', title: 'Stop PostgreSQL and move the data directory aside', kind: 'action', run: async (ctx) => void Object.assign(ctx.state, { movedAside: `${pgdata}.pgrunbook-20261202T030000Z` }) },
      {
        id: 'replay',
        title: 'Start PostgreSQL and replay WAL to the target',
        kind: 'action',
        run: async (ctx) => {
          if (stall) {
            Object.assign(ctx.state, { stallPaused: true, reached: { lsn: '0/5000000' } });
            ctx.check('recovery stopped where planned', false, 'replay stopped short');
            return;
          }
          throw error;
        },
      },
      { id: 'promote', title: 'Promote the recovered server', kind: 'action', run: async () => {} },
    ],
  };
}

async function run(procedure: Procedure, pgdata: string): Promise<RunSummary> {
  return runProcedure({ procedure, params: { target: 'xid:1234' }, answer: async () => ({ allowed: true }), services: { pgdata }, journalPath: path.join(tempDir(), 'journal.jsonl') });
}

const twentyLines = Array.from({ length: 20 }, (_, i) => `server log line ${i + 1}: FATAL:  could not open file "pg_wal/00000002000000000000000${i % 10}": No such file or directory`).join('\n');

function renderReport(summary: RunSummary) {
  return render(
    <AppThemeProvider color={false}>
      <KeysProvider>
        <Report summary={summary} title="Point-in-time recovery" size={{ columns: 80, rows: 24 }} onHome={() => {}} onQuit={() => {}} />
      </KeysProvider>
    </AppThemeProvider>,
  );
}

describe('failure report at 80x24', () => {
  it('keeps the headline on top of a 20-line error, scrolls, and advises moving the original data directory back', async () => {
    const pgdata = path.join(tempDir(), 'data');
    const summary = await run(pitrLike(pgdata, new Error(`the server stopped during recovery:\n${twentyLines}`)), pgdata);
    expect(summary.status).toBe('failed');
    expect(summary.failure).toMatchObject({ stepId: 'replay', errorName: 'Error', failedChecks: [] });
    expect(summary.advice?.map((a) => a.kind)).toEqual(['move-back']);

    const { lastFrame, stdin } = renderReport(summary);
    let frame = await waitForFrame(lastFrame, 'FAILED');
    const lines = frame.split('\n');
    expect(lines.length).toBeLessThanOrEqual(24);
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(80);
    expect(lines[0]).toMatch(/^Point-in-time recovery · run pitr-/);
    expect(lines[1]).toMatch(/^✗ FAILED in .* \(exit 1\)/);
    expect(lines[2]).toBe('at step 3/4: Start PostgreSQL and replay WAL to the target');
    expect(lines[3]).toBe('the server stopped during recovery:');
    // The advice comes first in the body and names where the original is, and the command back.
    expect(frame).toContain('What to do next');
    expect(frame.replace(/\s+/g, ' ')).toContain(`The original data directory is safe at ${pgdata}.pgrunbook-20261202T030000Z`);
    expect(frame.replace(/\s+/g, '')).toContain(`mv${pgdata}${pgdata}.failed-${summary.runId}&&mv${pgdata}.pgrunbook-20261202T030000Z${pgdata}`);
    expect(frame).not.toContain('--resume');
    expect(frame).toMatch(/lines 1-\d+ of \d+ · ↑↓ PgUp\/PgDn scroll/);
    expect(frame).not.toContain('server log line 20');

    // Page down to the end: the headline is still the first four lines; the last log line and the journal show.
    for (let i = 0; i < 6 && !frame.includes('journal:'); i++) {
      const before = frame;
      stdin.write(KEYS.pageDown);
      frame = await waitForFrame(lastFrame, (f) => f !== before);
    }
    const end = frame.split('\n');
    expect(end.slice(0, 4)).toEqual(lines.slice(0, 4));
    expect(frame).toContain('server log line 20');
    expect(frame).toContain('journal:');
    expect(frame).not.toContain('more in the journal');
    // Every character of a long line is there, wrapped rather than cut.
    expect(frame.replace(/\s+/g, '')).toContain('server log line 20: FATAL: could not open file "pg_wal/000000020000000000000009": No such file or directory'.replace(/\s+/g, ''));
    for (const l of end) expect(l.length).toBeLessThanOrEqual(80);
    stdin.write(KEYS.home);
    frame = await waitForFrame(lastFrame, (f) => f.includes('What to do next'));
    expect(frame).toMatch(/lines 1-/);
  });

  it('advises another target (not resume) for a target outside the windows, and says nothing was touched', async () => {
    const pgdata = path.join(tempDir(), 'data');
    const procedure = pitrLike(pgdata, new Error('unused'));
    procedure.steps[0] = {
      ...procedure.steps[0],
      run: async () => {
        throw new TargetOutsideWindowError('xid 1234 was not found in the archived WAL', []);
      },
    };
    const summary = await run(procedure, pgdata);
    expect(summary.failure).toMatchObject({ stepId: 'preflight', errorName: 'TargetOutsideWindowError' });
    expect(summary.advice?.map((a) => a.kind)).toEqual(['inspect', 'other-target']);
    expect(summary.advice?.[0].text).toContain(`Nothing was touched: the server and ${pgdata} are as they were`);
    expect(summary.advice?.some((a) => a.kind === 'move-back' || a.kind === 'resume')).toBe(false);
    const body = reportBody(summary, 80).lines.map((l) => l.text).join('\n');
    expect(body).toContain('pick a target inside a recovery window');
    expect(reportHeadline(summary).step).toBe('at step 1/4: Prove the target is recoverable');
  });

  it('a stalled replay: resume (the segment back), another target, another timeline, and the move back', async () => {
    const pgdata = path.join(tempDir(), 'data');
    const summary = await run(pitrLike(pgdata, new Error('unused'), true), pgdata);
    expect(summary.status).toBe('verification-failed');
    expect(summary.failure).toMatchObject({ stepId: 'replay', failedChecks: ['recovery stopped where planned'] });
    expect(summary.advice?.map((a) => a.kind)).toEqual(['resume', 'other-target', 'other-timeline', 'move-back']);
    expect(summary.advice?.[0].command).toBe(`pgrunbook --resume ${summary.runId}`);
    expect(summary.advice?.[1].text).toContain('before 0/5000000');
    expect(summary.advice?.[2].text).toContain('timeline 2');
  });
});

describe('wrapText', () => {
  it('wraps at the width, keeps every character of long words, indents continuations', () => {
    const cmd = `restore_command = '/usr/bin/pgrunbook wal-fetch --repo s3://bucket/a/very/long/prefix/for/this/cluster?region=eu-west-1 --env-file /etc/pgrunbook/server.env %f %p'`;
    const lines = wrapText(cmd, 40, '  ');
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(40);
    expect(lines.join('').replace(/\s+/g, '')).toBe(cmd.replace(/\s+/g, ''));
    expect(lines.slice(1).every((l) => l.startsWith('  '))).toBe(true);
    expect(wrapText('a\n\nb', 10)).toEqual(['a', '', 'b']);
    expect(stripAnsi(wrapText('short', 80).join())).toBe('short');
  });
});
