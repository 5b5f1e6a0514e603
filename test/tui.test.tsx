// The TUI through ink-testing-library, with small in-memory procedures (no PostgreSQL).
// ink-testing-library renders every commit and has no waitUntilExit: every step waits for the
// frame it expects (waitForFrame polls with a deadline) before it types the next key.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cleanup, render } from 'ink-testing-library';
import type { Key } from 'ink';
import { gate, key, poll as waitFor, stripAnsi, waitForFrame } from './helpers/ink.js';
import { App, appReducer, initialAppState, type AppState } from '../src/app.js';
import type { Procedure, RunEvent, RunSummary, StepContext } from '../src/engine/types.js';
import { readJournal } from '../src/engine/journal.js';
import { applyEvent, createEventBatcher, initialRunState, LOG_TAIL, runReducer, type Timers } from '../src/screens/run-state.js';
import { CANCELLED, confirmReducer, initialConfirmState, type ConfirmRequest } from '../src/screens/confirm.js';
import { formFlags, formReducer, initFormState, fieldForError } from '../src/screens/params-form.js';
import { homeReducer, groupProcedures, menuOrder } from '../src/screens/home.js';
import { bar, percent, progressText } from '../src/screens/format.js';

// ---------------------------------------------------------------------------------------
// helpers

const KEYS = { enter: '\r', down: '\x1B[B', up: '\x1B[A', right: '\x1B[C', esc: '\x1B', ctrlC: '\x03', ctrlU: '\x15', backspace: '\x7f', space: ' ' };

let stateDir: string;
beforeAll(() => {
  stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrunbook-tui-'));
});
afterAll(() => {
  fs.rmSync(stateDir, { recursive: true, force: true });
});
afterEach(() => {
  cleanup();
});

const env = { NO_COLOR: '1' } as NodeJS.ProcessEnv;

function renderApp(procedures: Procedure[], extra: { abortGraceMs?: number } = {}) {
  const exits: number[] = [];
  const app = render(<App procedures={procedures} stateDir={stateDir} env={env} onExit={(code) => exits.push(code)} progressIntervalMs={0} {...extra} />);
  return { ...app, exits, waitForExit: () => waitFor(() => (exits.length ? exits[0] : undefined), () => `no exit; last frame:\n${stripAnsi(app.lastFrame() ?? '')}`) };
}

// ---------------------------------------------------------------------------------------
// procedures used by the tests

const noop = async () => {};

function simpleProcedure(id: string, group: Procedure['group'], extra: Partial<Procedure> = {}): Procedure {
  return {
    id,
    title: `Procedure ${id}`,
    summary: `the ${id} summary`,
    group,
    params: [],
    steps: [{ id: 'only', title: `Only step of ${id}`, kind: 'action', run: noop }],
    ...extra,
  };
}

// ---------------------------------------------------------------------------------------
// the app

