// table-restore for real: a dump made by the backup-logical procedure into a file:// repository,
// one table brought back through the built CLI on the run's shared cluster. A dropped table
// returns as <name>_restored_<stamp>; replace mode restores rows lost to a bad DELETE, only with
// the typed confirmation; a failure injected mid-copy leaves the live rows as they were; and the
// temporary database is gone after success, refusal and failure alike.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonLines, runCli, tempDir as makeTempDir } from './helpers/cli.js';
import { sharedCluster } from './helpers/cluster.js';
import { parseTableName, similarNames, tempDatabaseName } from '../src/procedures/table-restore.js';

const cluster = sharedCluster();
const conn = ['--host', cluster.host, '--port', String(cluster.port), '--user', cluster.user];
const toDrop: string[] = [];
const dirs: string[] = [];
/** A temporary directory removed after the file's tests. */
function tempDir(prefix: string): string {
  const dir = makeTempDir(prefix);
  dirs.push(dir);
  return dir;
}
const stateEnv = { PGRUNBOOK_STATE_DIR: path.join(tempDir('pgrunbook-tr-state-'), 'state') };

const summaryOf = (stdout: string) => jsonLines(stdout).at(-1)!.summary;
const stepStatuses = (summary: any) => Object.fromEntries(summary.steps.map((s: any) => [s.id, s.status]));
const filesIn = (dir: string) => fs.readdirSync(dir, { recursive: true }).map(String);

/** Every row of a table as text, in a stable order: contents compared exactly. */
async function rowsOf(db: string, table: string, orderBy: string): Promise<string[]> {
  const rows = await cluster.query<{ r: string }>(`SELECT t::text AS r FROM ${table} t ORDER BY ${orderBy}`, [], db);
  return rows.map((x) => x.r);
}

async function databaseNames(): Promise<string[]> {
  return (await cluster.query<{ datname: string }>(`SELECT datname FROM pg_database ORDER BY 1`)).map((r) => r.datname);
}

