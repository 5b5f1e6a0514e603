// Logical restore: a dump made by backup-logical restored into a NEW database (never over an
// existing one) owned by the role that owned the original (as the dump records it), `pg_restore -j`
// from a private temporary copy of the dump whose SHA-256 is checked while it downloads, every
// table's row count compared with dump.json, the connection strings to change, and, after a typed
// confirmation (asked before anything is created, and again before renaming), an atomic swap of
// names with the original (kept under a dated name, never dropped).
import { errorMessage, shellQuote } from '../engine/runner.js';
import { describeConnection, type ConnectionSettings } from '../config/connection.js';
import {
  byHand,
  createDatabase,
  createDatabaseClauses,
  databaseOids,
  databaseOwner,
  maintenanceConnection,
  mayGiveDatabaseTo,
  swapDatabaseNames,
} from '../postgres/databases.js';
import { dumpDatabaseOwner, readToc, runPgRestore } from '../postgres/programs/pg_restore.js';
import { countTables } from '../postgres/user-tables.js';
import { describeDump, dumpFolder, readDumpMeta, withRepository } from '../repo/dump-files.js';
import { parseTarget, TARGET_FORMS } from '../restore/target.js';
import { defineProcedure } from './define.js';
import { checkScratchRemoved, recoverAndDump, removeScratch, scratchDumpDir } from './logical-restore/at.js';
import { connectionChanges } from './logical-restore/connection-strings.js';
import { identTooLong, MAX_IDENT_BYTES } from './logical-restore/names.js';
import { newDatabaseParam, preflight, swapWhat, workDirParam } from './logical-restore/preflight.js';
import { dropOurDatabase, dropWorkFile, ensureDumpFile } from './logical-restore/steps-common.js';
import { MAX_JOBS, planOf, type LogicalRestoreContext, type LogicalRestoreParams, type LogicalRestoreState } from './logical-restore/types.js';

