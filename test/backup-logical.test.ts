// backup-logical for real: pg_dump streamed into a file:// repository and into S3 (s3rver),
// through the built CLI, against the run's shared cluster. The dump's row counts must be those of
// its own snapshot even while a writer keeps inserting; a dump that fails, is interrupted or loses
// its storage mid-way must never be listed as complete, and the next run must succeed.
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonLines, runCli, startCli, tempDir } from './helpers/cli.js';
import { sharedCluster } from './helpers/cluster.js';
import { waitFor } from './helpers/wait.js';
import { freePort, startS3rver, type StorageServer } from './helpers/storage-servers.js';
import { connectPg } from '../src/postgres/client.js';
import { findPgBinary } from '../src/postgres/binaries.js';
import { libpqEnv } from '../src/postgres/libpq.js';
import { findPgClientFor } from '../src/postgres/programs/pg_dump.js';
import { openRepository, type Repository } from '../src/repo/repository.js';
import { readCatalog, type DumpEntry } from '../src/repo/catalog.js';
import { decompressStream, type Codec } from '../src/repo/codec.js';

const cluster = sharedCluster();
const conn = ['--host', cluster.host, '--port', String(cluster.port), '--user', cluster.user];
const madeDirs: string[] = [];
/** A temporary directory removed when the file's tests end (dumps in them take space). */
function tmp(prefix: string): string {
  const dir = tempDir(prefix);
  madeDirs.push(dir);
  return dir;
}
const stateEnv = { PGRUNBOOK_STATE_DIR: path.join(tmp('pgrunbook-bl-state-'), 'state') };
const toDrop: string[] = [];

async function dumpsIn(url: string, env: Record<string, string> = {}): Promise<DumpEntry[]> {
  const repo = await openRepository(url, { ...process.env, ...env });
  try {
    return (await readCatalog(repo.store)).dumps;
  } finally {
    await repo.close();
  }
}

async function keysIn(url: string, prefix: string, env: Record<string, string> = {}): Promise<string[]> {
  const repo = await openRepository(url, { ...process.env, ...env });
  try {
    const keys: string[] = [];
    for await (const e of repo.store.list(prefix)) keys.push(e.key);
    return keys;
  } finally {
    await repo.close();
  }
}

/** pg_restore a dump, streamed from the repository with its checksum checked, into a new database. */
async function restoreInto(repo: Repository, dump: DumpEntry, target: string): Promise<void> {
  const pgRestore = await findPgBinary('pg_restore');
  const body = await repo.getVerified(`dumps/${dump.database}/${dump.id}/${dump.meta!.object}`, dump.meta!.sha256);
  const child = execa(pgRestore, ['--exit-on-error', '--no-owner', '--dbname', target], {
    env: libpqEnv({ host: cluster.host, port: cluster.port, user: cluster.user }),
    extendEnv: false,
    stdin: 'pipe',
    reject: false,
  });
  // The stored object is the archive in the repository's codec (dump.json says which).
  const codec = (dump.meta!.compression as Codec | undefined) ?? 'none';
  const [fed, r] = await Promise.allSettled([pipeline(body, decompressStream(codec), child.stdin!), child]);
  expect(r.status === 'fulfilled' && r.value.exitCode, r.status === 'fulfilled' ? String(r.value.stderr) : String(r.reason)).toBe(0);
  if (fed.status === 'rejected') throw fed.reason;
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

/** Inserts one row per transaction into `table` until stopped. */
function startWriter(db: string, table: string) {
  let stop = false;
  let inserted = 0;
  const done = (async () => {
    const c = await connectPg(cluster.connection(db));
    try {
      while (!stop) {
        await c.query(`INSERT INTO ${table} (payload) VALUES (md5(random()::text))`);
        inserted++;
      }
    } finally {
      await c.end();
    }
  })();
  return {
    inserted: () => inserted,
    stop: async () => {
      stop = true;
      await done;
    },
  };
}

/** Reads a running CLI's JSON lines as they come. */
function followJson(child: ResultPromise) {
  let buf = '';
  const events: Record<string, any>[] = [];
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.trim()) events.push(JSON.parse(line));
    }
  });
  return events;
}