describe('home', () => {
  it('lists procedures by group, moves with the arrow keys and opens the chosen form', async () => {
    let ranWith: unknown;
    const withParams = simpleProcedure('bravo', 'verify', {
      params: [
        { name: 'target', type: 'string', required: true, description: 'the database to check', example: 'db1' },
        { name: 'mode', type: 'choice', choices: ['fast', 'safe'], default: 'safe', description: 'how careful to be' },
        { name: 'force', type: 'boolean', description: 'go on after warnings' },
      ],
      steps: [
        {
          id: 'look',
          title: 'Look at it',
          kind: 'check',
          async run(ctx) {
            ranWith = ctx.params;
          },
        },
      ],
    });
    const procedures = [withParams, simpleProcedure('alpha', 'backup')];
    const { lastFrame, stdin } = renderApp(procedures);

    let frame = await waitForFrame(lastFrame, 'pgrunbook');
    // Back up before Verify, whatever the input order; no empty groups.
    expect(frame.indexOf('Back up')).toBeLessThan(frame.indexOf('Verify'));
    expect(frame).not.toContain('Restore');
    expect(frame).toMatch(/› alpha/);
    expect(frame).toContain('the bravo summary');

    stdin.write(KEYS.down);
    frame = await waitForFrame(lastFrame, (f) => /› bravo/.test(f));
    expect(frame).not.toMatch(/› alpha/);

    stdin.write(KEYS.enter);
    frame = await waitForFrame(lastFrame, 'parameters (bravo)');
    expect(frame).toContain('target');
    expect(frame).toContain('e.g. db1'); // the example as placeholder
    expect(frame).toContain('the database to check'); // the focused field's description
    expect(frame).toContain('[safe]');

    // Esc goes back to Home, with the selection kept.
    stdin.write(KEYS.esc);
    frame = await waitForFrame(lastFrame, (f) => f.includes('Enter choose'));
    expect(frame).toMatch(/› bravo/);

    // And forward again: fill the form and run.
    stdin.write(KEYS.enter);
    await waitForFrame(lastFrame, 'parameters (bravo)');
    // Enter on the last field validates: target is required.
    stdin.write(KEYS.down);
    stdin.write(KEYS.down);
    await waitForFrame(lastFrame, (f) => /› force/.test(f));
    stdin.write(KEYS.enter);
    frame = await waitForFrame(lastFrame, 'missing --target');
    expect(frame).toMatch(/› target/); // focus goes to the field the error names
    expect(ranWith).toBeUndefined();

    stdin.write('db1');
    await waitForFrame(lastFrame, (f) => /target\s*\*?\s+db1/.test(f));
    stdin.write(KEYS.down);
    await waitForFrame(lastFrame, (f) => /› mode/.test(f));
    stdin.write(KEYS.right);
    await waitForFrame(lastFrame, '[fast]');
    stdin.write(KEYS.down);
    await waitForFrame(lastFrame, (f) => /› force/.test(f));
    stdin.write(KEYS.space);
    await waitForFrame(lastFrame, '[x] yes');
    stdin.write(KEYS.enter);
    frame = await waitForFrame(lastFrame, 'done in');
    expect(ranWith).toEqual({ target: 'db1', mode: 'fast', force: true });
    expect(frame).toContain('Look at it');
  });

  it('runs a procedure without params straight away, and q quits with 0', async () => {
    const { lastFrame, stdin, waitForExit } = renderApp([simpleProcedure('alpha', 'backup')]);
    await waitForFrame(lastFrame, '› alpha');
    stdin.write(KEYS.enter);
    await waitForFrame(lastFrame, 'done in');
    stdin.write(KEYS.enter); // back to Home
    await waitForFrame(lastFrame, 'Enter choose');
    stdin.write('q');
    expect(await waitForExit()).toBe(0);
  });
});

