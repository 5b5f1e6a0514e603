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
const rolesToDrop: string[] = [];
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
  for (const role of rolesToDrop) await cluster.query(`DROP ROLE IF EXISTS "${role}"`).catch(() => {});
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
      means: 'the table, as DATABASE.SCHEMA.TABLE',
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

  it('replace mode with an ON DELETE CASCADE reference: refused before any change while a referenced key is missing from the dump; done, the referencing rows untouched, once every key comes back', async () => {
    await cluster.query(
      `CREATE TABLE public.shipments (order_id int REFERENCES public.orders (id) ON DELETE CASCADE, note text);
       INSERT INTO public.orders (id, customer) VALUES (30001, 'after the dump');
       INSERT INTO public.shipments VALUES (1, 'one'), (2, 'two'), (30001, 'new order');`,
      [],
      db,
    );
    try {
      const ordersNow = await rowsOf(db, 'public.orders', 'id');
      const args = ['--procedure', 'table-restore', ...conn, '--database', db, '--table', 'orders', '--mode', 'replace', '--confirm', `${db}.public.orders`, '--repo', repoUrl, '--work-dir', workDir, '--json'];
      const refused = await runCli(args, stateEnv);
      const s1 = summaryOf(refused.stdout);
      expect(refused.exitCode, JSON.stringify(s1)).toBe(3);
      expect(stepStatuses(s1)).toMatchObject({ compare: 'failed', copy: 'pending' });
      const check = s1.checks.find((c: any) => c.name === 'keys referenced by public.shipments (shipments_order_id_fkey)');
      expect(check).toMatchObject({ ok: false });
      expect(check.detail).toContain('1 id value(s) that public.shipments references (foreign key shipments_order_id_fkey) are not in the dump, e.g. 30001');
      expect(check.detail).toContain('Nothing was changed');
      // No confirmation was even asked for, nothing changed.
      expect(jsonLines(refused.stdout).some((e) => e.type === 'confirm-request')).toBe(false);
      expect(await rowsOf(db, 'public.orders', 'id')).toEqual(ordersNow);
      expect(await databaseNames()).not.toContain(tempDatabaseName(s1.runId));

      // The new order's shipment goes: every key still referenced (1 and 2) is in the dump.
      await cluster.query(`DELETE FROM public.shipments WHERE order_id = 30001`, [], db);
      const r = await runCli(args, stateEnv);
      const summary = summaryOf(r.stdout);
      expect(r.exitCode, JSON.stringify(summary)).toBe(0);
      expect(summary.checks.find((c: any) => c.name === 'keys referenced by public.shipments (shipments_order_id_fkey)')).toMatchObject({ ok: true });
      expect(await rowsOf(db, 'public.orders', 'id')).toEqual(ordersBefore);
      // ON DELETE CASCADE did not fire: the referencing rows are as they were.
      expect(await rowsOf(db, 'public.shipments', 'order_id')).toEqual(['(1,one)', '(2,two)']);
    } finally {
      await cluster.query(`DROP TABLE IF EXISTS public.shipments`, [], db);
    }
  });
});

/** md5 of every row as text, in the order given: contents compared exactly. */
async function md5Of(db: string, table: string, orderBy: string): Promise<string> {
  return (await cluster.query<{ m: string }>(`SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY ${orderBy}), '')) AS m FROM ${table} t`, [], db))[0].m;
}

