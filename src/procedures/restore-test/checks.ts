// restore-test's checks on the recovered scratch cluster: every database answers, its rows are
// all there (against the newest dump's counts and the profile's critical tables), and its pages
// are intact (pg_amcheck while it runs, pg_checksums once stopped). Each result is a check the
// report shows and the record keeps; a failed one makes the run exit 3.
import type { ConnectionSettings } from '../../config/connection.js';
import { errorMessage } from '../../engine/errors.js';
import type { CriticalTable } from '../../config/profile.js';
import { connectableDatabases, dataChecksumsEnabled, probeDatabase, relationFiles, runAmcheck, runPgChecksums } from '../../postgres/restore-checks.js';
import { countTables } from '../../postgres/user-tables.js';
import type { RestoreTestCheck } from '../../repo/restore-tests.js';
import type { OsIds } from '../../postgres/osuser.js';

/** The newest dump of each database: what its tables held then. */
export type DumpCounts = Record<string, { id: string; consistentAt?: string; rowCounts: Record<string, number> }>;

export interface CheckInput {
  conn: (database?: string) => ConnectionSettings;
  dumps: DumpCounts;
  critical: CriticalTable[];
  heapallindexed: boolean;
  signal: AbortSignal;
  add: (c: RestoreTestCheck) => void;
}

/** The checks that need the server running; returns what pg_checksums needs once it is stopped. */
export async function checkRunningCluster(i: CheckInput): Promise<{ checksums: boolean; files: Record<string, string> }> {
  const databases = await connectableDatabases(i.conn());
  for (const db of databases) {
    i.signal.throwIfAborted();
    try {
      const p = await probeDatabase(i.conn(db));
      i.add({ name: `database ${db} answers`, ok: true, detail: `SELECT 1 and the catalog (${p.relations} relations)` });
    } catch (err) {
      i.add({ name: `database ${db} answers`, ok: false, detail: errorMessage(err) });
    }
  }
  for (const [db, dump] of Object.entries(i.dumps)) {
    i.signal.throwIfAborted();
    if (!databases.includes(db)) {
      i.add({ name: `rows of ${db}`, ok: false, detail: `database ${db} is missing from the recovered cluster, though dump ${dump.id} has it` });
      continue;
    }
    i.add(await compareWithDump(i.conn(db), db, dump, i.signal));
  }
  for (const t of i.critical) {
    i.signal.throwIfAborted();
    const key = t.table.includes('.') ? t.table : `public.${t.table}`;
    let rows: number | undefined;
    try {
      await countTables(i.conn(t.database), [key], { signal: i.signal, onTable: (_k, n) => (rows = n) });
    } catch (err) {
      i.add({ name: `critical table ${t.database}.${key}`, ok: false, detail: errorMessage(err) });
      continue;
    }
    const min = t.minRows ?? 1;
    i.add({ name: `critical table ${t.database}.${key}`, ok: rows !== undefined && rows >= min, detail: rows === undefined ? 'missing' : `${rows} rows (minimum ${min})` });
  }
  const am = await runAmcheck(i.conn(), { heapallindexed: i.heapallindexed, signal: i.signal });
  i.add({
    name: `pg_amcheck${i.heapallindexed ? ' --heapallindexed' : ''}`,
    ok: am.ok,
    detail: am.ok
      ? `every heap table and btree index of ${databases.length} database(s) checked`
      : am.corrupt.length
        ? `corrupt: ${am.corrupt.map((c) => `${c.relation} (${c.problem})`).join('; ')}`
        : `could not check: ${am.failure}`,
  });
  const checksums = await dataChecksumsEnabled(i.conn());
  return { checksums, files: checksums ? await relationFiles(i.conn(), databases) : {} };
}

/** Every table of the dump is there with at least the dump's rows (a table may have grown since). */
async function compareWithDump(conn: ConnectionSettings, db: string, dump: DumpCounts[string], signal: AbortSignal): Promise<RestoreTestCheck> {
  const missing: string[] = [];
  const shrank: string[] = [];
  let tables = 0;
  try {
    await countTables(conn, Object.keys(dump.rowCounts), {
      signal,
      onTable: (key, rows) => {
        tables++;
        const then = dump.rowCounts[key];
        if (rows === undefined) missing.push(key);
        else if (rows < then) shrank.push(`${key} ${rows} < ${then}`);
      },
    });
  } catch (err) {
    return { name: `rows of ${db}`, ok: false, detail: errorMessage(err) };
  }
  const ok = !missing.length && !shrank.length;
  const parts = [...(missing.length ? [`missing: ${missing.join(', ')}`] : []), ...(shrank.length ? [`fewer rows than dump ${dump.id}: ${shrank.join(', ')}`] : [])];
  return { name: `rows of ${db}`, ok, detail: ok ? `${tables} tables, each with at least the rows of dump ${dump.id}` : parts.join('; ') };
}

/** pg_checksums --check on the stopped data directory. */
export async function checkStoppedCluster(dataDir: string, owner: OsIds | undefined, files: Record<string, string>, signal: AbortSignal): Promise<RestoreTestCheck> {
  const r = await runPgChecksums(dataDir, owner, files, signal);
  if (r.ok) return { name: 'pg_checksums --check', ok: true, detail: 'every page of the data directory has a valid checksum' };
  if (r.bad.length) return { name: 'pg_checksums --check', ok: false, detail: `bad pages: ${r.bad.map((b) => `${b.relation ?? b.file} (${b.detail})`).join('; ')}` };
  return { name: 'pg_checksums --check', ok: false, detail: `could not check: ${r.failure}` };
}