const summaryOf = (stdout: string) => jsonLines(stdout).at(-1)!.summary;
const stepStatuses = (summary: any) => Object.fromEntries(summary.steps.map((s: any) => [s.id, s.status]));

afterAll(async () => {
  for (const db of toDrop) await cluster.query(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`).catch(() => {});
  for (const dir of madeDirs) fs.rmSync(dir, { recursive: true, force: true });
});

describe('backup-logical into a file:// repository', () => {
  let db: string;
  let other: string;
  let repoDir: string;
  let repoUrl: string;

  beforeAll(async () => {
    db = await cluster.createDatabase('bl_app');
    other = await cluster.createDatabase('bl_other');
    toDrop.push(db, other);
    await cluster.query(
      `CREATE TABLE public.events (id bigserial PRIMARY KEY, payload text);
       INSERT INTO public.events (payload) SELECT md5(g::text) FROM generate_series(1, 200000) g;
       CREATE SCHEMA "odd schema";
       CREATE TABLE "odd schema"."Mixed ""Quoted"" name" (x int);
       INSERT INTO "odd schema"."Mixed ""Quoted"" name" SELECT generate_series(1, 7);
       CREATE TABLE public.empty (x int);`,
      [],
      db,
    );
    await cluster.query(`CREATE TABLE public.t (payload text); INSERT INTO public.t SELECT 'x' FROM generate_series(1, 42)`, [], other);
    repoDir = tmp('pgrunbook-bl-repo-');
    repoUrl = `file://${repoDir}`;
  });

  it('dumps with row counts from the dump\'s own snapshot while a writer inserts; restores to exactly those counts', async () => {
    const writer = startWriter(db, 'public.events');
    let r;
    try {
      await waitFor('the writer to be inserting', () => writer.inserted() > 20);
      r = await runCli(['--procedure', 'backup-logical', ...conn, '--databases', `${db},${other}`, '--parallel', '2', '--repo', repoUrl, '--json'], stateEnv);
    } finally {
      await writer.stop();
    }
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
    const events = jsonLines(r.stdout);
    const summary = events.at(-1)!.summary;
    expect(stepStatuses(summary)).toEqual({ preflight: 'ok', dump: 'ok', verify: 'ok' });
    expect(summary.checks.map((c: any) => c.name)).toEqual(['repository reachable', 'server reachable', 'pg_dump', 'databases', `dump ${db}`, `dump ${other}`]);
    expect(summary.checks.find((c: any) => c.name === `dump ${db}`).detail).toMatch(/stored, SHA-256 taken while writing, every data block read as it streamed.*pg_restore --list: \d+ entries, 3 with table data/);
    const progress = events.filter((e) => e.type === 'progress' && e.stepId === 'dump');
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.every((e) => e.unit === 'bytes')).toBe(true);

    const dumps = await dumpsIn(repoUrl);
    expect(dumps.map((d) => [d.database, d.complete])).toEqual([
      [db, true],
      [other, true],
    ]);
    const dump = dumps.find((d) => d.database === db)!;
    const meta = dump.meta!;
    expect(meta).toMatchObject({ database: db, object: `${db}.dump`, format: 'custom', pgDumpVersion: expect.stringMatching(/^\d+/), serverVersion: expect.stringMatching(/^\d+/) });
    expect(meta.sha256).toMatch(/^[0-9a-f]{64}$/);
    // Where each of the three tables' data starts in the archive, for a restore's TOC.
    const blocks = meta.dataBlocks as [number, number][];
    expect(blocks).toHaveLength(3);
    expect(blocks.every(([, at]) => at > 0 && at < (meta.archiveSize as number))).toBe(true);
    expect(meta.size).toBe(fs.statSync(path.join(repoDir, 'dumps', db, dump.id, `${db}.dump`)).size);
    expect(Date.parse(meta.stopTime!)).toBeGreaterThanOrEqual(Date.parse(meta.startTime!));
    expect(meta.durationMs).toBeGreaterThanOrEqual(0);
    expect(Object.keys(meta.rowCounts!).sort()).toEqual(['odd schema.Mixed "Quoted" name', 'public.empty', 'public.events']);
    expect(meta.rowCounts!['odd schema.Mixed "Quoted" name']).toBe(7);
    expect(meta.rowCounts!['public.empty']).toBe(0);
    // The writer was running before the dump started, and went on after its snapshot.
    expect(meta.rowCounts!['public.events']).toBeGreaterThan(200_000 + 20);
    const live = await countsOf(db, ['public.events']);
    expect(live['public.events']).toBeGreaterThan(meta.rowCounts!['public.events']);

    const restored = await cluster.createDatabase('bl_restored');
    toDrop.push(restored);
    const repo = await openRepository(repoUrl);
    try {
      await restoreInto(repo, dump, restored);
    } finally {
      await repo.close();
    }
    expect(await countsOf(restored, Object.keys(meta.rowCounts!))).toEqual(meta.rowCounts);
    expect(dumps.find((d) => d.database === other)!.meta!.rowCounts).toEqual({ 'public.t': 42 });
  });

  it('a pg_dump slow to open its output (a loaded machine) is waited for: the dump is whole, not an empty archive and a hung run', async () => {
    // Before, the relay thread found no writer on its pipe, read an empty archive and closed it,
    // and pg_dump then waited for ever to open the pipe.
    const realPgDump = (await findPgClientFor('pg_dump', 0)).path;
    const binDir = tmp('pgrunbook-bl-slow-');
    fs.writeFileSync(path.join(binDir, 'pg_dump'), `#!/bin/sh
if [ "$1" != "--version" ]; then sleep 1; fi
exec '${realPgDump}' "$@"
`, { mode: 0o755 });
    const url = `file://${tmp('pgrunbook-bl-slowrepo-')}`;
    const r = await runCli(['--procedure', 'backup-logical', ...conn, '--databases', other, '--repo', url, '--json'], { ...stateEnv, PGRUNBOOK_PG_BINDIR: binDir });
    expect(r.exitCode, r.stdout.slice(-2000)).toBe(0);
    const dumps = await dumpsIn(url);
    expect(dumps.map((d) => [d.database, d.complete])).toEqual([[other, true]]);
    expect(dumps[0].meta!.rowCounts).toEqual({ 'public.t': 42 });
  }, 60_000);

  it('a pg_dump that fails after writing its output leaves no dump.json and no data; the next run succeeds', async () => {
    // A pg_dump that dumps everything and then exits 3: the stored bytes would look whole.
    const realPgDump = (await findPgClientFor('pg_dump', 0)).path;
    const binDir = tmp('pgrunbook-bl-bin-');
    fs.writeFileSync(
      path.join(binDir, 'pg_dump'),
      `#!/bin/sh\nif [ "$1" = "--version" ]; then exec '${realPgDump}' --version; fi\n'${realPgDump}' "$@" || exit $?\necho "pg_dump: error: simulated failure after the data" >&2\nexit 3\n`,
      { mode: 0o755 },
    );
    const url = `file://${tmp('pgrunbook-bl-fail-')}`;
    const r = await runCli(['--procedure', 'backup-logical', ...conn, '--databases', other, '--repo', url, '--json'], { ...stateEnv, PGRUNBOOK_PG_BINDIR: binDir });
    expect(r.exitCode, r.stderr).toBe(1);
    const summary = summaryOf(r.stdout);
    expect(stepStatuses(summary)).toEqual({ preflight: 'ok', dump: 'failed', verify: 'pending' });
    expect(summary.error).toContain('pg_dump exited with code 3');
    expect(summary.error).toContain('simulated failure after the data');
    expect(summary.error).toContain('It is not listed as a backup (no dump.json)');
    const logs = jsonLines(r.stdout).filter((e) => e.type === 'log').map((e) => e.message);
    expect(logs).toContain(`${other}: pg_dump: error: simulated failure after the data`);
    expect(await keysIn(url, 'dumps/')).toEqual([]);

    const again = await runCli(['--procedure', 'backup-logical', ...conn, '--databases', other, '--repo', url, '--json'], stateEnv);
    expect(again.exitCode, again.stderr).toBe(0);
    expect((await dumpsIn(url)).map((d) => [d.database, d.complete])).toEqual([[other, true]]);
  });

  it('without a repository it stops before anything, naming --repo and PGRUNBOOK_REPO', async () => {
    const r = await runCli(['--procedure', 'backup-logical', ...conn, '--databases', other, '--json'], stateEnv);
    expect(r.exitCode).toBe(2); // bad usage: nothing was tried
    const summary = summaryOf(r.stdout);
    expect(stepStatuses(summary)).toEqual({ preflight: 'failed', dump: 'pending', verify: 'pending' });
    expect(summary.error).toContain('--repo');
    expect(summary.error).toContain('PGRUNBOOK_REPO');
    expect(summary.checks).toEqual([]);
  });

  it('a database that does not exist stops the run before any dump, saying which', async () => {
    const url = `file://${tmp('pgrunbook-bl-missing-')}`;
    const r = await runCli(['--procedure', 'backup-logical', ...conn, '--databases', `${other},no_such_db_bl`, '--repo', url, '--json'], stateEnv);
    expect(r.exitCode).toBe(1);
    const summary = summaryOf(r.stdout);
    expect(stepStatuses(summary)).toEqual({ preflight: 'failed', dump: 'pending', verify: 'pending' });
    expect(summary.error).toContain('database "no_such_db_bl" does not exist');
    expect(summary.checks.find((c: any) => c.name === 'databases')).toMatchObject({ ok: false });
    expect(await keysIn(url, '')).toEqual([]);
  });

  it('an unreachable repository stops the run in preflight, before any dump', async () => {
    const port = await freePort();
    const url = `s3://nowhere/bl?endpoint=http://127.0.0.1:${port}&region=us-east-1&forcePathStyle=true&maxAttempts=1`;
    const r = await runCli(['--procedure', 'backup-logical', ...conn, '--databases', other, '--repo', url, '--json'], { ...stateEnv, AWS_ACCESS_KEY_ID: 'k', AWS_SECRET_ACCESS_KEY: 's' });
    expect(r.exitCode).toBe(1);
    const summary = summaryOf(r.stdout);
    expect(stepStatuses(summary)).toEqual({ preflight: 'failed', dump: 'pending', verify: 'pending' });
    expect(summary.error).toContain('is not reachable');
    expect(summary.error).toContain(`s3://nowhere/bl?endpoint=http://127.0.0.1:${port}`);
    expect(summary.checks.find((c: any) => c.name === 'repository reachable')).toMatchObject({ ok: false });
  });

  it('--parallel is checked before anything runs (exit 2)', async () => {
    const r = await runCli(['--procedure', 'backup-logical', ...conn, '--parallel', '0', '--repo', repoUrl], stateEnv);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('--parallel');
  });

  it('--dry-run lists every dumpable database (templates excluded) and the keys, and writes nothing', async () => {
    const url = `file://${tmp('pgrunbook-bl-dry-')}`;
    const r = await runCli(['--procedure', 'backup-logical', ...conn, '--repo', url, '--dry-run', '--json'], stateEnv);
    expect(r.exitCode, r.stderr).toBe(0);
    const lines = jsonLines(r.stdout).filter((e) => e.type === 'log').map((e) => e.message as string);
    const dbLine = lines.find((l) => l.startsWith('would: databases (every one that accepts connections'))!;
    expect(dbLine).toContain(db);
    expect(dbLine).toContain('postgres');
    expect(dbLine).not.toContain('template0');
    expect(dbLine).not.toContain('template1');
    expect(lines.some((l) => l.includes(`dumps/${db}/`) && l.includes(`/${db}.dump`) && l.includes('dump.json written last'))).toBe(true);
    expect(await keysIn(url, '')).toEqual([]);
  });

  it('names the package to install when pg_dump is older than the server', async () => {
    await expect(findPgClientFor('pg_dump', 99, '99.1')).rejects.toThrow(/older than the server \(PostgreSQL 99\.1\).*postgresql-client-99/);
  });
});