export const logicalRestoreProcedure = defineProcedure<LogicalRestoreParams, LogicalRestoreState>({
  id: 'logical-restore',
  title: 'Restore a dump into a new database',
  summary: 'A dump from the repository restored with pg_restore -j into a NEW database, every table\'s row count checked against the dump, the connection strings to change, and an optional confirmed swap of names.',
  group: 'restore',
  params: [
    { name: 'database', type: 'string', required: true, description: 'the database whose dump to restore (as dumped by backup-logical)', example: 'app' },
    { name: 'dump', type: 'string', description: 'the dump id to restore (default: the newest complete one; see pgrunbook catalog)', example: '20261124T031500Z' },
    { name: 'newDatabase', type: 'string', description: 'name of the database to create (default: <database>_restored_<YYYYMMDDHHMM>); it must not exist', example: 'app_restored' },
    { name: 'jobs', type: 'number', default: 2, description: `pg_restore parallel jobs (1-${MAX_JOBS})`, example: '4' },
    {
      name: 'swap',
      type: 'boolean',
      default: false,
      description: 'after the checks, swap names: the original becomes <database>_replaced_<stamp> (kept), the restored one takes its name (typed confirmation: the database name)',
    },
    { name: 'workDir', type: 'string', description: 'directory for the temporary copy of the dump (default: the system temp directory); deleted afterwards', example: '/var/tmp' },
    {
      name: 'at',
      type: 'string',
      description: `restore the database as it was at this moment instead of from a dump (also one dropped since): a scratch cluster is recovered beside production to the target, pitr's syntax: ${TARGET_FORMS}`,
      example: '2026-11-24T03:14:00Z',
    },
    { name: 'exclusive', type: 'boolean', default: false, description: '--at: stop just before the target instead of just after it' },
    { name: 'scratchDir', type: 'string', description: '--at: directory for the scratch cluster and its dump (default: the system temp directory); removed afterwards', example: '/var/tmp' },
  ],
  validate(params) {
    const errors: string[] = [];
    const { jobs, newDatabase: nd } = params;
    if (jobs !== undefined && !(Number.isInteger(jobs) && jobs >= 1 && jobs <= MAX_JOBS)) {
      errors.push(`--jobs: expected a whole number from 1 to ${MAX_JOBS}, got ${String(jobs)}`);
    }
    if (nd !== undefined && identTooLong(nd)) errors.push(`--new-database: "${nd}" is longer than ${MAX_IDENT_BYTES} bytes, which PostgreSQL would cut short; choose a shorter name`);
    if (params.at !== undefined) {
      const t = parseTarget(params.at);
      if ('error' in t) errors.push(t.error.replace(/^--target/, '--at'));
      if (params.dump !== undefined) errors.push('--dump and --at exclude each other: the database comes from a dump, or from the archive at a moment');
    } else if (params.exclusive || params.scratchDir !== undefined) {
      errors.push('--exclusive and --scratch-dir only apply with --at TARGET');
    }
    if (nd !== undefined && nd === params.database) errors.push(`--new-database must differ from --database (${nd}): pgrunbook never restores over a database`);
    return errors;
  },
  steps: [
    {
      id: 'preflight',
      title: 'Choose the dump and check the target',
      kind: 'check',
      describe: (ctx) =>
        `Before anything is created: the repository holds a complete dump of ${ctx.params.database}, the server answers, ` +
        `the new database's name is free, pg_restore can read the dump, and ${workDirParam(ctx.params)} has room for it.`,
      plan: (ctx) => [
        `list ${dumpFolder(ctx.params.database)} in ${ctx.services.repo ?? '(no repository: pass --repo URL or set PGRUNBOOK_REPO)'}; pick ${ctx.params.dump ? `dump ${ctx.params.dump}` : 'the newest dump with a dump.json'}`,
        `connect to ${describeConnection(ctx.services.connection)}; refuse if database ${newDatabaseParam(ctx.params)} exists`,
        `check free space in ${workDirParam(ctx.params)} for the dump`,
        ...(ctx.params.swap ? [`ask to confirm the swap now, before anything is created (type "${ctx.params.database}" or pass --confirm ${shellQuote(ctx.params.database)}); it is asked again right before the renames`] : []),
      ],
      run: preflight,
    },
    {
      id: 'download',
      title: 'Download the dump',
      kind: 'action',
      describe: (ctx) => `Copying ${ctx.state.plan ? describeDump(ctx.state.plan.dump) : 'the dump'} into a private temporary directory under ${workDirParam(ctx.params)}, checking its SHA-256 (pg_restore -j needs a file it can seek in).`,
      plan: (ctx) => [`download the dump into ${workDirParam(ctx.params)}/pgrunbook-restore-XXXXXX/ (mode 0700), verifying SHA-256 and size against dump.json`],
      run: download,
    },
    {
      id: 'restore',
      title: 'Create the new database and run pg_restore',
      kind: 'action',
      describe: (ctx) => {
        const p = ctx.state.plan;
        return p
          ? `CREATE DATABASE ${p.newDatabase}, then pg_restore --jobs=${p.jobs} into it. If it fails, the new database is dropped again (nothing else is touched).`
          : 'CREATE DATABASE, then pg_restore -j into it.';
      },
      plan: (ctx) => [
        `CREATE DATABASE ${newDatabaseParam(ctx.params)} TEMPLATE template0 (encoding and locale of ${ctx.params.database}) OWNER <its owner as the dump records it>`,
        `pg_restore --verbose --exit-on-error --jobs=${ctx.params.jobs ?? 2} --dbname <new database> <the downloaded dump>; then delete the downloaded copy`,
      ],
      run: restore,
    },
    {
      id: 'counts',
      title: 'Compare every table\'s row count with the dump',
      kind: 'verify',
      describe: (ctx) => `Counting the rows of every table in ${ctx.state.plan?.newDatabase ?? 'the new database'} (count(*)) against the counts dump.json recorded in the dump's own snapshot.`,
      plan: () => ['the new database\'s owner must be the original\'s; count(*) of every table listed in dump.json in the new database; each must equal dump.json'],
      run: compareCounts,
    },
    {
      id: 'connections',
      title: 'Show the connection strings to change',
      kind: 'check',
      describe: () => 'The connection strings applications use, before and after: what to change to use the restored database.',
      skipIf: (ctx) => (ctx.state.countsOk === false ? 'the row counts do not match the dump: do not point applications at this database' : undefined),
      plan: (ctx) => [`print old -> new connection strings for ${ctx.params.database}`],
      run: showConnectionStrings,
    },
    {
      id: 'swap',
      title: 'Swap the names of the original and the restored database',
      kind: 'action',
      destructive: {
        what: (ctx) => swapWhat(ctx),
        confirmText: (ctx) => ctx.params.database,
        confirmMeaning: () => "the database's name",
      },
      skipIf: (ctx) => (ctx.params.swap ? undefined : 'not asked for (pass --swap to exchange the names after a typed confirmation)'),
      describe: (ctx) => `${swapWhat(ctx)}; both renames happen in one transaction, so either both happen or neither.`,
      plan: (ctx) => [
        `terminate the other sessions of ${ctx.params.database} and of the new database (pg_terminate_backend)`,
        `BEGIN; ALTER DATABASE ${ctx.params.database} RENAME TO ${ctx.params.database}_replaced_<stamp>; ALTER DATABASE <new> RENAME TO ${ctx.params.database}; COMMIT`,
      ],
      run: swap,
    },
    {
      id: 'verify-swap',
      title: 'Verify the swap',
      kind: 'verify',
      skipIf: (ctx) => (ctx.params.swap ? undefined : 'no swap asked for'),
      describe: (ctx) => `Checking that ${ctx.params.database} is now the restored database and that the original is kept under its dated name.`,
      plan: () => ['compare database oids by name in pg_database'],
      run: verifySwap,
    },
  ],
});

