import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { errorMessage, runProcedure, type RunSupervisor } from '../src/engine/runner.js';
import { headlessAnswerer } from '../src/engine/confirm.js';
import { readJournal, readResumePoint } from '../src/engine/journal.js';
import { resolveParams } from '../src/engine/params.js';
import { CliUsageError, parseCommand, type CommandDecl } from '../src/commands/registry.js';
import { maskConnectionStrings } from '../src/engine/mask.js';
import { repoWithoutCredentials } from '../src/procedures/services.js';
import type { Procedure, RunEvent } from '../src/engine/types.js';
import { tempDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';

function recorder() {
  const events: RunEvent[] = [];
  return { events, onEvent: (e: RunEvent) => events.push(e) };
}

const simple = (log: string[], gate?: Promise<void>): Procedure => ({
  id: 'simple',
  title: 'Simple',
  summary: 'two steps',
  group: 'other',
  params: [{ name: 'dsn', type: 'string', description: 'connection string' }],
  steps: [
    {
      id: 'one',
      title: 'One',
      kind: 'action',
      async run(ctx) {
        log.push('one');
        ctx.log(`connecting with ${String(ctx.params.dsn)}`);
        // Throttled: the first update and the final one get through, the ones between do not.
        for (let i = 1; i <= 100; i++) ctx.progress({ done: i, total: 100, unit: 'items' });
        ctx.state.fromOne = 42;
      },
    },
    {
      id: 'two',
      title: 'Two',
      kind: 'verify',
      async run(ctx) {
        if (gate) {
          await new Promise<void>((resolve, reject) => {
            gate.then(resolve);
            ctx.signal.addEventListener('abort', () => reject(new Error('aborted')), { once: true });
          });
        }
        log.push('two');
        ctx.check('state carried', ctx.state.fromOne === 42);
      },
    },
  ],
});

describe('runner', () => {
  it('emits events in order and ends with a summary', async () => {
    const log: string[] = [];
    const rec = recorder();
    const summary = await runProcedure({ procedure: simple(log), params: {}, answer: headlessAnswerer({ yes: false }), journalPath: false, onEvent: rec.onEvent });
    expect(summary.exitCode).toBe(0);
    expect(log).toEqual(['one', 'two']);
    const types = rec.events.map((e) => (e.type === 'step-start' || e.type === 'step-end' ? `${e.type}:${e.stepId}` : e.type));
    expect(types).toEqual(['run-start', 'step-start:one', 'log', 'progress', 'progress', 'step-end:one', 'step-start:two', 'check', 'step-end:two', 'run-end']);
    const progress = rec.events.filter((e) => e.type === 'progress');
    expect(progress.map((e) => e.type === 'progress' && e.done)).toEqual([1, 100]);
    const last = rec.events.at(-1)!;
    expect(last.type === 'run-end' && last.summary.steps.map((s) => s.status)).toEqual(['ok', 'ok']);
  });

  it('masks a password in a connection string in events and the journal', async () => {
    const dir = tempDir();
    const journalPath = path.join(dir, 'runs', 'simple-1.jsonl');
    const rec = recorder();
    const dsn = 'postgresql://app:S3cretPass@db.example:5432/app';
    await runProcedure({ procedure: simple([]), params: { dsn }, answer: headlessAnswerer({ yes: true }), journalPath, runId: 'simple-1', onEvent: rec.onEvent, secrets: ['hunter22'] });
    const journal = fs.readFileSync(journalPath, 'utf8');
    expect(journal).not.toContain('S3cretPass');
    expect(journal).toContain('postgresql://app:***@db.example:5432/app');
    expect(JSON.stringify(rec.events)).not.toContain('S3cretPass');
    expect(fs.statSync(journalPath).mode & 0o777).toBe(0o600);
    expect(maskConnectionStrings("host=x password='a b c' user=y")).toBe('host=x password=*** user=y');
    expect(maskConnectionStrings('DefaultEndpointsProtocol=http;AccountName=a;AccountKey=abc123==;')).not.toContain('abc123');
  });

  it('an AbortSignal interrupts the running step, records it, and the run resumes there', async () => {
    const dir = tempDir();
    const journalPath = path.join(dir, 'runs', 'simple-2.jsonl');
    const log: string[] = [];
    const controller = new AbortController();
    const rec = recorder();
    const pending = runProcedure({
      procedure: simple(log, new Promise(() => {})),
      params: {},
      answer: headlessAnswerer({ yes: true }),
      journalPath,
      runId: 'simple-2',
      signal: controller.signal,
      onEvent: rec.onEvent,
    });
    await waitFor('step two to start', () => rec.events.some((e) => e.type === 'step-start' && e.stepId === 'two'));
    controller.abort();
    const summary = await pending;
    expect(summary.exitCode).toBe(130);
    expect(summary.steps.map((s) => s.status)).toEqual(['ok', 'interrupted']);
    expect(summary.hint).toContain('--resume simple-2');

    const point = readResumePoint(dir, 'simple-2');
    expect(point.completedSteps).toEqual(['one']);
    expect(point.state).toEqual({ fromOne: 42 });
    const resumed = await runProcedure({
      procedure: simple(log),
      params: {},
      answer: headlessAnswerer({ yes: true }),
      resume: { runId: 'simple-2', journalPath, state: point.state, completedSteps: point.completedSteps },
    });
    expect(resumed.exitCode).toBe(0);
    expect(log).toEqual(['one', 'two']); // step one did not run again
    const recs = readJournal(journalPath).map((r) => r.rec);
    expect(recs.filter((r) => r === 'run-end')).toHaveLength(2);
    expect(recs).toContain('resume');
  });

  it('a failed check makes the run exit 3, and later action steps do not run', async () => {
    const ran: string[] = [];
    const proc: Procedure = {
      id: 'checks',
      title: 'Checks',
      summary: '',
      group: 'verify',
      params: [],
      steps: [
        { id: 'v1', title: 'V1', kind: 'verify', run: async (ctx) => ctx.check('table app.users', false, 'missing') },
        { id: 'v2', title: 'V2', kind: 'verify', run: async (ctx) => { ran.push('v2'); ctx.check('other', true); } },
        { id: 'act', title: 'Act', kind: 'action', run: async () => { ran.push('act'); } },
      ],
    };
    const summary = await runProcedure({ procedure: proc, params: {}, answer: headlessAnswerer({ yes: true }), journalPath: false });
    expect(summary.exitCode).toBe(3);
    expect(summary.status).toBe('verification-failed');
    expect(ran).toEqual(['v2']);
    expect(summary.error).toContain('table app.users: missing');
  });

  it('a thrown error fails the run with exit 1 and the message', async () => {
    const proc: Procedure = { id: 'boom', title: 'Boom', summary: '', group: 'other', params: [], steps: [{ id: 'a', title: 'A', kind: 'action', run: async () => { throw new Error('disk full'); } }] };
    const summary = await runProcedure({ procedure: proc, params: {}, answer: headlessAnswerer({ yes: true }), journalPath: false });
    expect(summary.exitCode).toBe(1);
    expect(summary.error).toContain('disk full');
  });

  it('a destructive step is refused without the matching confirmation and runs with it', async () => {
    let ran = 0;
    const proc: Procedure = {
      id: 'danger',
      title: 'Danger',
      summary: '',
      group: 'other',
      params: [],
      steps: [{ id: 'd', title: 'Drop', kind: 'action', destructive: { what: () => 'drop database prod', confirmText: () => 'prod' }, run: async () => { ran++; } }],
    };
    const refused = await runProcedure({ procedure: proc, params: {}, answer: headlessAnswerer({ yes: true }), journalPath: false });
    expect(refused.exitCode).toBe(4);
    expect(refused.hint).toContain('--confirm prod');
    const wrong = await runProcedure({ procedure: proc, params: {}, answer: headlessAnswerer({ yes: true, confirm: ['staging'] }), journalPath: false });
    expect(wrong.exitCode).toBe(4);
    expect(ran).toBe(0);
    const ok = await runProcedure({ procedure: proc, params: {}, answer: headlessAnswerer({ yes: false, confirm: ['prod'] }), journalPath: false });
    expect(ok.exitCode).toBe(0);
    expect(ran).toBe(1);
  });

  it('dry run plans every step and runs none', async () => {
    const log: string[] = [];
    const rec = recorder();
    const summary = await runProcedure({ procedure: simple(log), params: {}, answer: headlessAnswerer({ yes: false }), dryRun: true, journalPath: '/nonexistent/never-written.jsonl', onEvent: rec.onEvent });
    expect(summary.exitCode).toBe(0);
    expect(summary.status).toBe('planned');
    expect(log).toEqual([]);
    expect(fs.existsSync('/nonexistent/never-written.jsonl')).toBe(false);
  });
});

describe('runs that go wrong outside a step still end with a summary', () => {
  const hanging = (log: string[]): Procedure => ({
    id: 'hanging',
    title: 'Hanging',
    summary: '',
    group: 'other',
    params: [],
    steps: [
      { id: 'stuck', title: 'Stuck', kind: 'action', run: () => new Promise<void>(() => log.push('stuck')) },
      { id: 'later', title: 'Later', kind: 'action', run: async () => void log.push('later') },
    ],
  });

  it('a drained event loop under a step ends the run as failed, with run-end in the journal', async () => {
    const log: string[] = [];
    const rec = recorder();
    const supervisor: RunSupervisor = {};
    const journalPath = path.join(tempDir(), 'runs', 'hanging-1.jsonl');
    const running = runProcedure({ procedure: hanging(log), params: {}, answer: headlessAnswerer({ yes: false }), journalPath, onEvent: rec.onEvent, supervisor });
    await waitFor('the stuck step to start', () => log.includes('stuck'));
    supervisor.fault!({ kind: 'drained' });
    const summary = await running;
    expect(summary).toMatchObject({ status: 'failed', exitCode: 1, error: 'step "Stuck" ended without finishing (internal error); nothing after it ran' });
    expect(log).toEqual(['stuck']);
    expect(supervisor.leftRunning).toBe(true);
    expect(supervisor.fault).toBeUndefined();
    expect(readJournal(journalPath).at(-1)).toMatchObject({ rec: 'run-end', summary: { status: 'failed' } });
    expect(rec.events.at(-1)?.type).toBe('run-end');
  });

  it('endNow writes run-end synchronously, once', async () => {
    const log: string[] = [];
    const supervisor: RunSupervisor = {};
    const journalPath = path.join(tempDir(), 'runs', 'hanging-2.jsonl');
    void runProcedure({ procedure: hanging(log), params: {}, answer: headlessAnswerer({ yes: false }), journalPath, supervisor });
    await waitFor('the stuck step to start', () => log.includes('stuck'));
    const summary = supervisor.endNow!({ kind: 'signal', signal: 'SIGINT' });
    expect(summary).toMatchObject({ status: 'interrupted', exitCode: 130 });
    expect(supervisor.endNow).toBeUndefined();
    const records = readJournal(journalPath);
    expect(records.filter((r) => r.rec === 'run-end')).toHaveLength(1);
    expect(records.at(-2)).toMatchObject({ rec: 'step-end', stepId: 'stuck', status: 'interrupted' });
  });

  it('a journal that cannot be written still gives a failed summary, not an exception', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'runs'), 'a file where the runs directory should be');
    const rec = recorder();
    const log: string[] = [];
    const summary = await runProcedure({ procedure: simple(log), params: {}, answer: headlessAnswerer({ yes: false }), journalPath: path.join(dir, 'runs', 'x.jsonl'), onEvent: rec.onEvent });
    expect(summary.status).toBe('failed');
    expect(summary.error).toContain('cannot write the journal');
    expect(log).toEqual([]);
    expect(rec.events.at(-1)?.type).toBe('run-end');
  });

  it('errorMessage says something for anything thrown', () => {
    expect(errorMessage('plain')).toBe('plain');
    expect(errorMessage(undefined)).toContain('undefined was thrown');
    expect(errorMessage(null)).toContain('null was thrown');
    expect(errorMessage({ message: 'like an error' })).toBe('like an error');
    expect(errorMessage({ code: 7 })).toContain('{"code":7}');
    expect(errorMessage(Object.create(null))).toBeTruthy();
  });

  it('repository URLs lose their credentials before they are journaled', () => {
    expect(repoWithoutCredentials('file:///srv/repo')).toEqual({ url: 'file:///srv/repo', dropped: false });
    expect(repoWithoutCredentials('s3://b/p?region=x&accessKeyId=A&secretAccessKey=S&sessionToken=T')).toEqual({ url: 's3://b/p?region=x', dropped: true });
    expect(repoWithoutCredentials('azure://c/p?account=a&accountKey=K&sas=Z')).toEqual({ url: 'azure://c/p?account=a', dropped: true });
  });
});