describe('backup-logical interrupted or losing its storage mid-dump', () => {
  let big: string;

  beforeAll(async () => {
    // Big enough that pg_dump -Fc takes seconds (hex text compresses to about half).
    big = await cluster.createDatabase('bl_big');
    toDrop.push(big);
    await cluster.query(
      `CREATE TABLE public.blobs (id int, payload text);
       INSERT INTO public.blobs SELECT g, md5(g::text) || md5((g * 31)::text) || md5((g * 97)::text) FROM generate_series(1, 250000) g`,
      [],
      big,
    );
  });

  it('SIGINT while dumping exits 130, lists nothing as complete, leaves no data; --resume finishes it', async () => {
    const dir = tmp('pgrunbook-bl-sigint-');
    const url = `file://${dir}`;
    const child = startCli(['--procedure', 'backup-logical', ...conn, '--databases', big, '--repo', url, '--json'], stateEnv);
    const events = followJson(child);
    await waitFor('dump bytes streaming', () => events.some((e) => e.type === 'progress' && e.stepId === 'dump' && e.done > 0), 60_000);
    child.kill('SIGINT');
    const r = await child;
    expect(r.exitCode, String(r.stderr)).toBe(130);
    const summary = events.at(-1)!.summary;
    expect(stepStatuses(summary)).toEqual({ preflight: 'ok', dump: 'interrupted', verify: 'pending' });
    expect((await dumpsIn(url)).filter((d) => d.complete)).toEqual([]);
    // Neither the partial dump nor the driver's temporary file is left behind.
    expect(fs.readdirSync(dir, { recursive: true }).filter((f) => fs.statSync(path.join(dir, String(f))).isFile())).toEqual([]);
    // pg_dump and the snapshot transaction ended with the run.
    await waitFor('the dump\'s sessions to end', async () => (await cluster.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1`, [big]))[0].n === 0);

    const resumed = await runCli(['--resume', summary.runId, ...conn, '--repo', url, '--json'], stateEnv);
    expect(resumed.exitCode, resumed.stderr).toBe(0);
    const dumps = await dumpsIn(url);
    expect(dumps.map((d) => [d.database, d.complete])).toEqual([[big, true]]);
    expect(dumps[0].meta!.rowCounts).toEqual({ 'public.blobs': 250000 });
  });

  it('S3 going away mid-dump fails the run (exit 1) with nothing complete; after a restart the next run succeeds', async () => {
    let s3: StorageServer | undefined = await startS3rver({ prefix: 'bl' });
    madeDirs.push(s3.directory);
    try {
      const { directory, port, url, env } = s3;
      const child = startCli(['--procedure', 'backup-logical', ...conn, '--databases', big, '--repo', url, '--json'], { ...stateEnv, ...env });
      const events = followJson(child);
      await waitFor('dump bytes streaming', () => events.some((e) => e.type === 'progress' && e.stepId === 'dump' && e.done > 0), 60_000);
      await s3.kill();
      const r = await child;
      expect(r.exitCode, String(r.stderr)).toBe(1);
      const summary = events.at(-1)!.summary;
      expect(stepStatuses(summary)).toEqual({ preflight: 'ok', dump: 'failed', verify: 'pending' });
      expect(summary.error).toContain(`the dump of ${big} failed: could not write it to the repository: S3 put 'dumps/${big}/`);
      expect(summary.error).toContain('ECONNREFUSED');
      expect(summary.error).toContain('It is not listed as a backup (no dump.json)');

      s3 = await startS3rver({ directory, port, prefix: 'bl' });
      expect((await dumpsIn(url, env)).filter((d) => d.complete)).toEqual([]);
      const again = await runCli(['--procedure', 'backup-logical', ...conn, '--databases', big, '--repo', url, '--json'], { ...stateEnv, ...env });
      expect(again.exitCode, again.stderr + again.stdout.slice(-2000)).toBe(0);
      const complete = (await dumpsIn(url, env)).filter((d) => d.complete);
      expect(complete.map((d) => d.database)).toEqual([big]);
      expect(complete[0].meta!.rowCounts).toEqual({ 'public.blobs': 250000 });
      expect(summaryOf(again.stdout).checks.find((c: any) => c.name === `dump ${big}`)).toMatchObject({ ok: true });
    } finally {
      await s3?.stop();
    }
  });
});