/** Download the dump and read its table of contents: how many items, and who owned the database. */
async function download(ctx: LogicalRestoreContext): Promise<void> {
  const p = planOf(ctx);
  if (p.at) return recoverAndDump(ctx);
  try {
    const wf = await ensureDumpFile(ctx, p.dump, p.workDir, { progress: true });
    const [toc, withCreate] = await Promise.all([
      readToc(p.pgRestore, wf.file, { env: ctx.services.env, signal: ctx.signal }),
      readToc(p.pgRestore, wf.file, { env: ctx.services.env, signal: ctx.signal, create: true }),
    ]);
    ctx.state.tocEntries = toc.entries.length;
    ctx.state.dumpOwner = dumpDatabaseOwner(withCreate, p.dump.database);
    ctx.log(`the dump's table of contents has ${toc.entries.length} entries${ctx.state.dumpOwner ? `; ${p.dump.database} belonged to "${ctx.state.dumpOwner}" when dumped` : ''}`);
  } catch (err) {
    await dropWorkFile(ctx);
    throw err;
  }
}

/** The role the restored database is to belong to: the dump's owner, else the original's, if it exists here and may be given. */
async function chooseOwner(ctx: LogicalRestoreContext, maint: ConnectionSettings): Promise<string | undefined> {
  const p = planOf(ctx);
  const candidates = [ctx.state.dumpOwner, p.originalOwner].filter((x): x is string => Boolean(x));
  if (!candidates.length) {
    ctx.log(`neither the dump nor the server names an owner of ${p.dump.database}: the new database belongs to "${p.user}"`, 'warn');
    return undefined;
  }
  for (const role of candidates) {
    const may = await mayGiveDatabaseTo(maint, role);
    if (may === 'missing') {
      ctx.log(`role "${role}" (owner of ${p.dump.database}) does not exist on this server`, 'warn');
      continue;
    }
    if (may === 'not-allowed') {
      ctx.log(`user "${p.user}" may not give a database to role "${role}" (not a superuser, not a member): the new database belongs to "${p.user}"; as a superuser: ${byHand.alterDatabaseOwner(p.newDatabase, role)}`, 'warn');
      return undefined;
    }
    return role;
  }
  ctx.log(`the new database belongs to "${p.user}"; create the owner role, then: ${byHand.alterDatabaseOwner(p.newDatabase)}`, 'warn');
  return undefined;
}

/** Create the new database (afresh when an earlier attempt left it half-restored), owned as the original was. */
async function createNewDatabase(ctx: LogicalRestoreContext): Promise<void> {
  const p = planOf(ctx);
  if (ctx.state.created && !ctx.state.restored) {
    // A resumed run whose earlier attempt stopped half-way (a crash, a lost host): start the database afresh.
    if (!(await dropOurDatabase(ctx, p.newDatabase, 'an earlier attempt of this run left it half-restored'))) {
      throw new Error(`database ${p.newDatabase} is left half-restored by an earlier attempt and could not be dropped; drop it, then resume`);
    }
    ctx.state.created = false;
  }
  if (ctx.state.created) return;
  const maint = await maintenanceConnection(ctx.services.connection, [p.newDatabase]);
  const owner = await chooseOwner(ctx, maint);
  ctx.state.owner = owner;
  const clauses = await createDatabaseClauses(maint, p.originalExists ? p.dump.database : undefined, owner);
  if ((await createDatabase(maint, p.newDatabase, clauses)) === 'exists') {
    throw new Error(`database "${p.newDatabase}" already exists (created since the checks): pgrunbook never restores over a database; choose another --new-database`);
  }
  ctx.state.created = true;
  ctx.log(`created database ${p.newDatabase} (${clauses})`);
}

