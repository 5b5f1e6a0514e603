// The app configures itself: the connection screen against the shared cluster (test, save as a
// profile with the password in the password file, switch to it, pick it on Home), forms that
// know the profile and the cluster (pre-filled fields, pick lists of databases, tables and
// dumps read live, typing that replaces a pre-filled value, a failed PITR's form that comes back
// as it was), and a run interrupted by Ctrl-C resumed from Home's list.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cleanup, render } from 'ink-testing-library';
import { gate, key, poll, stripAnsi, waitForFrame } from './helpers/ink.js';
import { tempDir } from './helpers/temp.js';
import { sharedCluster } from './helpers/cluster.js';
import { App } from '../src/app.js';
import { loadBuiltInProcedures } from '../src/procedures/index.js';
import type { Procedure } from '../src/engine/types.js';
import { readJournal } from '../src/engine/journal.js';
import { buildServices, type ProcedureServices } from '../src/procedures/services.js';
import { openProfileStore } from '../src/config/store.js';
import type { Profile } from '../src/config/profile.js';
import { menuOrder } from '../src/screens/home.js';
import { formReducer, initFormState } from '../src/screens/params-form.js';
import { openRepository } from '../src/repo/repository.js';

const allProcedures = await loadBuiltInProcedures();

const KEYS = { enter: '\r', down: '\x1B[B', up: '\x1B[A', left: '\x1B[D', esc: '\x1B', ctrlC: '\x03', ctrlU: '\x15', ctrlT: '\x14', ctrlS: '\x13' };

let work: string;
let db: string;
const cluster = () => sharedCluster();

/** An environment of its own: fresh config and state directories, password file, HOME. */
function freshEnv(name: string): NodeJS.ProcessEnv {
  const dir = path.join(work, name);
  fs.mkdirSync(dir, { recursive: true });
  return {
    NO_COLOR: '1',
    HOME: dir,
    PGRUNBOOK_CONFIG_DIR: path.join(dir, 'config'),
    PGPASSFILE: path.join(dir, 'pgpass'),
    PATH: process.env.PATH,
  };
}

function renderApp(procedures: Procedure[], env: NodeJS.ProcessEnv, stateDir: string, services: ProcedureServices, profileName?: string) {
  const exits: number[] = [];
  const app = render(<App procedures={procedures} stateDir={stateDir} env={env} services={services} profileName={profileName} onExit={(c) => exits.push(c)} progressIntervalMs={0} abortGraceMs={2000} />);
  const frame = (p: string | RegExp | ((f: string) => boolean), ms = 15_000) => waitForFrame(app.lastFrame, p, ms);
  return { ...app, exits, frame };
}

async function saveProfile(env: NodeJS.ProcessEnv, name: string, profile: Profile) {
  (await openProfileStore(env)).set(name, profile);
}

beforeAll(async () => {
  work = tempDir('pgrunbook-tui-connect-');
  db = await cluster().createDatabase('tuiconnect');
  await cluster().query('CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 50) g; ANALYZE items', [], db);
  await cluster().query('CREATE TABLE orders (id int)', [], db);
});
afterAll(async () => {
  await cluster().query(`DROP DATABASE IF EXISTS "${db}"`).catch(() => undefined);
});
afterEach(() => {
  cleanup();
});

