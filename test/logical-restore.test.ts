// logical-restore for real: dumps made by the backup-logical procedure into a file:// repository,
// restored through the built CLI into new databases on the run's shared cluster. Every table's
// count must equal dump.json; an existing target name is refused before anything is created; a
// corrupt dump is refused and leaves nothing; the swap happens only with the typed confirmation,
// and then the original name holds the restored data and the old data is kept under a dated name.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonLines, runCli, tempDir as makeTempDir } from './helpers/cli.js';
import { sharedCluster } from './helpers/cluster.js';
import { openRepository } from '../src/repo/repository.js';
import { readCatalog, type DumpEntry } from '../src/repo/catalog.js';

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
const stateEnv = { PGRUNBOOK_STATE_DIR: path.join(tempDir('pgrunbook-lr-state-'), 'state') };
/** Every database this file makes starts with it. */
const PREFIX = 'lr_';

const summaryOf = (stdout: string) => jsonLines(stdout).at(-1)!.summary;
const stepStatuses = (summary: any) => Object.fromEntries(summary.steps.map((s: any) => [s.id, s.status]));
const logsOf = (stdout: string) => jsonLines(stdout).filter((e) => e.type === 'log').map((e) => e.message as string);

/** Databases whose names start with `prefix` (other test files create theirs on the same cluster meanwhile). */
async function databases(prefix: string): Promise<Map<string, string>> {
  const rows = await cluster.query<{ datname: string; oid: string }>(`SELECT datname, oid::text AS oid FROM pg_database WHERE starts_with(datname, $1)`, [prefix]);
  return new Map(rows.map((r) => [r.datname, r.oid]));
}