async function restore(ctx: LogicalRestoreContext): Promise<void> {
  const p = planOf(ctx);
  const env = ctx.services.env;
  try {
    if (p.at && !ctx.state.scratchDumped) await recoverAndDump(ctx);
    const file = p.at ? scratchDumpDir(ctx) : (await ensureDumpFile(ctx, p.dump, p.workDir)).file;
    await createNewDatabase(ctx);
    const total = ctx.state.tocEntries ?? (await readToc(p.pgRestore, file, { env, signal: ctx.signal })).entries.length;
    ctx.progress({ done: 0, total, unit: 'items' });
    const r = await runPgRestore({
      pgRestore: p.pgRestore,
      connection: { ...ctx.services.connection, database: p.newDatabase },
      file,
      jobs: p.jobs,
      args: p.keepOwners ? [] : ['--no-owner', '--no-privileges'],
      signal: ctx.signal,
      env,
      onItem: (n) => ctx.progress({ done: Math.min(n, total), total, unit: 'items' }),
      onMessage: (line) => ctx.log(line, /error/i.test(line) ? 'error' : 'warn'),
    });
    ctx.progress({ done: total, total, unit: 'items' });
    ctx.log(`pg_restore finished: ${r.items} items restored into ${p.newDatabase} with ${p.jobs} job(s)`);
    ctx.log(`not in a dump and so not restored: settings and grants on the database itself (ALTER DATABASE ... SET, GRANT ... ON DATABASE) and roles; compare with the original if applications need them`);
    ctx.state.restored = true;
  } catch (err) {
    // A half-restored database is of no use and nobody else knows it: drop it. The original is never touched here.
    if (ctx.state.created && (await dropOurDatabase(ctx, p.newDatabase, 'the restore did not finish'))) ctx.state.created = false;
    const role = /role "([^"]+)" does not exist/.exec(errorMessage(err));
    if (role && !ctx.signal.aborted) {
      throw new Error(`${errorMessage(err)}. Roles are not part of a dump: create role "${role[1]}" on this server first (pg_dumpall --roles-only on the source shows them), then resume`);
    }
    throw err;
  } finally {
    await dropWorkFile(ctx);
    // The scratch cluster has given what it had; a resumed run recovers it again if needed.
    if (p.at) await removeScratch(ctx, ctx.state.restored ? 'the restore is done' : 'the restore did not finish');
  }
}

async function compareCounts(ctx: LogicalRestoreContext): Promise<void> {
  const p = planOf(ctx);
  if (p.at) await checkScratchRemoved(ctx);
  const expected = p.at ? ctx.state.scratchCounts : (await withRepository(ctx.services.repo, ctx.services.env, (repo) => readDumpMeta(repo, p.dump.database, p.dump.id))).rowCounts;
  const source = p.at ? `the scratch cluster at ${p.at}` : 'dump.json';
  if (!expected) {
    ctx.check('row counts', false, `dump.json of ${p.dump.id} has no row counts, so the restore cannot be verified`);
    ctx.state.countsOk = false;
    return;
  }
  const restored = { ...ctx.services.connection, database: p.newDatabase };
  const owner = await databaseOwner(restored);
  const wanted = ctx.state.owner ?? p.user;
  const sameAsOriginal = owner === (ctx.state.dumpOwner ?? p.originalOwner ?? owner);
  let ok = owner === wanted;
  ctx.check(
    'owner',
    ok,
    ok
      ? `${p.newDatabase} belongs to "${owner}"${sameAsOriginal ? `, as ${p.dump.database} did` : ` (${p.dump.database} belonged to another role; see the warning above)`}`
      : `${p.newDatabase} belongs to "${owner}", expected "${wanted}"`,
  );
  const keys = Object.keys(expected).sort();
  let done = 0;
  const { extra } = await countTables(restored, keys, {
    signal: ctx.signal,
    // The restore's jobs count tables side by side too (one big table is counted by one of them).
    connections: p.jobs,
    onTable: (key, rows) => {
      if (rows === undefined) {
        ok = false;
        ctx.check(`rows ${key}`, false, `missing: no table ${key} in ${p.newDatabase}; ${source} says ${expected[key]} rows`);
      } else if (rows === expected[key]) {
        ctx.check(`rows ${key}`, true, `${rows} rows, as in ${source}`);
      } else {
        ok = false;
        ctx.check(`rows ${key}`, false, `${rows} rows in ${p.newDatabase}, ${source} says ${expected[key]}`);
      }
      ctx.progress({ done: ++done, total: keys.length, unit: 'tables' });
    },
  });
  if (extra.length) ctx.log(`tables in ${p.newDatabase} that dump.json has no count for: ${extra.join(', ')}`, 'warn');
  ctx.state.countsOk = ok;
  if (keys.length === 0) ctx.log('dump.json lists no tables: the database was dumped without any');
  if (!ok) ctx.log(`the restored database ${p.newDatabase} is kept for inspection; drop it when done: ${byHand.dropDatabase(p.newDatabase, false)}`, 'error');
}