describe('the connection screen', () => {
  it('tests the connection live, saves a profile without its password, switches to it, and offers it on Home', async () => {
    const env = freshEnv('connect');
    const c = cluster();
    const repoDir = path.join(work, 'connect', 'repo');
    // Nothing configured: the app starts on PG* defaults.
    const app = renderApp(allProcedures, env, path.join(work, 'connect', 'state'), buildServices({}, env, {}), undefined);
    await app.frame('no profile');
    app.stdin.write('c');
    await app.frame('Connect to a cluster');

    // Each field is selected when focused: what is typed replaces the pre-filled value.
    const fill = async (label: RegExp, value: string) => {
      await app.frame((f) => label.test(f));
      app.stdin.write(value);
      await app.frame((f) => f.includes(value) || value.startsWith('s3'));
      app.stdin.write(KEYS.down);
    };
    await fill(/› profile name/, 'ops');
    await fill(/› host/, c.host);
    await fill(/› port/, String(c.port));
    await fill(/› user/, c.user);
    await fill(/› database/, db);
    await fill(/› password/, 's3cret-pw');
    await fill(/› data directory/, '/nonexistent/data');
    await fill(/› repository/, `file://${repoDir}`);
    let frame = await app.frame(/› server control/);
    expect(frame).toContain('[pg_ctl]');
    expect(frame).toContain('•••••••••'); // the password, masked
    expect(frame).toContain('Ctrl-T test · Ctrl-S save');

    app.stdin.write(KEYS.ctrlT);
    frame = await app.frame(/✓ identity|✗ repository|! identity/, 20_000);
    expect(frame).toMatch(/✓ server\s+PostgreSQL 15/);
    expect(frame).toMatch(/role\s+postgres \(superuser\)/);
    expect(frame).toMatch(/archiving/);
    expect(frame).toMatch(/✓ repository\s+.*reachable/);
    expect(frame).toMatch(/! identity\s+no identity yet/);
    // The data directory typed is not the server's: the test says so.
    expect(frame).toMatch(/✗ data directory\s+the server runs from/);

    // Fix it, then save.
    app.stdin.write(KEYS.up);
    app.stdin.write(KEYS.up);
    await app.frame(/› data directory/);
    app.stdin.write(KEYS.ctrlU);
    await app.frame((f) => !f.includes('/nonexistent/data'));
    app.stdin.write(KEYS.ctrlS);
    frame = await app.frame(/profile ops · socket .* as postgres, database tuicon/);
    expect(app.frames.map(stripAnsi).some((f) => f.includes('✓ saved profile ops in'))).toBe(true);

    const saved = JSON.parse(fs.readFileSync(path.join(env.PGRUNBOOK_CONFIG_DIR!, 'profiles.json'), 'utf8'));
    expect(saved.profiles.ops).toMatchObject({ connection: { host: c.host, port: c.port, user: 'postgres', database: db }, repo: `file://${repoDir}`, server: { method: 'pg_ctl' } });
    expect(JSON.stringify(saved)).not.toContain('s3cret-pw');
    const pgpass = fs.readFileSync(env.PGPASSFILE!, 'utf8');
    expect(pgpass).toBe(`localhost:${c.port}:*:postgres:s3cret-pw\n`);
    expect(fs.statSync(env.PGPASSFILE!).mode & 0o777).toBe(0o600);
    expect(fs.statSync(env.PGPASSFILE!).uid).toBe(process.getuid!());
    expect(app.frames.map(stripAnsi).join('\n')).not.toContain('s3cret-pw');

    // The profile picker lists it, marked in use.
    app.stdin.write('p');
    frame = await app.frame(/› ops\s+in use/);
    app.stdin.write(KEYS.esc);
    await app.frame('Enter choose');
  });

  it('switches between saved profiles without a restart, and says why one does not load', async () => {
    const env = freshEnv('switch');
    const c = cluster();
    await saveProfile(env, 'alpha', { connection: { host: c.host, port: c.port, user: 'postgres', database: 'postgres' } });
    await saveProfile(env, 'beta', { connection: { host: c.host, port: c.port, user: 'postgres', database: db } });
    const app = renderApp(allProcedures, env, path.join(work, 'switch', 'state'), buildServices({}, env, {}), undefined);
    await app.frame('no profile');
    app.stdin.write('p');
    await app.frame(/› alpha/);
    app.stdin.write(KEYS.down);
    await app.frame(/› beta/);
    app.stdin.write(KEYS.enter);
    const frame = await app.frame(/profile beta · socket .* as postgres, database tuico/);
    expect(frame).toContain('✓ using profile beta');
  });
});

