// The table restore's checks, all before anything is created or changed: a complete dump of the
// database that counts the table, the server and the user's rights, the live table as it is now
// (and, replacing it, whether its rows can be replaced without changing anything else), the names
// to create, the client programs, and room for the dump's copy.
import os from 'node:os';
import { describeConnection } from '../../config/connection.js';
import { findPgBinary } from '../../postgres/binaries.js';
import { byHand, serverAndRole, type ServerAndRole } from '../../postgres/databases.js';
import { findPgRestore } from '../../postgres/programs/pg_restore.js';
import { inspectLiveTable } from '../../postgres/tables.js';
import { chooseDump, describeDump, withRepository, type ChosenDump } from '../../repo/dump-files.js';
import { fitName, nameStamp } from '../logical-restore/names.js';
import { Preflight, checkWorkDirectory } from '../logical-restore/steps-common.js';
import { notInDumpMessage, tableSetOf, tempDatabaseName } from './names.js';
import { planScratchFor } from './at.js';
import { referencesCheck, triggersCheck } from './replace-checks.js';
import { label, modeOf, type Mode, type TableRestoreContext, type TableRestorePlan } from './types.js';

interface DumpFound {
  chosen: ChosenDump;
  dumpRows?: number;
  /** Not in dump.json's counts: refused unless the live table is partitioned (its rows are counted in its partitions). */
  notCounted?: { message: string; counts: Record<string, number> };
}

/** The dump to restore from, and what its dump.json says of the table. */
async function findDump(ctx: TableRestoreContext, pf: Preflight, schema: string, table: string): Promise<DumpFound | undefined> {
  return withRepository(ctx.services.repo, ctx.services.env, (repo) =>
    pf.attempt('dump', async () => {
      const { chosen, meta } = await chooseDump(repo, ctx.params.database, ctx.params.dump);
      const key = label(schema, table);
      // dump.json lists every table whose rows were dumped: a missing one is refused before downloading anything.
      if (meta.rowCounts && !(key in meta.rowCounts)) {
        return { chosen, notCounted: { message: notInDumpMessage(schema, table, { dump: chosen }, Object.keys(meta.rowCounts)), counts: meta.rowCounts } };
      }
      const dumpRows = meta.rowCounts?.[key];
      pf.pass('dump', `${describeDump(chosen)}${dumpRows !== undefined ? `; ${key}: ${dumpRows} rows in dump.json` : ''}`);
      return { chosen, dumpRows };
    }),
  );
}

interface LiveFacts {
  live: TableRestorePlan['live'];
  encoding: string;
  replica: boolean;
  partitioned: boolean;
}

/** The live table, its schema, and the names to create; replacing: whether its rows can be replaced. */
async function checkLiveTable(
  pf: Preflight,
  ctx: TableRestoreContext,
  server: ServerAndRole,
  where: { schema: string; table: string; mode: Mode; newTable?: string },
): Promise<LiveFacts | undefined> {
  const { database } = ctx.params;
  const { schema, table, mode, newTable } = where;
  const info = await pf.attempt('database', () => inspectLiveTable({ ...ctx.services.connection, database }, { schema, table, newTable }, server));
  if (!info) return undefined;
  const facts: LiveFacts = { live: { exists: false }, encoding: info.encoding, replica: false, partitioned: info.rel?.relkind === 'p' };
  if (info.rel && info.rel.relkind !== 'r' && info.rel.relkind !== 'p') {
    pf.fail('live table', `${label(schema, table)} in ${database} is not a table (relkind ${info.rel.relkind}); table-restore restores tables`);
  } else if (info.rel) {
    facts.live = { exists: true, rows: info.rows };
    pf.pass('live table', `${label(schema, table)} in ${database}: ${info.rows} rows now`);
  } else {
    pf.pass('live table', `${label(schema, table)} does not exist in ${database} (dropped?)${mode === 'replace' ? '' : `: it comes back as ${label(schema, newTable!)}`}`);
  }
  if (!info.schemaExists) pf.fail('schema', `schema "${schema}" does not exist in ${database}: create it first (${byHand.createSchema(schema)}), then run this again`);
  if (mode === 'replace') {
    if (!info.rel) {
      pf.fail('replace possible', `--mode replace needs the live table, and ${label(schema, table)} does not exist in ${database}; use --mode new-table to bring it back`);
    } else {
      facts.replica = info.mayReplica;
      const replaceFacts = { schema, table, user: server.user, refs: info.refs, triggers: info.triggers, mayReplica: info.mayReplica, mayAlter: info.mayAlter };
      for (const outcome of [referencesCheck(replaceFacts), triggersCheck(replaceFacts)]) {
        if (outcome?.ok) pf.pass(outcome.name, outcome.detail);
        else if (outcome) pf.fail(outcome.name, outcome.detail);
      }
    }
  } else if (info.newTaken) {
    pf.fail('new table name free', `${label(schema, newTable!)} already exists in ${database}; pass another name with --new-table NAME`);
  } else {
    pf.pass('new table name free', label(schema, newTable!));
  }
  return facts;
}