describe('run view', () => {
  it('shows step states, the progress bar, the about text, checks and logs; then the report', async () => {
    const copy = gate();
    let copied = false;
    const procedure: Procedure = {
      id: 'copy-demo',
      title: 'Copy demo',
      summary: 'copies some bytes',
      group: 'backup',
      params: [],
      steps: [
        {
          id: 'prepare',
          title: 'Prepare the source',
          kind: 'check',
          async run(ctx) {
            ctx.log('source is ready');
            ctx.check('source readable', true, '100 bytes');
          },
        },
        {
          id: 'copy',
          title: 'Copy the bytes',
          kind: 'action',
          describe: () => 'Copying 100 bytes to the repository.',
          async run(ctx) {
            ctx.progress({ done: 50, total: 100, unit: 'bytes' });
            await copy.promise;
            ctx.progress({ done: 100, total: 100, unit: 'bytes' });
            copied = true;
          },
        },
        { id: 'check-copy', title: 'Check the copy', kind: 'verify', async run(ctx) { ctx.check('sizes match', true); } },
      ],
    };
    const { lastFrame, stdin, waitForExit } = renderApp([procedure]);
    await waitForFrame(lastFrame, '› copy-demo');
    stdin.write(KEYS.enter);

    const frame = await waitForFrame(lastFrame, '50%');
    expect(frame).toContain('50 B of 100 B');
    expect(frame).toMatch(/█+░+\s+50%/);
    expect(frame).toContain('Copying 100 bytes to the repository.');
    expect(frame).toMatch(/Prepare the source\s+ok/);
    expect(frame).toMatch(/Copy the bytes\s+running/);
    expect(frame).toMatch(/Check the copy\s+pending/);
    expect(frame).toContain('✓ source readable: 100 bytes');
    expect(frame).toContain('source is ready');
    expect(frame).toMatch(/elapsed \d/);
    expect(copied).toBe(false);

    copy.release();
    const report = await waitForFrame(lastFrame, 'done in');
    expect(copied).toBe(true);
    expect(report).toMatch(/Copy the bytes\s+ok/);
    expect(report).toContain('Checks: 2 passed, 0 failed');
    expect(report).toContain(`journal: ${path.join(stateDir, 'runs')}`);
    const journalPath = /journal: (\S+\.jsonl)/.exec(report)?.[1];
    expect(journalPath && fs.existsSync(journalPath)).toBe(true);
    const records = readJournal(journalPath!);
    expect(records.at(-1)?.rec).toBe('run-end');

    stdin.write('q');
    expect(await waitForExit()).toBe(0);
  });

  it('reports a failed step with its error and exits with 1 on q', async () => {
    const procedure = simpleProcedure('breaks', 'other', {
      steps: [{ id: 'boom', title: 'Break', kind: 'action', run: async () => { throw new Error('disk full'); } }],
    });
    const { lastFrame, stdin, waitForExit } = renderApp([procedure]);
    await waitForFrame(lastFrame, '› breaks');
    stdin.write(KEYS.enter);
    const frame = await waitForFrame(lastFrame, 'FAILED');
    expect(frame).toContain('disk full');
    expect(frame).toMatch(/Break.*failed/);
    expect(frame).toContain('next: fix the cause, then continue with: pgrunbook --resume breaks-');
    stdin.write('q');
    expect(await waitForExit()).toBe(1);
  });
});