describe('forms that know', () => {
  let env: NodeJS.ProcessEnv;
  let repoUrl: string;
  let services: ProcedureServices;

  beforeAll(async () => {
    env = freshEnv('forms');
    const c = cluster();
    repoUrl = `file://${path.join(work, 'forms', 'repo')}`;
    const repo = await openRepository(repoUrl, {});
    try {
      // A dump of the database as backup-logical commits one (the list reads the catalog).
      const obj = await repo.putObject(repo.dumpKey(db, '20261201T101500Z', `${db}.dump`), Buffer.alloc(3 * 1024 * 1024, 1));
      await repo.commitDump({ id: '20261201T101500Z', database: db, startTime: '2026-12-01T10:15:00Z', stopTime: '2026-12-01T10:15:09Z', size: obj.size, object: `${db}.dump`, format: 'custom' });
      // And a base backup (metadata only: the list reads the catalog, nothing restores it here).
      await repo.commitBaseBackup({ id: '20261201T090000Z', startLsn: '0/2000028', stopLsn: '0/2000100', startTime: '2026-12-01T09:00:00Z', stopTime: '2026-12-01T09:00:42Z', timeline: 1, size: 5 * 1024 * 1024 });
    } finally {
      await repo.close();
    }
    const profile: Profile = {
      connection: { host: c.host, port: c.port, user: 'postgres', database: 'postgres' },
      databases: [db],
      criticalTables: [{ database: db, table: 'public.items', minRows: 1 }],
      repo: repoUrl,
      pgdata: path.join(work, 'forms', 'no-such-data'),
    };
    await saveProfile(env, 'forms', profile);
    services = buildServices({}, env, profile, 'forms');
  });

  const open = async (app: ReturnType<typeof renderApp>, id: string) => {
    const index = menuOrder(allProcedures).findIndex((p) => p.id === id);
    await app.frame('Enter choose');
    for (let i = 0; i < index; i++) app.stdin.write('j');
    await app.frame(new RegExp(`› ${id}\\b`));
    app.stdin.write(KEYS.enter);
    return app.frame(`parameters (${id})`);
  };

  it('pre-fills from the profile, lists databases, tables and dumps, and typing replaces a pre-filled value', async () => {
    const app = renderApp(allProcedures, env, path.join(work, 'forms', 'state'), services, 'forms');
    let frame = await open(app, 'table-restore');
    expect(frame).toMatch(new RegExp(`› database\\s*\\*\\s+${db}`));
    expect(frame).toMatch(/type replaces · ← edit · Ctrl-U clear/);
    expect(frame).toContain('Ctrl-T list databases');

    // The first key replaces the pre-filled value (it does not append).
    app.stdin.write('x');
    frame = await app.frame(/› database\s*\*\s+x\s/);
    expect(frame).not.toContain(`${db}x`);
    // Ctrl-T: the databases, read from the server, with their size; typing filters.
    app.stdin.write(KEYS.ctrlT);
    await app.frame('filter:');
    app.stdin.write('tuiconn');
    frame = await app.frame(new RegExp(`› ${db}\\s+[\\d.]+ (KiB|MiB)`));
    app.stdin.write(KEYS.enter);
    frame = await app.frame(/› table/);
    expect(frame).toMatch(new RegExp(`database\\s*\\*\\s+${db}`));

    // The table field is empty: Enter lists the tables of that database, largest first.
    app.stdin.write(KEYS.enter);
    await app.frame('filter:');
    frame = await app.frame(/› public\.items/);
    expect(frame).toMatch(new RegExp(`tables of ${db}`));
    expect(frame).toMatch(/› public\.items\s+~50 rows/);
    app.stdin.write(KEYS.enter);
    // Next comes --tables (several tables, with --at); the dump field is after it.
    frame = await app.frame(/› tables/);
    app.stdin.write(KEYS.down);
    frame = await app.frame(/› dump/);
    expect(frame).toMatch(/table\s+public\.items/);

    // Dumps of that database from the repository, with time and size.
    app.stdin.write(KEYS.enter);
    await app.frame('filter:');
    frame = await app.frame(/› 20261201T101500Z/);
    expect(frame).toMatch(/20261201T101500Z\s+2026-12-01 10:15:09 UTC · 3\.0 MiB/);
    app.stdin.write(KEYS.enter);
    frame = await app.frame(/dump\s+20261201T101500Z/);

    // Esc and back: the form is as it was left.
    app.stdin.write(KEYS.esc);
    await app.frame('Enter choose');
    app.stdin.write(KEYS.enter);
    frame = await app.frame('parameters (table-restore)');
    expect(frame).toMatch(/table\s+public\.items/);
    expect(frame).toMatch(/dump\s+20261201T101500Z/);
  });

  it("shows the profile's critical tables in pitr's form, and a failed PITR's form comes back as it was", async () => {
    const app = renderApp(allProcedures, env, path.join(work, 'forms', 'state'), services, 'forms');
    let frame = await open(app, 'pitr');
    expect(frame).toMatch(new RegExp(`critical-tables\\s+${db}:public\\.items:1`));
    expect(frame).toMatch(new RegExp(`databases\\s+${db}`));
    // A target typed (not picked), and a base backup that does not exist: the run fails.
    app.stdin.write('2026-12-01T10:20:00Z');
    await app.frame(/target\s*\*\s+2026-12-01T10:20:00Z/);
    app.stdin.write(KEYS.down);
    app.stdin.write(KEYS.down);
    await app.frame(/› backup/);
    // The base backups, with their time, timeline and size; Esc leaves the field as it was.
    app.stdin.write(KEYS.ctrlT);
    frame = await app.frame(/› 20261201T090000Z/);
    expect(frame).toMatch(/20261201T090000Z\s+2026-12-01 09:00:42 UTC · timeline 1 · 5\.0 MiB/);
    app.stdin.write(KEYS.esc);
    await app.frame(/› backup/);
    app.stdin.write('no-such-backup');
    await app.frame(/backup\s+no-such-backup/);
    app.stdin.write(KEYS.down);
    await app.frame(/› databases/);
    // Typing over the pre-filled list replaces it.
    app.stdin.write('postgres');
    await app.frame(/› databases\s+postgres\s/);
    for (let i = 0; i < 6; i++) app.stdin.write(KEYS.down);
    await app.frame(/› ▶ Run pitr/);
    app.stdin.write(KEYS.enter);
    frame = await app.frame('Enter back ·', 60_000);
    expect(frame).toMatch(/FAILED/);
    app.stdin.write(KEYS.enter);
    await app.frame('Enter choose');
    app.stdin.write(KEYS.enter);
    frame = await app.frame('parameters (pitr)');
    expect(frame).toMatch(/target\s*\*\s+2026-12-01T10:20:00Z/);
    expect(frame).toMatch(/backup\s+no-such-backup/);
    expect(frame).toMatch(/databases\s+postgres\s/);
  });

  it('replaces on the first key, edits after ←, and clears with Backspace while selected (reducer)', () => {
    const proc = allProcedures.find((p) => p.id === 'table-restore')!;
    let s = initFormState(proc, {}, { database: 'app' });
    expect(s.values[0]).toBe('app');
    s = formReducer(s, { type: 'key', input: '2', key: key() });
    s = formReducer(s, { type: 'key', input: '4', key: key() });
    expect(s.values[0]).toBe('24');
    // Away and back: selected again; the next key replaces ("24" then "0" is "0", not "240").
    s = formReducer(s, { type: 'key', input: '', key: key({ downArrow: true }) });
    s = formReducer(s, { type: 'key', input: '', key: key({ upArrow: true }) });
    s = formReducer(s, { type: 'key', input: '0', key: key() });
    expect(s.values[0]).toBe('0');
    s = formReducer(s, { type: 'key', input: '', key: key({ downArrow: true }) });
    s = formReducer(s, { type: 'key', input: '', key: key({ upArrow: true }) });
    s = formReducer(s, { type: 'key', input: '', key: key({ leftArrow: true }) });
    s = formReducer(s, { type: 'key', input: '1', key: key() });
    expect(s.values[0]).toBe('01');
    s = formReducer(s, { type: 'key', input: '', key: key({ downArrow: true }) });
    s = formReducer(s, { type: 'key', input: '', key: key({ upArrow: true }) });
    s = formReducer(s, { type: 'key', input: '', key: key({ backspace: true }) });
    expect(s.values[0]).toBe('');
  });
});

