// restore-test --dumps: the newest dump of each database restored into the scratch cluster (a new
// database there; the scratch cluster is thrown away) and every table's rows counted against the
// dump's dump.json. A dump restores exactly, so the counts must be equal. The downloaded copy goes
// under the scratch directory and is removed with it (and right after its restore).
import type { ConnectionSettings } from '../../config/connection.js';
import { errorMessage } from '../../engine/errors.js';
import { createDatabase, createDatabaseClauses, dropDatabaseForce, serverAndRole } from '../../postgres/databases.js';
import { findPgRestore, runPgRestore } from '../../postgres/programs/pg_restore.js';
import { countTables } from '../../postgres/user-tables.js';
import { chooseDump, downloadDump, removeWorkDir, withRepository } from '../../repo/dump-files.js';
import type { RestoreTestCheck } from '../../repo/restore-tests.js';
import type { DumpCounts } from './checks.js';

export interface DumpRestoreInput {
  repo: string;
  env: NodeJS.ProcessEnv;
  dumps: DumpCounts;
  /** Where the downloaded copies go: inside the scratch directory. */
  workDir: string;
  conn: (database?: string) => ConnectionSettings;
  signal: AbortSignal;
  log: (message: string) => void;
  add: (c: RestoreTestCheck) => void;
}

/** One check per dump: "dump <db> <id> restores". */
export async function checkDumpRestores(i: DumpRestoreInput): Promise<void> {
  const entries = Object.entries(i.dumps);
  if (!entries.length) {
    i.log('--dumps: there is no complete dump in the repository to restore');
    return;
  }
  const server = await serverAndRole(i.conn());
  let n = 0;
  for (const [db, dump] of entries) {
    i.signal.throwIfAborted();
    const target = `pgrunbook_dumpcheck_${++n}`;
    const name = `dump ${db} ${dump.id} restores`;
    try {
      const detail = await restoreOne(i, db, dump, target, server.versionNum);
      i.add({ name, ...detail });
    } catch (err) {
      if (i.signal.aborted) throw err;
      i.add({ name, ok: false, detail: `could not restore it: ${errorMessage(err)}` });
    }
  }
}

async function restoreOne(i: DumpRestoreInput, db: string, dump: DumpCounts[string], target: string, versionNum: number): Promise<{ ok: boolean; detail: string }> {
  const { chosen } = await withRepository(i.repo, i.env, (repo) => chooseDump(repo, db, dump.id));
  const pgRestore = await findPgRestore(versionNum, chosen.pgDumpVersion);
  const maint = i.conn('postgres');
  // The recovered copy of the database gives the new one its encoding and locale.
  if ((await createDatabase(maint, target, await createDatabaseClauses(maint, db))) === 'exists') {
    throw new Error(`database ${target} already exists in the scratch cluster`);
  }
  const local = await downloadDump(i.repo, i.env, chosen, i.workDir, { signal: i.signal, onStart: i.log });
  const started = Date.now();
  try {
    await runPgRestore({
      pgRestore: pgRestore.path,
      connection: i.conn(target),
      file: local.file,
      jobs: 2,
      // Roles exist (the scratch cluster is a copy of production), but owners and tablespaces
      // need not matter here; subscriptions must never connect anywhere from a scratch cluster.
      args: ['--no-owner', '--no-tablespaces', '--no-subscriptions'],
      signal: i.signal,
      env: { PATH: process.env.PATH },
    });
  } finally {
    await removeWorkDir(local.dir);
  }
  const seconds = Math.round((Date.now() - started) / 100) / 10;
  const missing: string[] = [];
  const differ: string[] = [];
  await countTables(i.conn(target), Object.keys(dump.rowCounts), {
    signal: i.signal,
    onTable: (key, rows) => {
      const then = dump.rowCounts[key];
      if (rows === undefined) missing.push(key);
      else if (rows !== then) differ.push(`${key} ${rows} (dump.json: ${then})`);
    },
  });
  // Its space back before pg_checksums reads the data directory.
  await dropDatabaseForce(maint, target);
  const tables = Object.keys(dump.rowCounts).length;
  if (!missing.length && !differ.length) return { ok: true, detail: `pg_restore -j 2 in ${seconds} s; ${tables} tables, each with exactly the rows dump.json records` };
  const parts = [...(missing.length ? [`missing after the restore: ${missing.join(', ')}`] : []), ...(differ.length ? [`row counts differ from dump.json: ${differ.join(', ')}`] : [])];
  return { ok: false, detail: parts.join('; ') };
}
