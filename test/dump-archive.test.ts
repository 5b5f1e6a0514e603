// Logical dumps stored as pg_dump -Fc --compress=0 inside the repository's codec, with each
// table's rows counted in the dump's own COPY data: the counts must equal count(*) on hard data,
// whatever the stream's chunking; archives the reader does not know fall back to count(*); dumps
// written before (pg_dump's own gzip inside, no codec in dump.json) still restore.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonLines, runCli, tempDir } from './helpers/cli.js';
import { sharedCluster } from './helpers/cluster.js';
import { findPgBinary } from '../src/postgres/binaries.js';
import { libpqEnv } from '../src/postgres/libpq.js';
import { ArchiveFormatError, ArchiveRowCounter, ArchiveWalker, fillDataOffsets, readArchiveHead } from '../src/postgres/formats/custom-archive.js';
import { openRepository } from '../src/repo/repository.js';
import { readCatalog } from '../src/repo/catalog.js';

const cluster = sharedCluster();
const conn = ['--host', cluster.host, '--port', String(cluster.port), '--user', cluster.user];
const stateEnv = { PGRUNBOOK_STATE_DIR: path.join(tempDir('pgrunbook-da-state-'), 'state') };
const stepsOf = (stdout: string) => Object.fromEntries(jsonLines(stdout).at(-1)!.summary.steps.map((s: { id: string; status: string }) => [s.id, s.status]));

let db: string;
let plain: Buffer;
let gzipped: Buffer;
const expected: Record<string, number> = {};

function pgDump(args: string[]): Buffer {
  return execFileSync(pgDumpPath, [...args, '--dbname', db], {
    env: libpqEnv({ host: cluster.host, port: cluster.port, user: cluster.user }, {}),
    maxBuffer: 256 * 1024 * 1024,
  });
}
let pgDumpPath: string;

async function countWith(chunks: Buffer[]): Promise<Record<string, number>> {
  const counter = new ArchiveRowCounter();
  await pipeline(Readable.from(chunks), counter, new Writable({ write: (_c, _e, cb) => cb() }));
  return counter.result().rows;
}

/** `buf` cut at every `size` bytes (1 puts every int and marker across a boundary). */
function cut(buf: Buffer, size: (i: number) => number): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0, i = 0; at < buf.length; i++) {
    const n = Math.max(1, size(i));
    out.push(buf.subarray(at, at + n));
    at += n;
  }
  return out;
}