async function countsOf(db: string, tables: string[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  await cluster.withClient(async (c) => {
    for (const t of tables) {
      const dot = t.indexOf('.');
      const r = await c.query(`SELECT count(*)::int AS n FROM ${c.escapeIdentifier(t.slice(0, dot))}.${c.escapeIdentifier(t.slice(dot + 1))}`);
      out[t] = r.rows[0].n;
    }
  }, db);
  return out;
}

async function dumpsOf(url: string, db: string): Promise<DumpEntry[]> {
  const repo = await openRepository(url);
  try {
    return (await readCatalog(repo.store)).dumps.filter((d) => d.database === db && d.complete);
  } finally {
    await repo.close();
  }
}

const filesIn = (dir: string) => fs.readdirSync(dir, { recursive: true }).map(String);

const rolesToDrop: string[] = [];

afterAll(async () => {
  for (const db of toDrop) await cluster.query(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`).catch(() => {});
  for (const role of rolesToDrop) await cluster.query(`DROP ROLE IF EXISTS "${role}"`).catch(() => {});
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

describe('logical-restore from a backup-logical dump', () => {
  let db: string;
  let repoDir: string;
  let repoUrl: string;
  let dump: DumpEntry;
  let workDir: string;

  beforeAll(async () => {
    db = await cluster.createDatabase('lr_app');
    toDrop.push(db);
    await cluster.query(
      `CREATE TYPE public.mood AS ENUM ('ok', 'sad');
       CREATE TABLE public.events (id bigserial PRIMARY KEY, payload text, m public.mood DEFAULT 'ok');
       INSERT INTO public.events (payload) SELECT md5(g::text) FROM generate_series(1, 30000) g;
       CREATE INDEX ON public.events (payload);
       CREATE TABLE public.child (id bigint REFERENCES public.events (id), twice bigint GENERATED ALWAYS AS (id * 2) STORED);
       INSERT INTO public.child (id) SELECT generate_series(1, 300);
       CREATE SCHEMA "odd schema";
       CREATE TABLE "odd schema"."Mixed ""Quoted"" name" (x int);
       INSERT INTO "odd schema"."Mixed ""Quoted"" name" SELECT generate_series(1, 7);
       CREATE TABLE public.empty (x int);`,
      [],
      db,
    );
    repoDir = tempDir('pgrunbook-lr-repo-');
    repoUrl = `file://${repoDir}`;
    const r = await runCli(['--procedure', 'backup-logical', ...conn, '--databases', db, '--repo', repoUrl, '--json'], stateEnv);
    expect(r.exitCode, r.stderr + r.stdout.slice(-2000)).toBe(0);
    [dump] = await dumpsOf(repoUrl, db);
    expect(dump.meta!.rowCounts).toEqual({ 'odd schema.Mixed "Quoted" name': 7, 'public.child': 300, 'public.empty': 0, 'public.events': 30000 });
    // Changes after the dump: a restore must not have them.
    await cluster.query(`INSERT INTO public.events (payload) SELECT 'after the dump' FROM generate_series(1, 11)`, [], db);
    workDir = tempDir('pgrunbook-lr-work-');
  });

  it('restores into a new database with every table\'s count equal to dump.json, shows the connection strings, and leaves no temporary file', async () => {
    const before = await databases(PREFIX);
    const r = await runCli(['--procedure', 'logical-restore', ...conn, '--database', db, '--repo', repoUrl, '--jobs', '2', '--work-dir', workDir, '--json'], stateEnv);
    const summary = summaryOf(r.stdout);
    const created = [...(await databases(PREFIX)).keys()].filter((n) => !before.has(n));
    toDrop.push(...created);
    expect(r.exitCode, r.stderr + JSON.stringify(summary)).toBe(0);
    expect(stepStatuses(summary)).toEqual({ preflight: 'ok', download: 'ok', restore: 'ok', counts: 'ok', connections: 'ok', swap: 'skipped', 'verify-swap': 'skipped' });

    // The default name: <db>_restored_<YYYYMMDDHHMM>, and nothing else was created.
    expect(created).toHaveLength(1);
    const restored = created[0];
    expect(restored).toMatch(new RegExp(`^${db}_restored_\\d{12}$`));

    // One passing check per table in dump.json, and the counts really are those of dump.json.
    const rowChecks = summary.checks.filter((c: any) => c.name.startsWith('rows '));
    expect(rowChecks.map((c: any) => [c.name, c.ok])).toEqual(Object.keys(dump.meta!.rowCounts!).sort().map((t) => [`rows ${t}`, true]));
    expect(await countsOf(restored, Object.keys(dump.meta!.rowCounts!))).toEqual(dump.meta!.rowCounts);
    // Indexes, constraints and the generated column came back too.
    const idx = await cluster.query(`SELECT indexname FROM pg_indexes WHERE tablename = 'events' ORDER BY 1`, [], restored);
    expect(idx.map((i: any) => i.indexname)).toEqual(['events_payload_idx', 'events_pkey']);
    expect((await cluster.query(`SELECT sum(twice)::int AS s FROM public.child`, [], restored))[0].s).toBe(300 * 301);

    // Progress in items, out of the dump's table of contents.
    const progress = jsonLines(r.stdout).filter((e) => e.type === 'progress' && e.stepId === 'restore');
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.every((e) => e.unit === 'items')).toBe(true);
    expect(progress.at(-1)).toMatchObject({ done: progress.at(-1)!.total });

    const logs = logsOf(r.stdout);
    const port = cluster.port;
    const host = encodeURIComponent(cluster.host);
    expect(logs).toContain(`URI: postgresql://${cluster.user}@${host}:${port}/${db} → postgresql://${cluster.user}@${host}:${port}/${restored}`);
    expect(logs).toContain(`conninfo: host=${cluster.host} port=${port} user=${cluster.user} dbname=${db} → host=${cluster.host} port=${port} user=${cluster.user} dbname=${restored}`);
    expect(filesIn(workDir)).toEqual([]);
  });

  it('refuses an existing target name before anything is created, naming it (exit 1)', async () => {
    const existing = await cluster.createDatabase('lr_taken');
    toDrop.push(existing);
    await cluster.query(`CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (42)`, [], existing);
    const before = await databases(PREFIX);
    const r = await runCli(['--procedure', 'logical-restore', ...conn, '--database', db, '--new-database', existing, '--repo', repoUrl, '--work-dir', workDir, '--json'], stateEnv);
    expect(r.exitCode).toBe(1);
    const summary = summaryOf(r.stdout);
    expect(stepStatuses(summary)).toMatchObject({ preflight: 'failed', download: 'pending', restore: 'pending' });
    expect(summary.error).toContain(`database "${existing}" already exists`);
    expect(summary.error).toContain('--new-database');
    expect(summary.checks.find((c: any) => c.name === 'new database name free')).toMatchObject({ ok: false });
    expect(await databases(PREFIX)).toEqual(before);
    expect(await cluster.query(`SELECT x FROM keep_me`, [], existing)).toEqual([{ x: 42 }]);
    expect(filesIn(workDir)).toEqual([]);

    // The same name as the source database is bad usage (exit 2).
    const same = await runCli(['--procedure', 'logical-restore', ...conn, '--database', db, '--new-database', db, '--repo', repoUrl], stateEnv);
    expect(same.exitCode).toBe(2);
    expect(same.stderr).toContain('--new-database');
  });

  it('refuses a corrupt dump while downloading it: nothing created, no file left (exit 3)', async () => {
    const copyDir = tempDir('pgrunbook-lr-corrupt-');
    fs.cpSync(repoDir, copyDir, { recursive: true });
    const file = path.join(copyDir, 'dumps', db, dump.id, dump.meta!.object!);
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.from('XXXX'), 0, 4, Math.floor(fs.statSync(file).size / 2));
    fs.closeSync(fd);
    const before = await databases(PREFIX);
    const r = await runCli(['--procedure', 'logical-restore', ...conn, '--database', db, '--new-database', `${db}_from_corrupt`, '--repo', `file://${copyDir}`, '--work-dir', workDir, '--json'], stateEnv);
    expect(r.exitCode).toBe(3); // corruption is a failed verification
    const summary = summaryOf(r.stdout);
    expect(stepStatuses(summary)).toMatchObject({ preflight: 'ok', download: 'failed', restore: 'pending' });
    expect(summary.error).toContain('is corrupt: its SHA-256 is');
    expect(await databases(PREFIX)).toEqual(before);
    expect(filesIn(workDir)).toEqual([]);
  });

  it('dump.json records where each table\'s data starts; a dump made before it did (no positions) restores all the same', async () => {
    // Four tables with data blocks (the empty one too), inside the archive.
    const blocks = dump.meta!.dataBlocks as [number, number][];
    expect(blocks).toHaveLength(4);
    expect(blocks.every(([, at]) => at > 0 && at < (dump.meta!.archiveSize as number))).toBe(true);
    const copyDir = tempDir('pgrunbook-lr-noblocks-');
    fs.cpSync(repoDir, copyDir, { recursive: true });
    const repo = await openRepository(`file://${copyDir}`);
    try {
      await repo.store.delete(`dumps/${db}/${dump.id}/dump.json`);
      const { dataBlocks: _gone, ...older } = dump.meta!;
      await repo.commitDump(older);
    } finally {
      await repo.close();
    }
    const target = `${db}_noblocks`;
    toDrop.push(target);
    const r = await runCli(['--procedure', 'logical-restore', ...conn, '--database', db, '--new-database', target, '--jobs', '2', '--repo', `file://${copyDir}`, '--work-dir', workDir, '--json'], stateEnv);
    const summary = summaryOf(r.stdout);
    expect(r.exitCode, JSON.stringify(summary)).toBe(0);
    expect(await countsOf(target, Object.keys(dump.meta!.rowCounts!))).toEqual(dump.meta!.rowCounts);
    expect(filesIn(workDir)).toEqual([]);
  });

  it('a damaged zstd frame whose SHA-256 dump.json was made to match is refused while zstd writes the local copy: nothing created, no file left (exit 3)', async () => {
    const copyDir = tempDir('pgrunbook-lr-badframe-');
    fs.cpSync(repoDir, copyDir, { recursive: true });
    const file = path.join(copyDir, 'dumps', db, dump.id, dump.meta!.object!);
    const bytes = fs.readFileSync(file);
    bytes.write('XXXXXXXX', Math.floor(bytes.length / 2), 'latin1');
    fs.writeFileSync(file, bytes);
    const repo = await openRepository(`file://${copyDir}`);
    try {
      await repo.store.delete(`dumps/${db}/${dump.id}/dump.json`);
      await repo.commitDump({ ...dump.meta!, sha256: createHash('sha256').update(bytes).digest('hex') });
    } finally {
      await repo.close();
    }
    const before = await databases(PREFIX);
    const r = await runCli(['--procedure', 'logical-restore', ...conn, '--database', db, '--new-database', `${db}_badframe`, '--repo', `file://${copyDir}`, '--work-dir', workDir, '--json'], stateEnv);
    const summary = summaryOf(r.stdout);
    expect(r.exitCode, JSON.stringify(summary)).toBe(3);
    expect(stepStatuses(summary)).toMatchObject({ preflight: 'ok', download: 'failed', restore: 'pending' });
    expect(summary.error).toContain('zstd could not decompress it');
    expect(await databases(PREFIX)).toEqual(before);
    expect(filesIn(workDir)).toEqual([]);
  });

  it('a table whose count differs from dump.json fails verification with both numbers (exit 3); no connection strings, no swap', async () => {
    // A repository whose dump.json claims one row more than the dump holds.
    const copyDir = tempDir('pgrunbook-lr-miscount-');
    fs.cpSync(repoDir, copyDir, { recursive: true });
    const repo = await openRepository(`file://${copyDir}`);
    try {
      await repo.store.delete(`dumps/${db}/${dump.id}/dump.json`);
      await repo.commitDump({ ...dump.meta!, rowCounts: { ...dump.meta!.rowCounts!, 'public.events': 30001 } });
    } finally {
      await repo.close();
    }
    const target = `${db}_miscount`;
    toDrop.push(target);
    const r = await runCli(['--procedure', 'logical-restore', ...conn, '--database', db, '--new-database', target, '--swap', '--confirm', db, '--repo', `file://${copyDir}`, '--work-dir', workDir, '--json'], stateEnv);
    expect(r.exitCode).toBe(3);
    const summary = summaryOf(r.stdout);
    expect(stepStatuses(summary)).toMatchObject({ restore: 'ok', counts: 'failed', connections: 'skipped', swap: 'pending' });
    expect(summary.checks.find((c: any) => c.name === 'rows public.events')).toMatchObject({ ok: false, detail: `30000 rows in ${target}, dump.json says 30001` });
    expect(summary.checks.filter((c: any) => c.name.startsWith('rows ') && c.ok)).toHaveLength(3);
    expect((await databases(PREFIX)).has(db)).toBe(true);
    expect([...(await databases(PREFIX)).keys()].some((n) => n.startsWith(`${db}_replaced_`))).toBe(false);
  });

  it('--swap: without --confirm exit 4 before anything is created; with --confirm the original name holds the restored data and the old one is kept', async () => {
    const orig = await cluster.createDatabase('lr_swap');
    toDrop.push(orig);
    await cluster.query(`CREATE TABLE public.t (id int PRIMARY KEY, v text); INSERT INTO public.t SELECT g, 'dumped' FROM generate_series(1, 500) g`, [], orig);
    const b = await runCli(['--procedure', 'backup-logical', ...conn, '--databases', orig, '--repo', repoUrl, '--json'], stateEnv);
    expect(b.exitCode, b.stdout.slice(-2000)).toBe(0);
    // The "bad change" after the dump that the swap undoes.
    await cluster.query(`DELETE FROM public.t WHERE id > 100; UPDATE public.t SET v = 'damaged'`, [], orig);

    const before = await databases(PREFIX);
    const refused = await runCli(['--procedure', 'logical-restore', ...conn, '--database', orig, '--swap', '--repo', repoUrl, '--work-dir', workDir, '--json'], stateEnv);
    const s1 = summaryOf(refused.stdout);
    const made = [...(await databases(PREFIX)).keys()].filter((n) => !before.has(n));
    toDrop.push(...made);
    expect(refused.exitCode, JSON.stringify(s1)).toBe(4);
    // The confirmation is asked for before anything is created: a refused swap leaves no restored database behind.
    expect(stepStatuses(s1)).toMatchObject({ preflight: 'refused', download: 'pending', restore: 'pending', swap: 'pending', 'verify-swap': 'pending' });
    expect(s1.error).toContain(`--confirm ${orig}`);
    expect(s1.error).toContain('Nothing was created');
    const confirmRequest = jsonLines(refused.stdout).find((e) => e.type === 'confirm-request')!;
    expect(confirmRequest.destructive.expected).toBe(orig);
    expect(confirmRequest.destructive.what).toMatch(new RegExp(`^rename database ${orig} to ${orig}_replaced_\\d{12} and ${orig}_restored_\\d{12} to ${orig} \\(connections to ${orig} are terminated\\)$`));
    // Nothing renamed, nothing created: pg_database is as it was.
    const after = await databases(PREFIX);
    expect(after.get(orig)).toBe(before.get(orig));
    expect(made).toEqual([]);
    expect(after).toEqual(before);
    expect([...after.keys()].some((n) => n.startsWith(`${orig}_replaced_`))).toBe(false);
    expect(await cluster.query(`SELECT count(*)::int AS n, min(v) AS v FROM public.t`, [], orig)).toEqual([{ n: 100, v: 'damaged' }]);

    // A session on the original: the swap terminates it.
    const { connectPg } = await import('../src/postgres/client.js');
    const app = await connectPg(cluster.connection(orig));
    app.on('error', () => {});
    try {
      const beforeSwap = await databases(PREFIX);
      // The operator's next move after the refusal: continue the same run, now confirming.
      const r = await runCli(['--resume', s1.runId, ...conn, '--confirm', orig, '--repo', repoUrl, '--json'], stateEnv);
      const summary = summaryOf(r.stdout);
      const now = await databases(PREFIX);
      const replaced = [...now.keys()].find((n) => n.startsWith(`${orig}_replaced_`));
      if (replaced) toDrop.push(replaced);
      toDrop.push(...[...now.keys()].filter((n) => n.startsWith(`${orig}_restored_`)));
      expect(r.exitCode, JSON.stringify(summary)).toBe(0);
      expect(stepStatuses(summary)).toMatchObject({ preflight: 'ok', restore: 'ok', swap: 'ok', 'verify-swap': 'ok' });
      expect([...now.keys()].some((n) => n.startsWith(`${orig}_restored_`))).toBe(false);
      expect(replaced).toMatch(new RegExp(`^${orig}_replaced_\\d{12}$`));
      // The old database (by oid) now carries the dated name; the restored one (a new oid) carries the original name.
      expect(now.get(replaced!)).toBe(beforeSwap.get(orig));
      expect(now.get(orig)).not.toBe(beforeSwap.get(orig));
      expect(summary.checks.find((c: any) => c.name === `${orig} is the restored database`)).toMatchObject({ ok: true });
      expect(await cluster.query(`SELECT count(*)::int AS n, min(v) AS v, max(v) AS w FROM public.t`, [], orig)).toEqual([{ n: 500, v: 'dumped', w: 'dumped' }]);
      expect(await cluster.query(`SELECT count(*)::int AS n, min(v) AS v FROM public.t`, [], replaced!)).toEqual([{ n: 100, v: 'damaged' }]);
      await expect(app.query('SELECT 1')).rejects.toThrow();
    } finally {
      await app.end().catch(() => {});
    }
    expect(filesIn(workDir)).toEqual([]);
  });
});