async function showConnectionStrings(ctx: LogicalRestoreContext): Promise<void> {
  const p = planOf(ctx);
  const changes = connectionChanges(ctx.services.connection, p.dump.database, p.newDatabase);
  ctx.state.connectionStrings = changes;
  if (ctx.params.swap) {
    ctx.log(`with --swap the names are exchanged next (after the typed confirmation): applications keep their connection strings, and the current ${p.dump.database} is kept as ${p.replacedName}`);
    ctx.log(`without the swap, change them like this:`);
  } else {
    ctx.log(`to use the restored database, change the connection strings (or have the names swapped: run the restore with --swap):`);
  }
  for (const c of changes) ctx.log(`${c.form}: ${c.from} → ${c.to}`);
}

async function swap(ctx: LogicalRestoreContext): Promise<void> {
  const p = planOf(ctx);
  const orig = p.dump.database;
  const maint = await maintenanceConnection(ctx.services.connection, [orig, p.newDatabase]);
  const names = await databaseOids(maint);
  if (!names.has(p.newDatabase)) throw new Error(`database ${p.newDatabase} does not exist any more; nothing was renamed`);
  const origExists = names.has(orig);
  if (origExists !== p.originalExists) {
    throw new Error(`database ${orig} ${origExists ? 'exists again' : 'has disappeared'} since the checks; nothing was renamed. Look at what happened, then run the restore again`);
  }
  if (origExists && names.has(p.replacedName)) throw new Error(`database ${p.replacedName} exists, so ${orig} cannot be kept under that name; nothing was renamed`);
  ctx.state.swapOids = { restored: names.get(p.newDatabase), original: names.get(orig) };
  await swapDatabaseNames(maint, {
    original: orig,
    restored: p.newDatabase,
    replaced: p.replacedName,
    originalExists: origExists,
    serverVersionNum: p.serverVersionNum,
    signal: ctx.signal,
    log: (message, level) => ctx.log(message, level),
  });
  ctx.state.swapped = true;
  ctx.log(p.originalExists ? `renamed ${orig} to ${p.replacedName} and ${p.newDatabase} to ${orig}` : `renamed ${p.newDatabase} to ${orig}`);
  if (p.originalExists) ctx.log(`the previous ${orig} is kept as ${p.replacedName}; drop it once you no longer need it: ${byHand.dropDatabase(p.replacedName, false)}`);
}

async function verifySwap(ctx: LogicalRestoreContext): Promise<void> {
  const p = planOf(ctx);
  const orig = p.dump.database;
  const oids = ctx.state.swapOids;
  const conn = ctx.services.connection;
  const names = await databaseOids(conn.database === orig ? await maintenanceConnection(conn, [orig]) : conn);
  ctx.check(`${orig} is the restored database`, Boolean(oids?.restored) && names.get(orig) === oids?.restored, names.has(orig) ? `oid ${names.get(orig)}, restored database's oid ${oids?.restored}` : `${orig} does not exist`);
  if (p.originalExists) {
    ctx.check(`${p.replacedName} is the original`, Boolean(oids?.original) && names.get(p.replacedName) === oids?.original, names.has(p.replacedName) ? `oid ${names.get(p.replacedName)}, original's oid ${oids?.original}` : `${p.replacedName} does not exist`);
  }
  ctx.check(`${p.newDatabase} renamed away`, !names.has(p.newDatabase), names.has(p.newDatabase) ? `${p.newDatabase} still exists` : 'gone');
}