/** The server, the user's right to create the temporary database, and the names on it. */
function checkServer(pf: Preflight, ctx: TableRestoreContext, server: ServerAndRole, tempDatabase: string): boolean {
  const { database } = ctx.params;
  if (ctx.params.at) {
    // --at creates nothing on production but the restored table: no temporary database.
  } else if (!server.superuser && !server.createdb) {
    pf.fail('may create databases', `user "${server.user}" may not create the temporary database (needs CREATEDB or superuser): ${byHand.allowCreatedb(server.user)}, or connect as another user`);
  }
  if (!ctx.params.at && server.databases.has(tempDatabase)) {
    pf.fail('temporary database name free', `database "${tempDatabase}" already exists; it is not ours to reuse. Drop it if it is left over from an old run`);
  }
  if (!server.databases.has(database)) {
    pf.fail(
      'database',
      `database "${database}" does not exist on ${describeConnection(ctx.services.connection)}: a table is restored into its database. To bring back a whole database use: pgrunbook --procedure logical-restore --database ${database}`,
    );
    return false;
  }
  return true;
}

export async function preflight(ctx: TableRestoreContext): Promise<void> {
  const { database } = ctx.params;
  const set = tableSetOf(ctx.params);
  const { schema, table } = set[0];
  const mode = modeOf(ctx.params);
  const pf = new Preflight(ctx);

  const at = ctx.params.at;
  const dump = at ? undefined : await findDump(ctx, pf, schema, table);
  const tempDatabase = tempDatabaseName(ctx.runId);
  const newTable = mode === 'new-table' ? (ctx.params.newTable ?? fitName(table, `_restored_${nameStamp()}`)) : undefined;
  const conn = ctx.services.connection;
  const server = await pf.attempt('server reachable', () => serverAndRole(conn));
  if (server) pf.pass('server reachable', `${describeConnection(conn)}, PostgreSQL ${server.version}`);

  const facts = server && checkServer(pf, ctx, server, tempDatabase) ? await checkLiveTable(pf, ctx, server, { schema, table, mode, newTable }) : undefined;
  // --tables: every other table checked the same way; replica only when it is allowed for all.
  const others = set.slice(1).map((t) => ({ ...t, newTable: mode === 'new-table' ? fitName(t.table, `_restored_${nameStamp()}`) : undefined }));
  for (const t of facts && server ? others : []) {
    const f = await checkLiveTable(pf, ctx, server!, { ...t, mode });
    if (facts && f) facts.replica &&= f.replica;
  }

  let programs: { pgRestore: string; psql: string } | undefined;
  if (server) {
    programs = await pf.attempt('client programs', async () => ({ pgRestore: (await findPgRestore(server.versionNum, dump?.chosen.pgDumpVersion)).path, psql: await findPgBinary('psql') }));
    if (programs) pf.pass('client programs', `${programs.pgRestore}, ${programs.psql}`);
  }

  const workDir = ctx.params.workDir ?? os.tmpdir();
  if (!at) await checkWorkDirectory(pf, workDir, dump?.chosen);
  // --at: the recovery plan (backup and WAL read with their checksums) and room for the scratch
  // cluster, checked last: only when everything else passed (it reads the most).
  if (at && !pf.problems.length) {
    const scratch = await pf.attempt('scratch recovery', () => planScratchFor(ctx, at));
    if (scratch) ctx.state.scratch = scratch;
  }

  let dumpCounts: Record<string, number> | undefined;
  if (dump?.notCounted) {
    if (facts?.partitioned) {
      // dump.json counts a partitioned table's rows in its leaf partitions: summed once the dump's partitions are known.
      dumpCounts = dump.notCounted.counts;
      pf.pass('dump', `${describeDump(dump.chosen)}; ${label(schema, table)} is partitioned: dump.json counts its rows in its partitions`);
    } else {
      pf.fail('table in the dump', dump.notCounted.message);
    }
  }
  pf.refuseIfAny('cannot restore the table', 'Nothing was created or changed');
  if ((!dump && !at) || !programs) throw new Error('cannot restore the table: the checks did not finish. Nothing was created or changed');
  ctx.state.plan = {
    dump: dump?.chosen,
    at,
    database,
    schema,
    table,
    mode,
    newTable,
    tempDatabase,
    live: facts?.live ?? { exists: false },
    dumpRows: dump?.dumpRows,
    pgRestore: programs.pgRestore,
    psql: programs.psql,
    workDir,
    encoding: facts?.encoding ?? 'UTF8',
    replica: facts?.replica ?? false,
    dumpCounts,
    ...(ctx.params.tables !== undefined ? { set: [{ schema, table, newTable }, ...others] } : {}),
  };
}