describe('logical-restore: the owner, partitioned tables', () => {
  let db: string;
  let role: string;
  let repoUrl: string;
  let dump: DumpEntry;
  let workDir: string;

  beforeAll(async () => {
    role = `lr_owner_${Math.random().toString(16).slice(2, 10)}`;
    await cluster.query(`CREATE ROLE "${role}" NOLOGIN`);
    rolesToDrop.push(role);
    db = await cluster.createDatabase('lr_owned');
    toDrop.push(db);
    await cluster.query(`ALTER DATABASE "${db}" OWNER TO "${role}"`);
    await cluster.query(
      `CREATE TABLE public.pt (id int, k int) PARTITION BY RANGE (k);
       CREATE TABLE public.pt_low PARTITION OF public.pt FOR VALUES FROM (0) TO (100);
       CREATE TABLE public.pt_high PARTITION OF public.pt FOR VALUES FROM (100) TO (200);
       INSERT INTO public.pt SELECT g, g % 200 FROM generate_series(1, 150) g;
       CREATE TABLE public.plain (x int); INSERT INTO public.plain SELECT generate_series(1, 5);`,
      [],
      db,
    );
    repoUrl = `file://${tempDir('pgrunbook-lr-owner-repo-')}`;
    const r = await runCli(['--procedure', 'backup-logical', ...conn, '--databases', db, '--repo', repoUrl, '--json'], stateEnv);
    expect(r.exitCode, r.stderr + r.stdout.slice(-2000)).toBe(0);
    [dump] = await dumpsOf(repoUrl, db);
    workDir = tempDir('pgrunbook-lr-owner-work-');
  });

  it('dump.json counts the rows of a partitioned table once (in its partitions), adding up to the real number', () => {
    const counts = dump.meta!.rowCounts!;
    expect(counts).toEqual({ 'public.plain': 5, 'public.pt_high': counts['public.pt_high'], 'public.pt_low': counts['public.pt_low'] });
    expect(counts['public.pt_low'] + counts['public.pt_high']).toBe(150);
  });

  it('the restored database belongs to the original\'s owner, not to the restoring user; the counts check passes', async () => {
    const target = `${db}_copy`;
    toDrop.push(target);
    const r = await runCli(['--procedure', 'logical-restore', ...conn, '--database', db, '--new-database', target, '--repo', repoUrl, '--work-dir', workDir, '--json'], stateEnv);
    const summary = summaryOf(r.stdout);
    expect(r.exitCode, JSON.stringify(summary)).toBe(0);
    const owner = await cluster.query(`SELECT pg_get_userbyid(datdba) AS o FROM pg_database WHERE datname = $1`, [target]);
    expect(owner).toEqual([{ o: role }]);
    expect(summary.checks.find((c: any) => c.name === 'owner')).toMatchObject({ ok: true, detail: `${target} belongs to "${role}", as ${db} did` });
    expect(summary.checks.filter((c: any) => c.name.startsWith('rows ')).map((c: any) => [c.name, c.ok])).toEqual([
      ['rows public.plain', true],
      ['rows public.pt_high', true],
      ['rows public.pt_low', true],
    ]);
    expect(await countsOf(target, ['public.pt', 'public.pt_low', 'public.pt_high'])).toEqual({
      'public.pt': 150,
      'public.pt_low': dump.meta!.rowCounts!['public.pt_low'],
      'public.pt_high': dump.meta!.rowCounts!['public.pt_high'],
    });
  });

  it('a dump.json written when partitioned tables were counted too (their rows twice) still verifies: the parent is compared with all its rows', async () => {
    const copyDir = tempDir('pgrunbook-lr-oldcounts-');
    fs.cpSync(repoUrl.slice('file://'.length), copyDir, { recursive: true });
    const repo = await openRepository(`file://${copyDir}`);
    try {
      await repo.store.delete(`dumps/${db}/${dump.id}/dump.json`);
      await repo.commitDump({ ...dump.meta!, rowCounts: { ...dump.meta!.rowCounts!, 'public.pt': 150 } });
    } finally {
      await repo.close();
    }
    const target = `${db}_oldcounts`;
    toDrop.push(target);
    const r = await runCli(['--procedure', 'logical-restore', ...conn, '--database', db, '--new-database', target, '--repo', `file://${copyDir}`, '--work-dir', workDir, '--json'], stateEnv);
    const summary = summaryOf(r.stdout);
    expect(r.exitCode, JSON.stringify(summary)).toBe(0);
    expect(summary.checks.find((c: any) => c.name === 'rows public.pt')).toMatchObject({ ok: true, detail: '150 rows, as in dump.json' });
  });

  it('the owner recorded in the dump is kept even when the original database is gone', async () => {
    await cluster.query(`DROP DATABASE "${db}" WITH (FORCE)`);
    const target = `${db}_after_drop`;
    toDrop.push(target);
    const r = await runCli(['--procedure', 'logical-restore', ...conn, '--database', db, '--new-database', target, '--repo', repoUrl, '--work-dir', workDir, '--json'], stateEnv);
    const summary = summaryOf(r.stdout);
    expect(r.exitCode, JSON.stringify(summary)).toBe(0);
    expect(await cluster.query(`SELECT pg_get_userbyid(datdba) AS o FROM pg_database WHERE datname = $1`, [target])).toEqual([{ o: role }]);
    expect(logsOf(r.stdout).some((l) => l.includes(`${db} belonged to "${role}" when dumped`))).toBe(true);
  });
});