describe('typed confirmation', () => {
  function destructiveProcedure(flag: { ran: boolean }): Procedure {
    return {
      id: 'replace',
      title: 'Replace a table',
      summary: 'replaces rows',
      group: 'restore',
      params: [],
      steps: [
        { id: 'look', title: 'Look first', kind: 'check', run: noop },
        {
          id: 'swap',
          title: 'Swap the table',
          kind: 'action',
          destructive: { what: () => 'replace every row of public.users in prod-main', confirmText: () => 'prod-main', confirmMeaning: () => "the cluster's name" },
          async run() {
            flag.ran = true;
          },
        },
      ],
    };
  }

  it('refuses the wrong text, stays, and proceeds on the right text', async () => {
    const flag = { ran: false };
    const { lastFrame, stdin, waitForExit } = renderApp([destructiveProcedure(flag)]);
    await waitForFrame(lastFrame, '› replace');
    stdin.write(KEYS.enter);
    let frame = await waitForFrame(lastFrame, "To continue, type the cluster's name, then press Enter");
    expect(frame).toContain('This will replace every row of public.users in prod-main.');
    // The word to type stands on its own line (highlighted when colours are on), not inside the sentence.
    expect(frame).toMatch(/^│\s+ prod-main \s+│$/m);

    stdin.write('wrong');
    await waitForFrame(lastFrame, '> wrong');
    stdin.write(KEYS.enter);
    frame = await waitForFrame(lastFrame, 'does not match');
    expect(frame).toContain('"wrong" does not match');
    expect(frame).toMatch(/Swap the table\s+waiting/);
    expect(flag.ran).toBe(false);

    // Fix it: backspace, clear, type it right.
    stdin.write(KEYS.backspace);
    await waitForFrame(lastFrame, (f) => f.includes('> wron') && !f.includes('> wrong'));
    stdin.write(KEYS.ctrlU);
    await waitForFrame(lastFrame, (f) => /> \s*│/.test(f) && !f.includes('> wron'));
    stdin.write('prod-');
    await waitForFrame(lastFrame, '> prod-');
    stdin.write('main');
    await waitForFrame(lastFrame, '> prod-main');
    expect(flag.ran).toBe(false);
    stdin.write(KEYS.enter);
    frame = await waitForFrame(lastFrame, 'done in');
    expect(flag.ran).toBe(true);
    expect(frame).toMatch(/Swap the table\s+ok/);

    stdin.write('q');
    expect(await waitForExit()).toBe(0);
  });

  it('Esc cancels: the run ends refused and the step never runs', async () => {
    const flag = { ran: false };
    const { lastFrame, stdin, waitForExit } = renderApp([destructiveProcedure(flag)]);
    await waitForFrame(lastFrame, '› replace');
    stdin.write(KEYS.enter);
    await waitForFrame(lastFrame, ' prod-main ');
    stdin.write('prod');
    await waitForFrame(lastFrame, '> prod');
    stdin.write(KEYS.esc);
    const frame = await waitForFrame(lastFrame, 'STOPPED');
    expect(flag.ran).toBe(false);
    expect(frame).toMatch(/Swap the table.*refused/);
    expect(frame).toContain(CANCELLED);
    expect(frame).toContain('(exit 4)');
    stdin.write('q');
    expect(await waitForExit()).toBe(4);
  });

  it('asks y/n for an ordinary confirmation', async () => {
    let answer: boolean | undefined;
    const procedure = simpleProcedure('ask', 'other', {
      steps: [
        {
          id: 'ask',
          title: 'Ask first',
          kind: 'action',
          async run(ctx) {
            answer = await ctx.confirm({ message: 'Restart the server now?' });
          },
        },
      ],
    });
    const { lastFrame, stdin } = renderApp([procedure]);
    await waitForFrame(lastFrame, '› ask');
    stdin.write(KEYS.enter);
    await waitForFrame(lastFrame, 'Restart the server now?');
    stdin.write('y');
    await waitForFrame(lastFrame, 'done in');
    expect(answer).toBe(true);
  });
});

