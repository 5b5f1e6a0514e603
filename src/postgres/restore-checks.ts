// What restore-test asks of a recovered scratch cluster: does every database answer, are its
// pages intact (pg_amcheck while it runs, pg_checksums once it is stopped), and which relation
// does a damaged file belong to. SQL and PostgreSQL programs only; the procedure judges.
import type { ConnectionSettings } from '../config/connection.js';
import { findPgBinary } from './binaries.js';
import { withPg } from './client.js';
import { libpqEnv } from './libpq.js';
import { runCommand, type OsIds } from './osuser.js';

/** The databases a restore test looks into: every one that accepts connections, template0 aside. */
export async function connectableDatabases(conn: ConnectionSettings): Promise<string[]> {
  return withPg(conn, async (c) => (await c.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datallowconn AND datname <> 'template0' ORDER BY datname`)).rows.map((r) => r.datname));
}

/** SELECT 1 and a catalog query: the database opens and its catalog reads. */
export async function probeDatabase(conn: ConnectionSettings): Promise<{ relations: number }> {
  return withPg(conn, async (c) => {
    await c.query('SELECT 1');
    const r = await c.query<{ n: string }>(`SELECT count(*) AS n FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace`);
    return { relations: Number(r.rows[0].n) };
  });
}

export async function dataChecksumsEnabled(conn: ConnectionSettings): Promise<boolean> {
  return withPg(conn, async (c) => (await c.query<{ v: string }>(`SELECT current_setting('data_checksums') AS v`)).rows[0].v === 'on');
}

/** "base/<db oid>/<relfilenode>" -> "database.schema.relation", read before the server stops (pg_checksums names files). */
export async function relationFiles(conn: ConnectionSettings, databases: string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const db of databases) {
    await withPg({ ...conn, database: db }, async (c) => {
      const rows = await c.query<{ path: string; name: string }>(
        `SELECT pg_relation_filepath(c.oid) AS path, n.nspname || '.' || c.relname AS name
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE pg_relation_filepath(c.oid) IS NOT NULL`,
      );
      for (const r of rows.rows) out[r.path] = `${db}.${r.name}`;
    });
  }
  return out;
}

export interface AmcheckResult {
  ok: boolean;
  /** Relations pg_amcheck reported, "database.schema.relation", with its first complaint. */
  corrupt: { relation: string; problem: string }[];
  /** pg_amcheck did not run to its end (other than finding corruption). */
  failure?: string;
  command: string;
}

/**
 * pg_amcheck over every database (heap tables and btree indexes; `heapallindexed` also checks
 * that every heap tuple has its index entries). --install-missing creates the amcheck extension
 * where it is missing: in the scratch cluster only, which is thrown away.
 */
export async function runAmcheck(conn: ConnectionSettings, opts: { heapallindexed: boolean; signal: AbortSignal }): Promise<AmcheckResult> {
  const bin = await findPgBinary('pg_amcheck');
  const args = ['--all', '--install-missing', '--no-password', ...(opts.heapallindexed ? ['--heapallindexed'] : [])];
  const r = await runCommand(bin, args, { env: libpqEnv({ ...conn, database: conn.database ?? 'postgres' }, { PATH: process.env.PATH }), extendEnv: false, signal: opts.signal });
  const corrupt = parseAmcheckOutput(r.stdout);
  // Exit 0: nothing found; 2: corruption found (listed on stdout); anything else: it could not check.
  if (r.exitCode === 0 && corrupt.length === 0) return { ok: true, corrupt, command: r.command };
  if (corrupt.length) return { ok: false, corrupt, command: r.command };
  return { ok: false, corrupt, failure: r.failure || `exit code ${r.exitCode}: ${r.stderr.split('\n').slice(-3).join(' ')}`, command: r.command };
}

/** pg_amcheck's report: a header line per relation ('heap table "db.s.t", block 0, offset 3:') then indented details. */
export function parseAmcheckOutput(text: string): { relation: string; problem: string }[] {
  const out: { relation: string; problem: string }[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^(?:heap table|btree index|toast table|relation) "([^"]+)"(.*):$/.exec(lines[i]);
    if (!m) continue;
    const detail = (lines[i + 1] ?? '').trim();
    if (!out.some((o) => o.relation === m[1])) out.push({ relation: m[1], problem: `${m[2].replace(/^,\s*/, '')}${m[2] ? ': ' : ''}${detail}`.trim() });
  }
  return out;
}

export interface ChecksumsResult {
  ok: boolean;
  /** Files with a bad page, and the relation when known. */
  bad: { file: string; relation?: string; detail: string }[];
  failure?: string;
  command: string;
}

/** pg_checksums --check on a stopped data directory, as its owner. */
export async function runPgChecksums(dataDir: string, owner: OsIds | undefined, files: Record<string, string>, signal: AbortSignal): Promise<ChecksumsResult> {
  const bin = await findPgBinary('pg_checksums');
  const r = await runCommand(bin, ['--check', '--pgdata', dataDir], { as: owner, env: { PATH: process.env.PATH }, extendEnv: false, signal });
  const bad: ChecksumsResult['bad'] = [];
  for (const line of `${r.stdout}\n${r.stderr}`.split('\n')) {
    const m = /checksum verification failed in file "([^"]+)", (.*)$/.exec(line);
    if (!m) continue;
    const rel = m[1].replace(`${dataDir}/`, '').replace(/\.\d+$/, '');
    bad.push({ file: m[1], relation: files[rel], detail: m[2] });
  }
  if (r.exitCode === 0) return { ok: true, bad, command: r.command };
  if (bad.length) return { ok: false, bad, command: r.command };
  return { ok: false, bad, failure: r.failure || r.stderr, command: r.command };
}