describe('resume from Home', () => {
  it('lists the run Ctrl-C interrupted and continues it in the app, with the profile its journal names', async () => {
    const env = freshEnv('resume');
    const stateDir = path.join(work, 'resume', 'state');
    const c = cluster();
    const profile: Profile = { connection: { host: c.host, port: c.port, user: 'postgres', database: 'postgres' } };
    await saveProfile(env, 'night', profile);
    const ran: string[] = [];
    const release = gate();
    const proc: Procedure = {
      id: 'two-steps',
      title: 'Two steps',
      summary: 'one, then a slow one',
      group: 'other',
      params: [],
      steps: [
        { id: 'one', title: 'Step one', kind: 'action', run: async () => void ran.push('one') },
        {
          id: 'two',
          title: 'Step two',
          kind: 'action',
          async run(ctx) {
            ran.push('two');
            // Waits for Ctrl-C the first time; the resumed run finds the gate open.
            await Promise.race([release.promise, new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason), { once: true }))]);
          },
        },
      ],
    };
    const first = renderApp([proc], env, stateDir, buildServices({}, env, profile, 'night'), 'night');
    await first.frame('› two-steps');
    first.stdin.write(KEYS.enter);
    await first.frame((f) => ran.includes('two') && f.includes('Step two'));
    first.stdin.write(KEYS.ctrlC);
    await poll(() => (first.exits.length ? first.exits[0] : undefined), () => `no exit; last frame:\n${stripAnsi(first.lastFrame() ?? '')}`, 15_000);
    expect(first.exits[0]).toBe(130);
    first.unmount();

    const runId = fs.readdirSync(path.join(stateDir, 'runs'))[0].replace(/\.jsonl$/, '');
    const journal = path.join(stateDir, 'runs', `${runId}.jsonl`);
    const start = readJournal(journal).find((r) => r.rec === 'run-start');
    expect(start?.rec === 'run-start' && start.context?.profile).toBe('night');

    release.release();
    // A new app, started without the profile: the resume brings the journal's.
    const second = renderApp([proc], env, stateDir, buildServices({}, env, {}), undefined);
    await second.frame('r resume');
    second.stdin.write('r');
    let frame = await second.frame(new RegExp(`› ${runId}`));
    expect(frame).toMatch(/interrupted · 1 step done · profile night · 20\d\d-/);
    second.stdin.write(KEYS.enter);
    frame = await second.frame('Enter back ·', 20_000);
    expect(frame).toMatch(/exit 0/);
    expect(ran).toEqual(['one', 'two', 'two']);
    const records = readJournal(journal);
    expect(records.filter((r) => r.rec === 'resume')).toHaveLength(1);
    expect(records.filter((r) => r.rec === 'step-start').map((r) => r.rec === 'step-start' && r.stepId)).toEqual(['one', 'two', 'two']);
    expect(records.at(-1)?.rec === 'run-end' && records.at(-1)).toMatchObject({ summary: { status: 'ok' } });

    // Finished: it is no longer offered.
    second.stdin.write(KEYS.enter);
    await second.frame('Enter choose');
    second.stdin.write('r');
    await second.frame('no unfinished runs on this host');
  });
});