beforeAll(async () => {
  pgDumpPath = await findPgBinary('pg_dump');
  db = await cluster.createDatabase('dump_archive');
  await cluster.withClient(async (c) => {
    await c.query(`
      CREATE SCHEMA "odd.schema name";
      CREATE TABLE "odd.schema name"."Table ""quoted"" é" (id int, note text);
      INSERT INTO "odd.schema name"."Table ""quoted"" é" SELECT g, E'line one\\nline two\\r\\n\\\\. not the end' FROM generate_series(1, 257) g;
      CREATE TABLE empty_one (id int);
      CREATE TABLE wide (id int, body text);
      INSERT INTO wide SELECT g, repeat(md5(g::text), 40000) FROM generate_series(1, 3) g;
      CREATE TABLE ends_like_marker (t text);
      INSERT INTO ends_like_marker VALUES (E'\\\\.'), (E'\\n\\n\\n'), ('');
      CREATE TABLE parted (id int, k int) PARTITION BY RANGE (k);
      CREATE TABLE parted_a PARTITION OF parted FOR VALUES FROM (0) TO (10);
      CREATE TABLE parted_b PARTITION OF parted FOR VALUES FROM (10) TO (20);
      INSERT INTO parted SELECT g, g % 20 FROM generate_series(1, 1000) g;
      CREATE UNLOGGED TABLE unlogged_one AS SELECT g AS id FROM generate_series(1, 42) g;
      SELECT lo_from_bytea(0, decode(repeat('0a', 5000), 'hex'));
    `);
    for (const t of (await c.query<{ nspname: string; relname: string }>(`SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'`)).rows) {
      const r = await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${c.escapeIdentifier(t.nspname)}.${c.escapeIdentifier(t.relname)}`);
      expected[`${t.nspname}.${t.relname}`] = Number(r.rows[0].n);
    }
  }, db);
  plain = pgDump(['--format=custom', '--compress=0']);
  gzipped = pgDump(['--format=custom']);
});

afterAll(async () => {
  await cluster.query(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`).catch(() => {});
});

describe('counting rows in an uncompressed custom archive', () => {
  it('equals count(*) for every table: newlines and a COPY end marker inside values, wide rows, an empty table, partitions, a large object', async () => {
    expect(Object.keys(expected).length).toBe(7);
    expect(await countWith([plain])).toEqual(expected);
  });

  it('is the same whatever the chunking: one byte at a time, odd sizes, 64 KiB pipes', async () => {
    expect(await countWith(cut(plain, () => 1))).toEqual(expected);
    expect(await countWith(cut(plain, (i) => (i * 7919) % 113))).toEqual(expected);
    expect(await countWith(cut(plain, () => 65536))).toEqual(expected);
  });

  it('refuses what it cannot read, so the caller counts another way: a compressed archive, another version, a truncated one, not an archive', async () => {
    const errorOf = async (chunks: Buffer[]) => {
      try {
        await countWith(chunks);
        return undefined;
      } catch (err) {
        return err;
      }
    };
    expect(await errorOf([gzipped])).toBeInstanceOf(ArchiveFormatError);
    const future = Buffer.from(plain);
    future[6] = 99; // minor version
    expect(String(await errorOf([future]))).toMatch(/version 1\.99/);
    expect(await errorOf([plain.subarray(0, plain.length - 3)])).toBeInstanceOf(ArchiveFormatError);
    expect(String(await errorOf([Buffer.from('not a dump at all')]))).toMatch(/PGDMP/);
  });
});

describe('backup-logical and logical-restore with the archive inside the codec', () => {
  it('backup-logical stores zstd around an uncompressed archive, counts from the archive; logical-restore verifies them', async () => {
    const repoDir = tempDir('pgrunbook-da-repo-');
    const url = `file://${repoDir}`;
    const b = await runCli(['--procedure', 'backup-logical', '--repo', url, ...conn, '--databases', db, '--json'], stateEnv);
    expect(b.exitCode, b.stderr).toBe(0);
    const repo = await openRepository(url);
    const dump = (await readCatalog(repo.store)).dumps.find((d) => d.database === db)!;
    await repo.close();
    expect(dump.meta).toMatchObject({ compression: 'zstd', rowCountsFrom: 'archive', archiveSize: expect.any(Number) });
    expect(dump.meta!.rowCounts).toEqual(expected);
    // The stored object is a zstd frame, not a readable archive.
    const stored = fs.readFileSync(path.join(repoDir, 'dumps', db, dump.id, dump.meta!.object!));
    expect(stored.subarray(0, 4).toString('hex')).toBe('28b52ffd');

    const target = `${db}_r`;
    const r = await runCli(['--procedure', 'logical-restore', '--repo', url, ...conn, '--database', db, '--new-database', target, '--json'], stateEnv);
    await cluster.query(`DROP DATABASE IF EXISTS "${target}" WITH (FORCE)`);
    expect(r.exitCode, r.stdout.slice(-3000)).toBe(0);
    expect(stepsOf(r.stdout)).toMatchObject({ restore: 'ok', counts: 'ok' });
  });

  it('the streamed way (gzip, or zstd where no named pipe can be made) counts and records the same positions as the relay thread, and restores', async () => {
    const metas = [];
    for (const [label, env] of [
      ['zstd, relay thread', {}],
      ['zstd, no temporary directory for the pipes', { TMPDIR: path.join(tempDir('pgrunbook-da-gone-'), 'missing') }],
      ['gzip', { PGRUNBOOK_COMPRESSION: 'gzip' }],
    ] as const) {
      const repoDir = tempDir('pgrunbook-da-ways-');
      const url = `file://${repoDir}`;
      const b = await runCli(['--procedure', 'backup-logical', '--repo', url, ...conn, '--databases', db, '--json'], { ...stateEnv, ...env });
      expect(b.exitCode, `${label}: ${b.stdout.slice(-2000)}`).toBe(0);
      const repo = await openRepository(url);
      const dump = (await readCatalog(repo.store)).dumps.find((d) => d.database === db)!;
      await repo.close();
      expect(dump.meta, label).toMatchObject({ rowCountsFrom: 'archive', rowCounts: expected, compression: label === 'gzip' ? 'gzip' : 'zstd' });
      metas.push(dump.meta!);
      const target = `${db}_w${metas.length}`;
      const r = await runCli(['--procedure', 'logical-restore', '--repo', url, ...conn, '--database', db, '--new-database', target, '--jobs', '2', '--json'], stateEnv);
      await cluster.query(`DROP DATABASE IF EXISTS "${target}" WITH (FORCE)`);
      expect(r.exitCode, `${label}: ${r.stdout.slice(-3000)}`).toBe(0);
      expect(stepsOf(r.stdout), label).toMatchObject({ restore: 'ok', counts: 'ok' });
    }
    // The same archive, whichever way it went: the same size and block positions.
    expect(new Set(metas.map((m) => m.archiveSize)).size).toBe(1);
    expect(metas[0].dataBlocks).toHaveLength(8);
    expect(metas[1].dataBlocks).toEqual(metas[0].dataBlocks);
    expect(metas[2].dataBlocks).toEqual(metas[0].dataBlocks);
  });

  it('a dump written before (pg_dump -Fc with its own gzip, no codec in dump.json) still restores and verifies', async () => {
    const repoDir = tempDir('pgrunbook-da-legacy-');
    const url = `file://${repoDir}`;
    const repo = await openRepository(url);
    const id = '20261101T000000Z-000-legacy';
    const object = `${db}.dump`;
    const put = await repo.putObject(repo.dumpKey(db, id, object), Readable.from([gzipped]));
    await repo.commitDump({ id, database: db, object, format: 'custom', size: put.size, sha256: put.sha256, rowCounts: expected, consistentAt: new Date().toISOString(), pgDumpVersion: '15' });
    await repo.close();
    const target = `${db}_l`;
    const r = await runCli(['--procedure', 'logical-restore', '--repo', url, ...conn, '--database', db, '--new-database', target, '--json'], stateEnv);
    await cluster.query(`DROP DATABASE IF EXISTS "${target}" WITH (FORCE)`);
    expect(r.exitCode, r.stdout.slice(-3000)).toBe(0);
    expect(stepsOf(r.stdout)).toMatchObject({ restore: 'ok', counts: 'ok' });
  });
});

describe('data positions written into a dump that was streamed', () => {
  it('the walker counts the same through one reused buffer (the dump thread reads into one), however the reads fall', () => {
    for (const size of [1, 3, 4096, 65536]) {
      const walker = new ArchiveWalker();
      const scratch = Buffer.alloc(65536);
      for (const piece of cut(plain, (i) => (size === 1 ? 1 + (i % 13) : size))) {
        piece.copy(scratch);
        walker.write(scratch.subarray(0, piece.length));
        scratch.fill(0xff); // what a stale reference to the last read would see
      }
      walker.end();
      expect(walker.result().rows, `reads of ${size}`).toEqual(expected);
      expect(walker.bytes).toBe(plain.length);
    }
  });

  it('the positions found while streaming, recorded and written into the TOC, are the ones pg_dump writes into a file it can seek in', async () => {
    const dir = tempDir('pgrunbook-da-recorded-');
    const own = path.join(dir, 'own.dump');
    // pg_dump writing a file it can seek in fills the positions itself.
    execFileSync(pgDumpPath, ['--format=custom', '--compress=0', '--file', own, '--dbname', db], { env: libpqEnv({ host: cluster.host, port: cluster.port, user: cluster.user }, {}) });
    const walker = new ArchiveWalker();
    for (const piece of cut(plain, () => 65536)) walker.write(piece);
    walker.end();
    const recorded = [...walker.blockAt]; // as dump.json keeps them
    const streamed = path.join(dir, 'streamed.dump');
    fs.writeFileSync(streamed, plain);
    const head = (await readArchiveHead(streamed))!;
    expect(head.toc.length).toBeGreaterThan(8);
    expect(await fillDataOffsets(streamed, { head, blockAt: new Map(recorded) })).toBe(8);
    const fieldsOf = async (file: string) => {
      const h = (await readArchiveHead(file))!;
      const bytes = fs.readFileSync(file);
      return h.toc.map((e, i) => [e.desc, e.tag, bytes.subarray(h.offsetFields[i], h.offsetFields[i] + 1 + h.offSize).toString('hex')]);
    };
    const ours = await fieldsOf(streamed);
    expect(ours).toEqual(await fieldsOf(own));
    expect(ours.filter(([desc]) => desc === 'TABLE DATA').every(([, , field]) => String(field).startsWith('02'))).toBe(true);
    // Not an archive: no head, nothing written.
    const junk = path.join(dir, 'junk.dump');
    fs.writeFileSync(junk, 'not an archive at all');
    expect(await readArchiveHead(junk)).toBeUndefined();
  });

  it('each table\'s block position goes into the TOC (uncompressed and gzip archives alike), once; pg_restore -j 2 then restores every row', async () => {
    const pgRestore = await findPgBinary('pg_restore');
    const env = libpqEnv({ host: cluster.host, port: cluster.port, user: cluster.user }, {});
    for (const [label, archive] of [['plain', plain], ['gzip', gzipped]] as const) {
      const file = path.join(tempDir('pgrunbook-da-offsets-'), `${label}.dump`);
      fs.writeFileSync(file, archive);
      const locator = new ArchiveRowCounter(false);
      await pipeline(Readable.from(cut(archive, (i) => (i * 7919) % 4099)), locator, new Writable({ write: (_c, _e, cb) => cb() }));
      // Seven tables with data blocks (the empty one too) and the large object's block.
      expect(await fillDataOffsets(file, locator.layout()), label).toBe(8);
      expect(fs.statSync(file).size).toBe(archive.length);
      // Only entries still "not set" are written: a second pass changes nothing.
      expect(await fillDataOffsets(file, locator.layout()), label).toBe(0);
      const target = await cluster.createDatabase(`dump_archive_offsets_${label}`);
      try {
        execFileSync(pgRestore, ['--jobs', '2', '--exit-on-error', '--dbname', target, file], { env });
        const got: Record<string, number> = {};
        await cluster.withClient(async (c) => {
          const tables = await c.query<{ nspname: string; relname: string }>(
            `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'`,
          );
          for (const t of tables.rows) {
            const r = await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${c.escapeIdentifier(t.nspname)}.${c.escapeIdentifier(t.relname)}`);
            got[`${t.nspname}.${t.relname}`] = Number(r.rows[0].n);
          }
        }, target);
        expect(got, label).toEqual(expected);
      } finally {
        await cluster.query(`DROP DATABASE IF EXISTS "${target}" WITH (FORCE)`).catch(() => {});
      }
    }
  });
});