async function countOf(db: string, table: string): Promise<number> {
  return (await cluster.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`, [], db))[0].n;
}

describe('table-restore replace mode: no side effects, foreign keys, partitions', () => {
  let db: string;
  let repoUrl: string;
  let workDir: string;
  const md5AtDump: Record<string, string> = {};
  let rowCounts: Record<string, number>;
  const owner = `tr_owner_${Math.random().toString(16).slice(2, 10)}`;
  const replace = (table: string, extra: string[] = []) =>
    runCli(['--procedure', 'table-restore', ...conn, '--database', db, '--table', table, '--mode', 'replace', '--confirm', `${db}.${table}`, '--repo', repoUrl, '--work-dir', workDir, '--json', ...extra], stateEnv);

  beforeAll(async () => {
    db = await cluster.createDatabase('tr_side');
    toDrop.push(db);
    await cluster.query(
      `CREATE TABLE public.items (id int PRIMARY KEY, name text, touched int DEFAULT 0);
       CREATE TABLE public.audit_log (id bigserial, op text, item int);
       CREATE FUNCTION public.bump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.touched := NEW.touched + 1; NEW.name := NEW.name || ' (changed)'; RETURN NEW; END $$;
       CREATE FUNCTION public.audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO public.audit_log (op, item) VALUES (TG_OP, CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END); RETURN NULL; END $$;
       CREATE TRIGGER items_bump BEFORE INSERT OR UPDATE ON public.items FOR EACH ROW EXECUTE FUNCTION public.bump();
       CREATE TRIGGER items_audit AFTER INSERT OR DELETE ON public.items FOR EACH ROW EXECUTE FUNCTION public.audit();
       ALTER TABLE public.items ENABLE ALWAYS TRIGGER items_audit;
       INSERT INTO public.items (id, name) SELECT g, 'item ' || g FROM generate_series(1, 550) g;

       CREATE TABLE public.customers (id int PRIMARY KEY, name text);
       INSERT INTO public.customers SELECT g, 'customer ' || g FROM generate_series(1, 100) g;
       CREATE TABLE public.invoices (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES public.customers (id), amount int);
       INSERT INTO public.invoices SELECT g, 1 + g % 100, g FROM generate_series(1, 400) g;

       CREATE TABLE public.measurements (id int, region text, v numeric) PARTITION BY LIST (region);
       CREATE TABLE public.m_north PARTITION OF public.measurements FOR VALUES IN ('north');
       CREATE TABLE public.m_south PARTITION OF public.measurements FOR VALUES IN ('south');
       CREATE TABLE public.m_other PARTITION OF public.measurements DEFAULT;
       CREATE FUNCTION public.double_v() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.v := NEW.v * 2; RETURN NEW; END $$;
       CREATE TRIGGER m_double BEFORE INSERT ON public.measurements FOR EACH ROW EXECUTE FUNCTION public.double_v();
       ALTER TABLE public.measurements ENABLE ALWAYS TRIGGER m_double;
       INSERT INTO public.measurements SELECT g, (ARRAY['north', 'south', 'east'])[1 + g % 3], g / 4.0 FROM generate_series(1, 3000) g;

       CREATE TABLE public.prices (id int PRIMARY KEY, p numeric(10,2));
       INSERT INTO public.prices SELECT g, g + 0.10 FROM generate_series(1, 50) g;

       CREATE ROLE ${owner} LOGIN CREATEDB;
       CREATE TABLE public.owned (id int PRIMARY KEY, name text, touched int DEFAULT 0);
       CREATE TRIGGER owned_bump BEFORE INSERT OR UPDATE ON public.owned FOR EACH ROW EXECUTE FUNCTION public.bump();
       INSERT INTO public.owned (id, name) SELECT g, 'owned ' || g FROM generate_series(1, 200) g;
       ALTER TABLE public.owned OWNER TO ${owner};`,
      [],
      db,
    );
    rolesToDrop.push(owner);
    for (const t of ['public.items', 'public.customers', 'public.invoices', 'public.m_north', 'public.m_south', 'public.m_other', 'public.prices', 'public.owned']) md5AtDump[t] = await md5Of(db, t, 'id');
    md5AtDump['public.measurements'] = await md5Of(db, 'public.measurements', 'id, region, v');
    repoUrl = `file://${tempDir('pgrunbook-tr-side-repo-')}`;
    const r = await runCli(['--procedure', 'backup-logical', ...conn, '--databases', db, '--repo', repoUrl, '--json'], stateEnv);
    expect(r.exitCode, r.stderr + r.stdout.slice(-2000)).toBe(0);
    const { readCatalog } = await import('../src/repo/catalog.js');
    const { openRepository } = await import('../src/repo/repository.js');
    const repo = await openRepository(repoUrl);
    try {
      rowCounts = (await readCatalog(repo.store)).dumps.find((d) => d.database === db && d.complete)!.meta!.rowCounts!;
    } finally {
      await repo.close();
    }
    workDir = tempDir('pgrunbook-tr-side-work-');
  });

  it('dump.json counts a partitioned table once: its partitions, which add up to its real rows', () => {
    expect(rowCounts).not.toHaveProperty('public.measurements');
    expect(rowCounts['public.m_north'] + rowCounts['public.m_south'] + rowCounts['public.m_other']).toBe(3000);
    expect(Object.values(rowCounts).reduce((a, b) => a + b, 0)).toBe(550 + 550 + 100 + 400 + 3000 + 50 + 200);
  });

  it('replaces a table with BEFORE and AFTER triggers without firing them: contents exactly as dumped, the audit table unchanged, the triggers as they were', async () => {
    await cluster.query(`DELETE FROM public.items WHERE id > 500; UPDATE public.items SET name = 'damaged' WHERE id <= 10`, [], db);
    expect(await md5Of(db, 'public.items', 'id')).not.toBe(md5AtDump['public.items']);
    const auditBefore = await countOf(db, 'public.audit_log');
    const r = await replace('public.items');
    const summary = summaryOf(r.stdout);
    expect(r.exitCode, JSON.stringify(summary)).toBe(0);
    const triggers = summary.checks.find((c: any) => c.name === 'triggers');
    expect(triggers).toMatchObject({ ok: true });
    expect(triggers.detail).toContain(`public.items: items_audit: disabled inside the copy's transaction`);
    expect(triggers.detail).toContain('public.items: items_bump: do not fire during the copy (session_replication_role = replica)');
    expect(await md5Of(db, 'public.items', 'id')).toBe(md5AtDump['public.items']);
    expect(await countOf(db, 'public.audit_log')).toBe(auditBefore);
    expect(await cluster.query(`SELECT tgname, tgenabled::text AS e FROM pg_trigger WHERE tgrelid = 'public.items'::regclass AND NOT tgisinternal ORDER BY 1`, [], db)).toEqual([
      { tgname: 'items_audit', e: 'A' },
      { tgname: 'items_bump', e: 'O' },
    ]);
    // The triggers work again afterwards.
    await cluster.query(`INSERT INTO public.items (id, name) VALUES (9999, 'new')`, [], db);
    expect(await cluster.query(`SELECT name, touched FROM public.items WHERE id = 9999`, [], db)).toEqual([{ name: 'new (changed)', touched: 1 }]);
    expect(await countOf(db, 'public.audit_log')).toBe(auditBefore + 1);
    await cluster.query(`ALTER TABLE public.items DISABLE TRIGGER items_audit; DELETE FROM public.items WHERE id = 9999; ALTER TABLE public.items ENABLE ALWAYS TRIGGER items_audit`, [], db);
  });

  it('a referenced table: refused before any change when a referenced key would vanish (naming the constraint and the key); replaced when every key comes back', async () => {
    await cluster.query(`INSERT INTO public.customers VALUES (101, 'after the dump'); INSERT INTO public.invoices VALUES (401, 101, 1)`, [], db);
    const customersNow = await md5Of(db, 'public.customers', 'id');
    const refused = await replace('public.customers');
    const s1 = summaryOf(refused.stdout);
    expect(refused.exitCode, JSON.stringify(s1)).toBe(3);
    expect(stepStatuses(s1)).toMatchObject({ compare: 'failed', copy: 'pending' });
    expect(s1.checks.find((c: any) => c.name === 'keys referenced by public.invoices (invoices_customer_id_fkey)')).toMatchObject({
      ok: false,
      detail: expect.stringContaining('1 id value(s) that public.invoices references (foreign key invoices_customer_id_fkey) are not in the dump, e.g. 101'),
    });
    expect(await md5Of(db, 'public.customers', 'id')).toBe(customersNow);
    expect(await databaseNames()).not.toContain(tempDatabaseName(s1.runId));

    await cluster.query(`DELETE FROM public.invoices WHERE id = 401; UPDATE public.customers SET name = 'damaged' WHERE id <= 50`, [], db);
    const r = await replace('public.customers');
    const summary = summaryOf(r.stdout);
    expect(r.exitCode, JSON.stringify(summary)).toBe(0);
    expect(summary.checks.find((c: any) => c.name === 'keys referenced by public.invoices (invoices_customer_id_fkey)')).toMatchObject({ ok: true });
    expect(await md5Of(db, 'public.customers', 'id')).toBe(md5AtDump['public.customers']);
    expect(await md5Of(db, 'public.invoices', 'id')).toBe(md5AtDump['public.invoices']);
    // The foreign key still holds and is enforced.
    await expect(cluster.query(`INSERT INTO public.invoices VALUES (402, 555, 1)`, [], db)).rejects.toThrow(/invoices_customer_id_fkey/);
  });

  it('a partitioned table: every partition replaced in one transaction, each exactly as dumped, its trigger not fired', async () => {
    await cluster.query(`DELETE FROM public.m_north WHERE id < 1000; UPDATE public.measurements SET v = -1 WHERE region = 'south'; DELETE FROM public.m_other WHERE id % 2 = 0`, [], db);
    const triggerStates = `SELECT tgrelid::regclass::text AS t, tgname, tgenabled::text AS e FROM pg_trigger WHERE tgname = 'm_double' ORDER BY 1`;
    const statesBefore = await cluster.query(triggerStates, [], db);
    expect(statesBefore.length).toBe(4);
    const r = await replace('public.measurements');
    const summary = summaryOf(r.stdout);
    expect(r.exitCode, JSON.stringify(summary)).toBe(0);
    expect(summary.checks.find((c: any) => c.name === 'restored rows')).toMatchObject({ ok: true, detail: '3000 rows, as dump.json records' });
    expect(summary.checks.find((c: any) => c.name === 'partitions')).toMatchObject({ ok: true });
    for (const t of ['public.m_north', 'public.m_south', 'public.m_other']) expect(await md5Of(db, t, 'id'), t).toBe(md5AtDump[t]);
    expect(await countOf(db, 'public.measurements')).toBe(3000);
    expect(await cluster.query(triggerStates, [], db)).toEqual(statesBefore);
  });

  it('a partitioned table in new-table mode comes back as one plain table holding all its partitions\' rows', async () => {
    const r = await runCli(['--procedure', 'table-restore', ...conn, '--database', db, '--table', 'public.measurements', '--new-table', 'measurements_copy', '--repo', repoUrl, '--work-dir', workDir, '--json'], stateEnv);
    const summary = summaryOf(r.stdout);
    expect(r.exitCode, JSON.stringify(summary)).toBe(0);
    expect(await md5Of(db, 'public.measurements_copy', 'id, region, v')).toBe(md5AtDump['public.measurements']);
    await cluster.query(`DROP TABLE public.measurements_copy`, [], db);
  });

  it('as the table\'s owner, not a superuser: its trigger is disabled inside the transaction (not fired), the contents exactly as dumped', async () => {
    await cluster.query(`DELETE FROM public.owned WHERE id > 150; UPDATE public.owned SET name = 'damaged' WHERE id < 20`, [], db);
    const r = await runCli(
      ['--procedure', 'table-restore', '--host', cluster.host, '--port', String(cluster.port), '--user', owner, '--dbname', 'postgres', '--database', db, '--table', 'public.owned', '--mode', 'replace', '--confirm', `${db}.public.owned`, '--repo', repoUrl, '--work-dir', workDir, '--json'],
      stateEnv,
    );
    const summary = summaryOf(r.stdout);
    expect(r.exitCode, JSON.stringify(summary)).toBe(0);
    expect(summary.checks.find((c: any) => c.name === 'triggers')).toMatchObject({ ok: true, detail: expect.stringContaining('public.owned: owned_bump') });
    const logs = jsonLines(r.stdout).filter((e) => e.type === 'log').map((e) => e.message as string);
    expect(logs.some((l) => l.includes('session_replication_role = replica'))).toBe(false);
    expect(await md5Of(db, 'public.owned', 'id')).toBe(md5AtDump['public.owned']);
    expect(await cluster.query(`SELECT tgenabled::text AS e FROM pg_trigger WHERE tgname = 'owned_bump'`, [], db)).toEqual([{ e: 'O' }]);
    expect(await databaseNames()).not.toContain(tempDatabaseName(summary.runId));
  });

  it('contents that differ from the dump before COMMIT roll back with the reason (exit 1): nothing committed', async () => {
    // A later change of the column's type: the same values read back differently (1.10 -> 1.100).
    await cluster.query(`DELETE FROM public.prices WHERE id > 40; ALTER TABLE public.prices ALTER p TYPE numeric(10,3)`, [], db);
    const now = await md5Of(db, 'public.prices', 'id');
    const r = await replace('public.prices');
    const summary = summaryOf(r.stdout);
    expect(r.exitCode, JSON.stringify(summary)).toBe(1);
    expect(stepStatuses(summary)).toMatchObject({ copy: 'failed', verify: 'pending' });
    expect(summary.error).toContain('the rows are not the dumped ones; rolling back');
    expect(summary.error).toContain('the live rows of public.prices are unchanged');
    expect(await md5Of(db, 'public.prices', 'id')).toBe(now);
    expect(await databaseNames()).not.toContain(tempDatabaseName(summary.runId));
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