describe('Ctrl-C', () => {
  it('during a run aborts the engine, shows the interrupted step, then exits 130', async () => {
    const procedure = simpleProcedure('long', 'drill', {
      steps: [
        { id: 'first', title: 'First', kind: 'action', run: noop },
        {
          id: 'wait',
          title: 'Wait for ever',
          kind: 'action',
          run: (ctx: StepContext) =>
            new Promise<void>((_resolve, reject) => {
              ctx.progress({ done: 1, total: 4, unit: 'files' });
              ctx.signal.addEventListener('abort', () => reject(new Error('stopped')), { once: true });
            }),
        },
        { id: 'never', title: 'Never reached', kind: 'action', run: noop },
      ],
    });
    const { lastFrame, stdin, waitForExit } = renderApp([procedure]);
    await waitForFrame(lastFrame, '› long');
    stdin.write(KEYS.enter);
    await waitForFrame(lastFrame, '25%');
    stdin.write(KEYS.ctrlC);
    expect(await waitForExit()).toBe(130);
    const frame = stripAnsi(lastFrame() ?? '');
    expect(frame).toContain('INTERRUPTED');
    expect(frame).toMatch(/Wait for ever\s+interrupted/);
    expect(frame).toMatch(/Never reached\s+pending/);
    expect(frame).toContain('next: continue with: pgrunbook --resume long-');
    expect(frame).toContain('exiting with code 130');
    const journalPath = /journal: (\S+\.jsonl)/.exec(frame)?.[1];
    const ends = readJournal(journalPath!).filter((r) => r.rec === 'step-end');
    expect(ends.map((r) => r.rec === 'step-end' && [r.stepId, r.status])).toEqual([
      ['first', 'ok'],
      ['wait', 'interrupted'],
    ]);
  });

  it('while a typed confirmation is open ends the run as interrupted (130)', async () => {
    const flag = { ran: false };
    const procedure = simpleProcedure('danger', 'restore', {
      steps: [
        {
          id: 'drop',
          title: 'Drop it',
          kind: 'action',
          destructive: { what: () => 'drop database x', confirmText: () => 'x' },
          async run() {
            flag.ran = true;
          },
        },
      ],
    });
    const { lastFrame, stdin, waitForExit } = renderApp([procedure]);
    await waitForFrame(lastFrame, '› danger');
    stdin.write(KEYS.enter);
    await waitForFrame(lastFrame, 'To continue, type this text exactly');
    stdin.write(KEYS.ctrlC);
    expect(await waitForExit()).toBe(130);
    expect(flag.ran).toBe(false);
    expect(stripAnsi(lastFrame() ?? '')).toMatch(/Drop it\s+interrupted/);
  });

  it('on Home quits with 0', async () => {
    const { lastFrame, stdin, waitForExit } = renderApp([simpleProcedure('alpha', 'backup')]);
    await waitForFrame(lastFrame, '› alpha');
    stdin.write(KEYS.ctrlC);
    expect(await waitForExit()).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------
// pure parts

const T0 = Date.parse('2026-01-01T00:00:00.000Z');
const at = (ms: number) => new Date(T0 + ms).toISOString();
const base = (ms: number) => ({ time: at(ms), runId: 'demo-1' });

function runStart(): RunEvent {
  return {
    type: 'run-start',
    ...base(0),
    procedure: 'demo',
    title: 'Demo',
    params: {},
    steps: [
      { id: 'a', title: 'A', kind: 'check', destructive: false },
      { id: 'b', title: 'B', kind: 'action', destructive: true },
    ],
    journalPath: '/state/runs/demo-1.jsonl',
    dryRun: false,
  };
}

describe('runReducer', () => {
  it('follows a run from start to end', () => {
    const summary: RunSummary = {
      runId: 'demo-1',
      procedure: 'demo',
      status: 'ok',
      exitCode: 0,
      durationMs: 900,
      steps: [],
      checks: [],
      journalPath: '/state/runs/demo-1.jsonl',
    };
    const events: RunEvent[] = [
      runStart(),
      { type: 'step-start', ...base(10), stepId: 'a', title: 'A', index: 0, kind: 'check', about: 'Looking at A.' },
      { type: 'progress', ...base(20), stepId: 'a', done: 50, total: 100, unit: 'bytes', ratePerSec: 10, etaSec: 5 },
      { type: 'check', ...base(30), stepId: 'a', name: 'a works', ok: true, detail: 'fine' },
    ];
    let s = runReducer(initialRunState(), { type: 'events', events });
    expect(s.runId).toBe('demo-1');
    expect(s.startedAt).toBe(T0);
    expect(s.steps.map((x) => x.state)).toEqual(['running', 'pending']);
    expect(s.steps[0].startedAt).toBe(T0 + 10);
    expect(s.about).toBe('Looking at A.');
    expect(s.progress).toMatchObject({ done: 50, total: 100 });
    expect(s.checks).toEqual([{ stepId: 'a', name: 'a works', ok: true, detail: 'fine' }]);

    for (let i = 0; i < 8; i++) s = applyEvent(s, { type: 'log', ...base(40 + i), stepId: 'a', level: 'info', message: `line ${i}` });
    expect(s.logs).toHaveLength(LOG_TAIL);
    expect(s.logs.at(-1)?.message).toBe('line 7');
    expect(s.logsDropped).toBe(8 - LOG_TAIL);

    s = applyEvent(s, { type: 'step-end', ...base(100), stepId: 'a', status: 'ok', durationMs: 90 });
    expect(s.steps[0]).toMatchObject({ state: 'ok', durationMs: 90 });
    expect(s.progress).toBeUndefined();
    expect(s.about).toBeUndefined();

    s = applyEvent(s, { type: 'step-start', ...base(110), stepId: 'b', title: 'B', index: 1, kind: 'action' });
    s = applyEvent(s, { type: 'confirm-request', ...base(120), stepId: 'b', message: 'sure?', destructive: { what: 'drop b', expected: 'b' } });
    expect(s.confirm).toMatchObject({ stepId: 'b', seq: 1, destructive: { expected: 'b' } });
    s = applyEvent(s, { type: 'confirm-answer', ...base(130), stepId: 'b', allowed: false, reason: 'cancelled by the operator' });
    expect(s.confirm).toBeUndefined();
    expect(s.lastAnswer).toEqual({ stepId: 'b', allowed: false, reason: 'cancelled by the operator' });
    s = applyEvent(s, { type: 'step-end', ...base(140), stepId: 'b', status: 'refused', durationMs: 30, error: 'cancelled by the operator' });
    s = applyEvent(s, { type: 'run-end', ...base(150), summary: { ...summary, status: 'refused', exitCode: 4 } });
    expect(s.steps.map((x) => x.state)).toEqual(['ok', 'refused']);
    expect(s.summary?.exitCode).toBe(4);
    expect(s.currentStepId).toBeUndefined();
  });

  it('ignores progress from a step that is not the current one', () => {
    let s = runReducer(initialRunState(), { type: 'events', events: [runStart(), { type: 'step-start', ...base(1), stepId: 'b', title: 'B', index: 1, kind: 'action' }] });
    s = applyEvent(s, { type: 'progress', ...base(2), stepId: 'a', done: 1, unit: 'x' });
    expect(s.progress).toBeUndefined();
  });
});

describe('createEventBatcher', () => {
  function fakeTimers() {
    let now = 0;
    const pending: { at: number; fn: () => void; id: number }[] = [];
    let ids = 0;
    const timers: Timers = {
      setTimeout(fn, ms) {
        const id = ++ids;
        pending.push({ at: now + ms, fn, id });
        return id;
      },
      clearTimeout(h) {
        const i = pending.findIndex((p) => p.id === h);
        if (i >= 0) pending.splice(i, 1);
      },
      now: () => now,
    };
    const advance = (ms: number) => {
      now += ms;
      for (const p of [...pending].sort((x, y) => x.at - y.at)) {
        if (p.at <= now) {
          pending.splice(pending.indexOf(p), 1);
          p.fn();
        }
      }
    };
    return { timers, advance };
  }
  const progress = (done: number): RunEvent => ({ type: 'progress', ...base(done), stepId: 'a', done, total: 1000, unit: 'bytes' });

  it('coalesces progress to at most one batch per interval and flushes urgent events at once', () => {
    const { timers, advance } = fakeTimers();
    const batches: RunEvent[][] = [];
    const b = createEventBatcher((events) => batches.push(events), 100, timers);
    for (let i = 1; i <= 50; i++) b.push(progress(i)); // 50 progress events in one instant
    expect(batches).toHaveLength(0);
    advance(0);
    expect(batches).toHaveLength(1);
    expect(batches[0]).toHaveLength(1);
    expect(batches[0][0]).toMatchObject({ done: 50 });

    for (let i = 51; i <= 60; i++) {
      b.push(progress(i));
      advance(10);
    }
    // 100 ms after the last flush, one batch with the latest value.
    expect(batches).toHaveLength(2);
    expect(batches[1]).toEqual([expect.objectContaining({ done: 60 })]);

    b.push(progress(61));
    b.push({ type: 'step-end', ...base(70), stepId: 'a', status: 'ok', durationMs: 70 });
    expect(batches).toHaveLength(3);
    expect(batches[2].map((e) => e.type)).toEqual(['progress', 'step-end']);
    b.close();
  });
});

describe('confirmReducer', () => {
  const request: ConfirmRequest = { stepId: 's', message: 'm', destructive: { what: 'drop it', expected: 'prod-main' } };
  const type = (s: ReturnType<typeof initialConfirmState>, text: string) => confirmReducer(s, { type: 'key', input: text, key: key(), request });
  const enter = (s: ReturnType<typeof initialConfirmState>) => confirmReducer(s, { type: 'key', input: '', key: key({ return: true }), request });

  it('needs the exact text; a mismatch stays open with an error', () => {
    let s = type(initialConfirmState(1), 'prod-mai');
    s = enter(s);
    expect(s.outcome).toBeUndefined();
    expect(s.error).toContain('does not match');
    s = type(s, 'n');
    expect(s.error).toBeUndefined();
    s = enter(s);
    expect(s.outcome).toEqual({ allowed: true });
    // Nothing changes it afterwards.
    expect(confirmReducer(s, { type: 'key', input: '', key: key({ escape: true }), request }).outcome).toEqual({ allowed: true });
  });

  it('handles fast keys as one sequence (no stale state)', () => {
    const keys: [string, Partial<Key>][] = [...'prod-main'].map((c) => [c, {}]);
    keys.push(['', { return: true }]);
    const s = keys.reduce((acc, [input, k]) => confirmReducer(acc, { type: 'key', input, key: key(k), request }), initialConfirmState(1));
    expect(s.outcome).toEqual({ allowed: true });
  });

  it('applies editing keys that arrive inside one chunk (Ctrl-U then text, DEL)', () => {
    let s = type(initialConfirmState(1), 'demo');
    s = type(s, '\x15prod-mainx\x7f');
    expect(s.text).toBe('prod-main');
    expect(confirmReducer(s, { type: 'key', input: 'w', key: key({ ctrl: true }), request }).text).toBe('');
  });

  it('Esc cancels; y/n for ordinary requests', () => {
    expect(confirmReducer(initialConfirmState(), { type: 'key', input: '', key: key({ escape: true }), request }).outcome).toEqual({ allowed: false, reason: CANCELLED });
    const plain: ConfirmRequest = { stepId: 's', message: 'go?' };
    expect(confirmReducer(initialConfirmState(), { type: 'key', input: 'y', key: key(), request: plain }).outcome).toEqual({ allowed: true });
    expect(confirmReducer(initialConfirmState(), { type: 'key', input: 'n', key: key(), request: plain }).outcome?.allowed).toBe(false);
    expect(confirmReducer(initialConfirmState(), { type: 'key', input: 'x', key: key(), request: plain }).outcome).toBeUndefined();
  });
});

describe('formReducer', () => {
  const procedure: Procedure = {
    id: 'p',
    title: 'P',
    summary: 's',
    group: 'other',
    params: [
      { name: 'databases', type: 'list', description: 'dbs', example: 'a,b' },
      { name: 'jobs', type: 'number', description: 'parallel jobs', default: 2 },
      { name: 'pgdata', type: 'string', description: 'data dir', env: 'PGDATA', required: true },
    ],
    steps: [],
  };

  it('starts from environment and defaults and validates through resolveParams', () => {
    let s = initFormState(procedure, { PGDATA: '/data' });
    expect(s.values).toEqual(['', '2', '/data']);
    const press = (input: string, k: Partial<Key> = {}) => {
      s = formReducer(s, { type: 'key', input, key: key(k) });
    };
    press('a,b');
    press('', { downArrow: true });
    press('', { backspace: true });
    press('x');
    press('', { return: true });
    press('', { return: true }); // on the last field: validate
    expect(s.result).toBeUndefined();
    expect(s.errors).toEqual(['--jobs: expected a number, got "x"']);
    expect(s.focus).toBe(1);
    press('', { backspace: true });
    press('4');
    press('', { tab: true });
    press('', { return: true });
    expect(s.errors).toEqual([]);
    expect(s.result).toEqual({ databases: ['a', 'b'], jobs: 4, pgdata: '/data' });
    expect(formFlags(s)).toEqual({ databases: 'a,b', jobs: '4', pgdata: '/data' });
  });

  it('maps errors to the field they name', () => {
    expect(fieldForError('missing --pgdata: data dir', procedure.params)).toBe(2);
    expect(fieldForError('--jobs: expected a number', procedure.params)).toBe(1);
    expect(fieldForError('something else', procedure.params)).toBe(-1);
  });

  it('Esc cancels', () => {
    expect(formReducer(initFormState(procedure, {}), { type: 'key', input: '', key: key({ escape: true }) }).cancelled).toBe(true);
  });
});

describe('homeReducer and grouping', () => {
  it('moves, clamps and picks from the reduced state', () => {
    let s = { index: 0, count: 3 };
    const press = (input: string, k: Partial<Key> = {}) => (s = homeReducer(s, { type: 'key', input, key: key(k) }));
    press('', { upArrow: true });
    expect(s.index).toBe(0);
    press('j');
    press('', { downArrow: true });
    press('', { downArrow: true });
    expect(s.index).toBe(2);
    press('k');
    press('', { return: true });
    expect(s).toMatchObject({ index: 1, picked: 1 });
  });

  it('orders groups as back up, restore, verify, drill, other', () => {
    const procs = [simpleProcedure('v', 'verify'), simpleProcedure('o', 'other'), simpleProcedure('b', 'backup')];
    expect(groupProcedures(procs).map((g) => g.group)).toEqual(['backup', 'verify', 'other']);
    expect(menuOrder(procs).map((p) => p.id)).toEqual(['b', 'v', 'o']);
  });
});

describe('appReducer', () => {
  const procedure = simpleProcedure('x', 'other');
  const summary = (status: RunSummary['status'], exitCode: number): RunSummary => ({ runId: 'x-1', procedure: 'x', status, exitCode, durationMs: 1, steps: [], checks: [] });

  it('Ctrl-C during a run stops it, then exits 130 once the run has ended', () => {
    let s: AppState = appReducer(initialAppState, { type: 'pick', procedure, index: 0, params: {} });
    expect(s.screen.name).toBe('run');
    s = appReducer(s, { type: 'ctrl-c' });
    expect(s.stopping).toBe(1);
    expect(s.exit).toBeUndefined();
    s = appReducer(s, { type: 'finished', summary: summary('interrupted', 130) });
    expect(s.screen.name).toBe('report');
    expect(s.exit).toEqual({ code: 130, forced: false });
  });

  it('a second Ctrl-C quits at once', () => {
    let s: AppState = appReducer(initialAppState, { type: 'pick', procedure, index: 0, params: {} });
    s = appReducer(appReducer(s, { type: 'ctrl-c' }), { type: 'ctrl-c' });
    expect(s.exit).toEqual({ code: 130, forced: true });
  });

  it('a finished run shows the report; Ctrl-C there exits with its code', () => {
    let s: AppState = appReducer(initialAppState, { type: 'pick', procedure, index: 0, params: {} });
    s = appReducer(s, { type: 'finished', summary: summary('verification-failed', 3) });
    expect(s.exit).toBeUndefined();
    s = appReducer(s, { type: 'ctrl-c' });
    expect(s.exit).toEqual({ code: 3, forced: false });
  });
});

describe('format helpers', () => {
  it('draws bars and progress text', () => {
    expect(percent(50, 100)).toBe(50);
    expect(bar(50, 100, 10)).toBe('█████░░░░░');
    expect(progressText({ stepId: 'a', done: 50, total: 100, unit: 'bytes', ratePerSec: 10, etaSec: 5 })).toBe('50 B of 100 B · 10 B/s · about 5.0 s left');
  });
});