afterAll(async () => {
  for (const db of toDrop) await cluster.query(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`).catch(() => {});
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

describe('table-restore from a backup-logical dump', () => {
  let db: string;
  let repoUrl: string;
  let workDir: string;
  let notesBefore: string[];
  let ordersBefore: string[];

  beforeAll(async () => {
    db = await cluster.createDatabase('tr_app');
    toDrop.push(db);
    await cluster.query(
      `CREATE TYPE public.status AS ENUM ('new', 'paid', 'shipped');
       CREATE TABLE public.orders (id serial PRIMARY KEY, customer text NOT NULL, amount numeric(10,2), status public.status DEFAULT 'new',
                                   created timestamptz NOT NULL DEFAULT '2026-01-01 00:00+00', note text COLLATE "C", total numeric GENERATED ALWAYS AS (amount * 2) STORED);
       INSERT INTO public.orders (customer, amount, status, created, note)
            SELECT 'customer ' || g, g / 7.0, (ARRAY['new','paid','shipped'])[1 + g % 3]::public.status, '2026-01-01 00:00+00'::timestamptz + g * interval '1 minute',
                   CASE WHEN g % 5 = 0 THEN NULL ELSE E'tab\\there, newline\\nthere, quote '' and backslash \\\\ ' || g END
              FROM generate_series(1, 20000) g;
       CREATE TABLE public.order_lines (order_id int REFERENCES public.orders (id) ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED, qty int);
       CREATE TABLE public.notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text, tags text[]);
       INSERT INTO public.notes (body, tags) SELECT 'note ' || g, ARRAY['a', 'b' || g] FROM generate_series(1, 3000) g;
       CREATE TABLE public.audit (id int, what text, owner_id int REFERENCES public.notes (id) ON DELETE CASCADE);`,
      [],
      db,
    );
    notesBefore = await rowsOf(db, 'public.notes', 'id');
    ordersBefore = await rowsOf(db, 'public.orders', 'id');
    repoUrl = `file://${tempDir('pgrunbook-tr-repo-')}`;
    const r = await runCli(['--procedure', 'backup-logical', ...conn, '--databases', db, '--repo', repoUrl, '--json'], stateEnv);
    expect(r.exitCode, r.stderr + r.stdout.slice(-2000)).toBe(0);
    workDir = tempDir('pgrunbook-tr-work-');
  });

  it('brings a dropped table back as <name>_restored_<stamp> (new-table mode), then drops the temporary database', async () => {
    await cluster.query(`DROP TABLE public.notes CASCADE`, [], db);
    const r = await runCli(['--procedure', 'table-restore', ...conn, '--database', db, '--table', 'notes', '--repo', repoUrl, '--work-dir', workDir, '--json'], stateEnv);
    const summary = summaryOf(r.stdout);
    expect(r.exitCode, JSON.stringify(summary)).toBe(0);
    expect(stepStatuses(summary)).toEqual({ preflight: 'ok', download: 'ok', 'restore-temp': 'ok', compare: 'ok', copy: 'ok', verify: 'ok', cleanup: 'ok' });
    const tables = await cluster.query<{ relname: string }>(`SELECT relname FROM pg_class WHERE relname LIKE 'notes%' AND relkind = 'r'`, [], db);
    expect(tables).toHaveLength(1);
    const restored = tables[0].relname;
    expect(restored).toMatch(/^notes_restored_\d{12}$/);
    expect(await rowsOf(db, `public.${restored}`, 'id')).toEqual(notesBefore);
    expect(summary.checks.find((c: any) => c.name === 'live table').detail).toContain('does not exist');
    expect(summary.checks.find((c: any) => c.name === `contents of public.${restored}`)).toMatchObject({ ok: true });
    expect(summary.checks.find((c: any) => c.name === 'temporary database dropped')).toMatchObject({ ok: true });
    const logs = jsonLines(r.stdout).filter((e) => e.type === 'log').map((e) => e.message as string);
    expect(logs).toContain('public.notes in dump.json: 3000 rows');
    expect(logs).toContain(`public.notes in ${db} now: does not exist`);
    expect(await databaseNames()).not.toContain(tempDatabaseName(summary.runId));
    expect(filesIn(workDir)).toEqual([]);
  });

  it('replace mode: without --confirm exit 4, nothing changed, temporary database gone; with it the rows lost to a bad DELETE are back', async () => {
    await cluster.query(`DELETE FROM public.orders WHERE id % 4 = 0 OR customer LIKE 'customer 19%'`, [], db);
    const damaged = await rowsOf(db, 'public.orders', 'id');
    expect(damaged.length).toBeLessThan(ordersBefore.length);

    const refused = await runCli(['--procedure', 'table-restore', ...conn, '--database', db, '--table', 'public.orders', '--mode', 'replace', '--repo', repoUrl, '--work-dir', workDir, '--json'], stateEnv);
    const s1 = summaryOf(refused.stdout);
    expect(refused.exitCode, JSON.stringify(s1)).toBe(4);
    expect(stepStatuses(s1)).toMatchObject({ compare: 'ok', copy: 'refused', verify: 'pending', cleanup: 'pending' });
    const request = jsonLines(refused.stdout).find((e) => e.type === 'confirm-request')!;
    expect(request.destructive).toEqual({
      what: expect.stringMatching(new RegExp(`^delete all ${damaged.length} rows of public\\.orders in ${db} and insert the 20000 rows from the dump of \\d{4}-`)),
      expected: `${db}.public.orders`,
    });
    expect(s1.error).toContain('Nothing was changed');
    expect(s1.hint).toContain(`--confirm ${db}.public.orders`);
    expect(await rowsOf(db, 'public.orders', 'id')).toEqual(damaged);
    expect(await databaseNames()).not.toContain(tempDatabaseName(s1.runId));

    const r = await runCli(
      ['--procedure', 'table-restore', ...conn, '--database', db, '--table', 'public.orders', '--mode', 'replace', '--confirm', `${db}.public.orders`, '--repo', repoUrl, '--work-dir', workDir, '--json'],
      stateEnv,
    );
    const summary = summaryOf(r.stdout);
    expect(r.exitCode, JSON.stringify(summary)).toBe(0);
    expect(stepStatuses(summary)).toEqual({ preflight: 'ok', download: 'ok', 'restore-temp': 'ok', compare: 'ok', copy: 'ok', verify: 'ok', cleanup: 'ok' });
    expect(summary.checks.find((c: any) => c.name === 'restored rows')).toMatchObject({ ok: true, detail: '20000 rows, as dump.json records' });
    expect(summary.checks.find((c: any) => c.name === 'rows in public.orders')).toMatchObject({ ok: true, detail: '20000 rows, as restored from the dump' });
    // Counts and contents: exactly the rows from before the bad DELETE (the generated column recomputed alike).
    expect(await rowsOf(db, 'public.orders', 'id')).toEqual(ordersBefore);
    const logs = jsonLines(r.stdout).filter((e) => e.type === 'log').map((e) => e.message as string);
    expect(logs).toContain(`the live table has ${ordersBefore.length - damaged.length} fewer rows than the dump`);
    expect(logs.some((l) => l.startsWith(`committed: deleted ${damaged.length} rows, inserted 20000 rows`))).toBe(true);
    expect(await databaseNames()).not.toContain(tempDatabaseName(summary.runId));
    expect(filesIn(workDir)).toEqual([]);
  });

  it('a failure injected mid-copy (replace mode) exits 1, leaves the live rows unchanged and the temporary database gone', async () => {
    await cluster.query(`DELETE FROM public.orders WHERE id > 15000`, [], db);
    const damaged = await rowsOf(db, 'public.orders', 'id');
    const r = await runCli(
      ['--procedure', 'table-restore', ...conn, '--database', db, '--table', 'public.orders', '--mode', 'replace', '--confirm', `${db}.public.orders`, '--repo', repoUrl, '--work-dir', workDir, '--json'],
      { ...stateEnv, PGRUNBOOK_FAULT: 'table-restore:copy' },
    );
    const summary = summaryOf(r.stdout);
    expect(r.exitCode, JSON.stringify(summary)).toBe(1);
    expect(stepStatuses(summary)).toMatchObject({ copy: 'failed', verify: 'pending', cleanup: 'pending' });
    // Rows had reached the server's COPY (pg_stat_progress_copy) when the copy failed.
    const received = /injected fault \(PGRUNBOOK_FAULT=table-restore:copy\) after \d+ bytes of rows had been sent and the server had received (\d+) rows/.exec(summary.error);
    expect(received, summary.error).not.toBeNull();
    expect(Number(received![1])).toBeGreaterThan(0);
    expect(summary.error).toContain('the live rows of public.orders are unchanged');
    expect(await rowsOf(db, 'public.orders', 'id')).toEqual(damaged);
    expect(await databaseNames()).not.toContain(tempDatabaseName(summary.runId));
    // No session of the aborted copy is left holding the table.
    const locks = await cluster.query(`SELECT count(*)::int AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'orders' AND l.pid <> pg_backend_pid()`, [], db);
    expect(locks).toEqual([{ n: 0 }]);
    expect(filesIn(workDir)).toEqual([]);
  });

  it('refuses a table that is not in the dump, naming similar ones, before creating anything (exit 1)', async () => {
    const r = await runCli(['--procedure', 'table-restore', ...conn, '--database', db, '--table', 'public.ordrs', '--repo', repoUrl, '--work-dir', workDir, '--json'], stateEnv);
    expect(r.exitCode).toBe(1);
    const summary = summaryOf(r.stdout);
    expect(stepStatuses(summary)).toMatchObject({ preflight: 'failed', download: 'pending' });
    expect(summary.error).toContain('table public.ordrs is not in dump');
    expect(summary.error).toContain('similar tables in the dump: public.orders');
    expect(await databaseNames()).not.toContain(tempDatabaseName(summary.runId));
    expect(filesIn(workDir)).toEqual([]);
  });

  it('refuses replace mode when other tables would lose rows through ON DELETE CASCADE', async () => {
    await cluster.query(`CREATE TABLE public.shipments (order_id int REFERENCES public.orders (id) ON DELETE CASCADE)`, [], db);
    try {
      const r = await runCli(['--procedure', 'table-restore', ...conn, '--database', db, '--table', 'orders', '--mode', 'replace', '--confirm', `${db}.public.orders`, '--repo', repoUrl, '--json'], stateEnv);
      expect(r.exitCode).toBe(1);
      const summary = summaryOf(r.stdout);
      expect(stepStatuses(summary)).toMatchObject({ preflight: 'failed' });
      expect(summary.error).toContain('shipments (ON DELETE CASCADE)');
      expect(summary.error).toContain('--mode new-table');
    } finally {
      await cluster.query(`DROP TABLE public.shipments`, [], db);
    }
  });
});

describe('table names', () => {
  it('parses SCHEMA.TABLE, a bare TABLE (schema public) and quoted names with dots and quotes', () => {
    expect(parseTableName('orders')).toEqual({ schema: 'public', table: 'orders' });
    expect(parseTableName('sales.Orders')).toEqual({ schema: 'sales', table: 'Orders' });
    expect(parseTableName('"odd schema"."Mixed ""Quoted"" .name"')).toEqual({ schema: 'odd schema', table: 'Mixed "Quoted" .name' });
    expect(parseTableName('a.b.c')).toHaveProperty('error');
    expect(parseTableName('"open')).toHaveProperty('error');
  });

  it('suggests similar names, best first', () => {
    expect(similarNames('public.ordrs', ['public.orders', 'public.order_lines', 'public.notes', 'audit.log'])).toEqual(['public.orders']);
    expect(similarNames('public.order', ['public.orders', 'public.order_lines', 'public.notes'])).toEqual(['public.order_lines', 'public.orders']);
  });
});