describe('params', () => {
  const proc: Procedure = {
    id: 'p',
    title: 'P',
    summary: '',
    group: 'other',
    steps: [],
    params: [
      { name: 'jobs', type: 'number', description: 'parallel jobs', default: 2 },
      { name: 'mode', type: 'choice', choices: ['new', 'replace'], description: 'mode', required: true },
      { name: 'tables', type: 'list', description: 'tables' },
      { name: 'pgdata', type: 'string', description: 'data dir', env: 'PGDATA' },
    ],
  };
  it('coerces types, reads env, and names every bad flag with the fix', () => {
    const ok = resolveParams(proc, { mode: 'new', tables: ['a,b', 'c'] }, { PGDATA: '/data' });
    expect(ok.errors).toEqual([]);
    expect(ok.params).toEqual({ jobs: 2, mode: 'new', tables: ['a', 'b', 'c'], pgdata: '/data' });
    const bad = resolveParams(proc, { jobs: 'many', mode: 'delete', bogus: 'x' }, {});
    expect(bad.errors.join('\n')).toContain('--jobs: expected a number, got "many"');
    expect(bad.errors.join('\n')).toContain('--mode: "delete" is not one of: new, replace');
    expect(bad.errors.join('\n')).toContain('unknown option --bogus for procedure p; its options are: --jobs, --mode, --tables, --pgdata');
    expect(resolveParams(proc, {}, {}).errors).toEqual(['missing --mode: mode']);
  });
  it('parses flag forms strictly against the declarations', () => {
    const decl: CommandDecl = {
      name: 't',
      summary: 'test',
      usage: ['t'],
      options: [
        { name: 'a', type: 'string', help: 'a' },
        { name: 'b', type: 'string', help: 'b' },
        { name: 'yes', type: 'boolean', help: 'yes' },
        { name: 'json', type: 'boolean', help: 'json', negatable: true },
        { name: 'user', short: 'U', type: 'string', help: 'user' },
      ],
    };
    const { flags, positionals } = parseCommand(decl, ['--a', '1', '--b=2', '--yes', '--no-json', '-U', 'me', 'pos']);
    expect(flags).toEqual({ a: '1', b: '2', yes: true, json: false, user: 'me' });
    expect(positionals).toEqual(['pos']);
    expect(() => parseCommand(decl, ['--bogus', 'x'])).toThrow(/^unknown option --bogus for t$/);
    expect(() => parseCommand(decl, ['--a'])).toThrow(/^--a needs a value$/);
    expect(() => parseCommand(decl, ['--a', '--yes'])).toThrow(/^--a needs a value$/);
    expect(() => parseCommand(decl, ['--yes=1'])).toThrow(/^--yes takes no value$/);
    try {
      parseCommand(decl, ['--bogus']);
    } catch (err) {
      expect(err).toBeInstanceOf(CliUsageError);
      expect((err as CliUsageError).exitCode).toBe(2);
      expect((err as CliUsageError).hint).toContain('pgrunbook t --help');
    }
  });
});
