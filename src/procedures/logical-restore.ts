// Logical restore: a dump made by backup-logical restored into a NEW database (never over an
// existing one) owned by the role that owned the original (as the dump records it), `pg_restore -j`
// from a private temporary copy of the dump whose SHA-256 is checked while it downloads, every
// table's row count compared with dump.json, the connection strings to change, and, after a typed
// confirmation (asked before anything is created, and again before renaming), an atomic swap of
// names with the original (kept under a dated name, never dropped).
import os from 'node:os';
import fsp from 'node:fs/promises';
import type { Procedure, StepContext } from '../engine/types.js';
import { ConfirmationRefusedError } from '../engine/types.js';
import { errorMessage, shellQuote } from '../engine/runner.js';
import { formatBytes } from '../engine/format.js';
import { describeConnection, type ConnectionSettings } from '../config/connection.js';
import { withPg } from '../postgres/client.js';
import { findPgClientFor, serverMajor } from '../postgres/pgdump.js';
import {
  checkFreeSpace,
  downloadToFile,
  freeSpaceMessage,
  quoteIdent,
  quoteLiteral,
  readToc,
  removeWorkDir,
  runPgRestore,
  type Toc,
} from '../postgres/pgrestore.js';
import { DUMP_META, DUMP_PREFIX, type DumpMeta } from '../storage/catalog.js';
import { openRepository, safeName, type Repository } from '../storage/repository.js';
import { ANY_TABLES_SQL, USER_TABLES_SQL } from '../postgres/user-tables.js';
import { services } from './services.js';

const MAX_JOBS = 32;
/** PostgreSQL truncates longer identifiers silently (NAMEDATALEN - 1). */
const MAX_IDENT_BYTES = 63;

// ---------------------------------------------------------------------------------------------
// Shared with table-restore: finding a dump, downloading it, names, connections.

/** The dump a run restores, as journaled in the run's state (JSON; no row counts: dump.json is re-read). */
export interface ChosenDump {
  database: string;
  id: string;
  /** The archive's key in the repository. */
  key: string;
  metaKey: string;
  sha256?: string;
  size?: number;
  consistentAt?: string;
  pgDumpVersion?: string;
}

/** Complete (dump.json present) and incomplete dump ids of one database, oldest first. */
export async function listDumpIds(repo: Repository, database: string): Promise<{ complete: string[]; incomplete: string[] }> {
  const prefix = `${DUMP_PREFIX}${safeName(database)}/`;
  const ids = new Map<string, boolean>();
  for await (const entry of repo.store.list(prefix)) {
    const parts = entry.key.slice(prefix.length).split('/');
    if (parts.length < 2) continue;
    const id = parts[0];
    ids.set(id, (ids.get(id) ?? false) || parts.slice(1).join('/') === DUMP_META);
  }
  const sorted = [...ids.keys()].sort();
  return { complete: sorted.filter((id) => ids.get(id)), incomplete: sorted.filter((id) => !ids.get(id)) };
}

export async function readDumpMeta(repo: Repository, database: string, id: string): Promise<DumpMeta> {
  const key = repo.dumpKey(database, id, DUMP_META);
  const info = await repo.store.head(key);
  if (!info) throw new Error(`${key} does not exist in ${repo.describe()}`);
  const chunks: Buffer[] = [];
  for await (const chunk of await repo.getVerified(key, info.metadata.sha256)) chunks.push(chunk as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString('utf8')) as DumpMeta;
}

/** The dump `id` of `database`, or its newest complete one. Throws naming the dumps there are. */
export async function chooseDump(repo: Repository, database: string, id: string | undefined): Promise<{ chosen: ChosenDump; meta: DumpMeta }> {
  const { complete, incomplete } = await listDumpIds(repo, database);
  const available = complete.length ? `complete dumps of ${database}: ${complete.slice(-10).join(', ')}${complete.length > 10 ? ` (and ${complete.length - 10} older)` : ''}` : `there is no complete dump of ${database}`;
  if (id !== undefined && !complete.includes(id)) {
    const why = incomplete.includes(id) ? `dump ${id} of ${database} is incomplete (no ${DUMP_META}: it failed or is still running) and is never restored` : `there is no dump ${id} of ${database}`;
    throw new Error(`${why} in ${repo.describe()}; ${available}. Pass one of them with --dump ID, or leave --dump out for the newest`);
  }
  if (complete.length === 0) {
    throw new Error(
      `${available} in ${repo.describe()}${incomplete.length ? ` (${incomplete.length} incomplete, never restored)` : ''}. ` +
        `Check --database and --repo, or make one with: pgrunbook --procedure backup-logical --databases ${database}`,
    );
  }
  const dumpId = id ?? complete[complete.length - 1];
  const meta = await readDumpMeta(repo, database, dumpId);
  if (meta.database !== undefined && meta.database !== database) {
    throw new Error(`dump ${dumpId} under ${DUMP_PREFIX}${safeName(database)}/ is a dump of "${meta.database}", not of "${database}" (names that differ only in unusual characters share a folder); pass --database ${meta.database}`);
  }
  if (meta.format !== undefined && meta.format !== 'custom') {
    throw new Error(`dump ${dumpId} of ${database} is in ${meta.format} format; pgrunbook restores custom-format dumps (pg_dump -Fc, as backup-logical makes them)`);
  }
  const object = meta.object ?? `${safeName(database)}.dump`;
  return {
    chosen: {
      database,
      id: dumpId,
      key: repo.dumpKey(database, dumpId, object),
      metaKey: repo.dumpKey(database, dumpId, DUMP_META),
      sha256: meta.sha256,
      size: meta.size,
      consistentAt: meta.consistentAt ?? meta.stopTime,
      pgDumpVersion: meta.pgDumpVersion,
    },
    meta,
  };
}

export function describeDump(d: ChosenDump): string {
  return `dump ${d.id} of ${d.database}${d.consistentAt ? ` (data as of ${d.consistentAt})` : ''}${d.size !== undefined ? `, ${formatBytes(d.size)}` : ''}`;
}

/** 202611240315 (UTC): for names made by a run. */
export function nameStamp(now = new Date()): string {
  return now.toISOString().replace(/[-:T]/g, '').slice(0, 12);
}

/** `base` + `suffix` within PostgreSQL's 63 bytes, shortening `base` if needed. */
export function fitName(base: string, suffix: string): string {
  let b = base;
  while (Buffer.byteLength(b + suffix) > MAX_IDENT_BYTES && b.length > 0) b = b.slice(0, -1);
  return b + suffix;
}

export function identTooLong(name: string): boolean {
  return Buffer.byteLength(name) > MAX_IDENT_BYTES;
}

/** A connection for CREATE/ALTER/DROP DATABASE: never one of `avoid` (a database cannot be renamed or dropped from inside). */
export async function maintenanceConnection(conn: ConnectionSettings, avoid: string[]): Promise<ConnectionSettings> {
  const candidates = [conn.database, 'postgres', 'template1'].filter((d): d is string => Boolean(d) && !avoid.includes(d!));
  let lastError: unknown;
  for (const database of candidates) {
    try {
      await withPg({ ...conn, database }, async () => {});
      return { ...conn, database };
    } catch (err) {
      lastError = err;
    }
  }
  throw new Error(`no database to work from (tried ${candidates.join(', ')}): ${errorMessage(lastError)}`);
}

export interface WorkFile {
  dir: string;
  file: string;
}

/** The dump's private temporary copy, downloaded again when missing (a resumed run, another host). */
export async function ensureDumpFile(ctx: StepContext, chosen: ChosenDump, workDir: string, opts: { progress?: boolean } = {}): Promise<WorkFile> {
  const existing = ctx.state.workFile as WorkFile | undefined;
  if (existing) {
    try {
      const st = await fsp.stat(existing.file);
      if (chosen.size === undefined || st.size === chosen.size) return existing;
    } catch {
      /* gone: download again */
    }
    await removeWorkDir(existing.dir).catch(() => {});
    delete ctx.state.workFile;
  }
  const svc = services(ctx);
  const space = await checkFreeSpace(workDir, chosen.size ?? 0);
  if (!space.ok) throw new Error(freeSpaceMessage(space, `the dump (${formatBytes(chosen.size ?? 0)})`));
  const repo = await openRepository(svc.repo, svc.env);
  try {
    ctx.log(`downloading ${chosen.key} (${formatBytes(chosen.size ?? 0)}) into ${workDir}, checking its SHA-256`);
    const got = await downloadToFile(repo, chosen.key, {
      sha256: chosen.sha256,
      size: chosen.size,
      parentDir: workDir,
      fileName: `${safeName(chosen.database)}.dump`,
      signal: ctx.signal,
      // Only the download step reports bytes: a step that downloads again (a resumed run) reports its own unit.
      onBytes: opts.progress ? (n) => ctx.progress({ done: n, total: chosen.size, unit: 'bytes' }) : undefined,
    });
    if (opts.progress) ctx.progress({ done: got.bytes, total: got.bytes, unit: 'bytes' });
    const wf = { dir: got.dir, file: got.file };
    ctx.state.workFile = wf;
    return wf;
  } catch (err) {
    if (ctx.signal.aborted) throw err;
    throw new Error(`could not download ${chosen.key} from ${repo.describe()}: ${errorMessage(err).replace(/\.+$/, '')}`);
  } finally {
    await repo.close().catch(() => {});
  }
}

/** Delete the dump's temporary copy (journaled state forgets it). Never throws. */
export async function dropWorkFile(ctx: StepContext): Promise<void> {
  const wf = ctx.state.workFile as WorkFile | undefined;
  if (!wf) return;
  try {
    await removeWorkDir(wf.dir);
    delete ctx.state.workFile;
  } catch (err) {
    ctx.log(`could not delete the temporary copy of the dump in ${wf.dir}: ${errorMessage(err)}; delete it by hand`, 'warn');
  }
}

export async function checkWorkDir(dir: string): Promise<string | undefined> {
  try {
    const st = await fsp.stat(dir);
    if (!st.isDirectory()) return `--work-dir ${dir} is not a directory`;
    await fsp.access(dir, fsp.constants.W_OK);
    return undefined;
  } catch (err) {
    return `--work-dir ${dir} cannot be used: ${errorMessage(err)}`;
  }
}

/** pg_restore able to read the dump and talk to the server (the newer of the two majors). */
export async function findPgRestore(serverVersionNum: number, pgDumpVersion: string | undefined): Promise<{ path: string; version: string }> {
  const dumpMajor = pgDumpVersion ? Number(/^(\d+)/.exec(pgDumpVersion)?.[1] ?? 0) : 0;
  const need = Math.max(serverMajor(serverVersionNum), dumpMajor);
  const v = await findPgClientFor('pg_restore', need, String(need));
  return { path: v.path, version: v.full };
}

/** The CREATE DATABASE clauses that give a new database the same encoding and locale as `like`. */
export async function createDatabaseClauses(maint: ConnectionSettings, like: string | undefined): Promise<string> {
  if (!like) return 'TEMPLATE template0';
  return withPg(maint, async (c) => {
    const num = Number((await c.query<{ n: string }>(`SELECT current_setting('server_version_num') AS n`)).rows[0].n);
    const cols =
      num >= 170000
        ? `datlocprovider::text AS provider, datlocale AS icu`
        : num >= 150000
          ? `datlocprovider::text AS provider, daticulocale AS icu`
          : `'c'::text AS provider, NULL::text AS icu`;
    const r = await c.query<{ encoding: string; collate: string; ctype: string; provider: string; icu: string | null }>(
      `SELECT pg_encoding_to_char(encoding) AS encoding, datcollate AS collate, datctype AS ctype, ${cols} FROM pg_database WHERE datname = $1`,
      [like],
    );
    const d = r.rows[0];
    if (!d) return 'TEMPLATE template0';
    let sql = `TEMPLATE template0 ENCODING ${quoteLiteral(d.encoding)} LC_COLLATE ${quoteLiteral(d.collate)} LC_CTYPE ${quoteLiteral(d.ctype)}`;
    if (d.provider === 'i' && d.icu) sql += ` LOCALE_PROVIDER icu ICU_LOCALE ${quoteLiteral(d.icu)}`;
    else if (d.provider === 'b' && d.icu) sql += ` LOCALE_PROVIDER builtin BUILTIN_LOCALE ${quoteLiteral(d.icu)}`;
    return sql;
  });
}

export async function databaseExists(c: { query: (sql: string, params: unknown[]) => Promise<{ rows: unknown[] }> }, name: string): Promise<boolean> {
  return (await c.query(`SELECT 1 FROM pg_database WHERE datname = $1`, [name])).rows.length > 0;
}

/** `DROP DATABASE ... WITH (FORCE)`, only ever of a database this run created. */
export async function dropDatabase(ctx: StepContext, name: string, why: string): Promise<boolean> {
  try {
    const maint = await maintenanceConnection(services(ctx).connection, [name]);
    await withPg(maint, async (c) => {
      try {
        await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
      } catch (err) {
        // Before PostgreSQL 13 there is no FORCE: end the sessions, then drop.
        if ((err as { code?: string }).code !== '42601') throw err;
        await c.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, [name]);
        await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)}`);
      }
    });
    ctx.log(`dropped database ${name} (${why})`);
    return true;
  } catch (err) {
    ctx.log(`could not drop database ${name} (${why}): ${errorMessage(err)}. Drop it by hand: DROP DATABASE ${quoteIdent(name)} WITH (FORCE);`, 'error');
    return false;
  }
}

// Connection strings in the forms applications use: a URI and a conninfo string. Never a password.
function uriHost(host: string | undefined): string {
  if (!host) return '';
  if (host.startsWith('/')) return encodeURIComponent(host);
  return host.includes(':') ? `[${host}]` : host;
}

export function connectionUri(conn: ConnectionSettings, database: string): string {
  const user = conn.user ? `${encodeURIComponent(conn.user)}@` : '';
  const port = conn.port ? `:${conn.port}` : '';
  return `postgresql://${user}${uriHost(conn.host)}${port}/${encodeURIComponent(database)}`;
}

function conninfoValue(v: string): string {
  return /^[^\s'\\]+$/.test(v) && v !== '' ? v : `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

export function connectionConninfo(conn: ConnectionSettings, database: string): string {
  const parts: string[] = [];
  if (conn.host) parts.push(`host=${conninfoValue(conn.host)}`);
  if (conn.port) parts.push(`port=${conn.port}`);
  if (conn.user) parts.push(`user=${conninfoValue(conn.user)}`);
  parts.push(`dbname=${conninfoValue(database)}`);
  return parts.join(' ');
}

/** Log lines "old -> new" for each form, and the same as data for JSON consumers. */
export function connectionChanges(conn: ConnectionSettings, oldDb: string, newDb: string): { form: string; from: string; to: string }[] {
  return [
    { form: 'URI', from: connectionUri(conn, oldDb), to: connectionUri(conn, newDb) },
    { form: 'conninfo', from: connectionConninfo(conn, oldDb), to: connectionConninfo(conn, newDb) },
    { form: 'environment', from: `PGDATABASE=${oldDb}`, to: `PGDATABASE=${newDb}` },
  ];
}

// ---------------------------------------------------------------------------------------------
// The procedure

interface Plan {
  dump: ChosenDump;
  newDatabase: string;
  /** The original's name after a swap: <db>_replaced_<stamp>. */
  replacedName: string;
  originalExists: boolean;
  pgRestore: string;
  pgRestoreVersion: string;
  jobs: number;
  workDir: string;
  /** Superuser: owners and privileges restored as dumped; otherwise --no-owner --no-privileges. */
  keepOwners: boolean;
  serverVersionNum: number;
  /** The original database's owner on the server at the checks (undefined when it does not exist). */
  originalOwner?: string;
  /** The user restoring. */
  user: string;
}

function plan(ctx: StepContext): Plan {
  const p = ctx.state.plan as Plan | undefined;
  if (!p) throw new Error('the preflight step has not run in this run; start the restore again');
  return p;
}

function workDirParam(ctx: StepContext): string {
  return String(ctx.params.workDir ?? os.tmpdir());
}

function describeRepo(ctx: StepContext): string {
  return services(ctx).repo ?? '(no repository: pass --repo URL or set PGRUNBOOK_REPO)';
}

export const logicalRestoreProcedure: Procedure = {
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
  ],
  validate(params) {
    const errors: string[] = [];
    const jobs = params.jobs;
    if (jobs !== undefined && !(Number.isInteger(jobs) && (jobs as number) >= 1 && (jobs as number) <= MAX_JOBS)) {
      errors.push(`--jobs: expected a whole number from 1 to ${MAX_JOBS}, got ${String(jobs)}`);
    }
    const nd = params.newDatabase as string | undefined;
    if (nd !== undefined && identTooLong(nd)) errors.push(`--new-database: "${nd}" is longer than ${MAX_IDENT_BYTES} bytes, which PostgreSQL would cut short; choose a shorter name`);
    if (nd !== undefined && nd === params.database) errors.push(`--new-database must differ from --database (${nd}): pgrunbook never restores over a database`);
    return errors;
  },
  steps: [
    {
      id: 'preflight',
      title: 'Choose the dump and check the target',
      kind: 'check',
      describe: (ctx) =>
        `Before anything is created: the repository holds a complete dump of ${String(ctx.params.database)}, the server answers, ` +
        `the new database's name is free, pg_restore can read the dump, and ${workDirParam(ctx)} has room for it.`,
      plan: (ctx) => [
        `list ${DUMP_PREFIX}${safeName(String(ctx.params.database))}/ in ${describeRepo(ctx)}; pick ${ctx.params.dump ? `dump ${String(ctx.params.dump)}` : 'the newest dump with a dump.json'}`,
        `connect to ${describeConnection(services(ctx).connection)}; refuse if database ${String(ctx.params.newDatabase ?? `${String(ctx.params.database)}_restored_<YYYYMMDDHHMM>`)} exists`,
        `check free space in ${workDirParam(ctx)} for the dump`,
        ...(ctx.params.swap ? [`ask to confirm the swap now, before anything is created (type "${String(ctx.params.database)}" or pass --confirm ${shellQuote(String(ctx.params.database))}); it is asked again right before the renames`] : []),
      ],
      run: preflight,
    },
    {
      id: 'download',
      title: 'Download the dump',
      kind: 'action',
      describe: (ctx) => `Copying ${ctx.state.plan ? describeDump(plan(ctx).dump) : 'the dump'} into a private temporary directory under ${workDirParam(ctx)}, checking its SHA-256 (pg_restore -j needs a file it can seek in).`,
      plan: (ctx) => [`download the dump into ${workDirParam(ctx)}/pgrunbook-restore-XXXXXX/ (mode 0700), verifying SHA-256 and size against dump.json`],
      async run(ctx) {
        const p = plan(ctx);
        try {
          const wf = await ensureDumpFile(ctx, p.dump, p.workDir, { progress: true });
          const toc = await readToc(p.pgRestore, wf.file, { env: services(ctx).env, signal: ctx.signal });
          ctx.state.tocEntries = toc.entries.length;
          ctx.state.dumpOwner = dumpDatabaseOwner(await readToc(p.pgRestore, wf.file, { env: services(ctx).env, signal: ctx.signal, create: true }), p.dump.database);
          ctx.log(`the dump's table of contents has ${toc.entries.length} entries${ctx.state.dumpOwner ? `; ${p.dump.database} belonged to "${String(ctx.state.dumpOwner)}" when dumped` : ''}`);
        } catch (err) {
          await dropWorkFile(ctx);
          throw err;
        }
      },
    },
    {
      id: 'restore',
      title: 'Create the new database and run pg_restore',
      kind: 'action',
      describe: (ctx) => {
        const p = ctx.state.plan as Plan | undefined;
        return p
          ? `CREATE DATABASE ${p.newDatabase}, then pg_restore --jobs=${p.jobs} into it. If it fails, the new database is dropped again (nothing else is touched).`
          : 'CREATE DATABASE, then pg_restore -j into it.';
      },
      plan: (ctx) => [
        `CREATE DATABASE ${String(ctx.params.newDatabase ?? `${String(ctx.params.database)}_restored_<YYYYMMDDHHMM>`)} TEMPLATE template0 (encoding and locale of ${String(ctx.params.database)}) OWNER <its owner as the dump records it>`,
        `pg_restore --verbose --exit-on-error --jobs=${Number(ctx.params.jobs ?? 2)} --dbname <new database> <the downloaded dump>; then delete the downloaded copy`,
      ],
      run: restore,
    },
    {
      id: 'counts',
      title: 'Compare every table\'s row count with the dump',
      kind: 'verify',
      describe: (ctx) => `Counting the rows of every table in ${ctx.state.plan ? plan(ctx).newDatabase : 'the new database'} (SELECT count(*)) against the counts dump.json recorded in the dump's own snapshot.`,
      plan: () => ['the new database\'s owner must be the original\'s; SELECT count(*) of every table listed in dump.json in the new database; each must equal dump.json'],
      run: compareCounts,
    },
    {
      id: 'connections',
      title: 'Show the connection strings to change',
      kind: 'check',
      describe: () => 'The connection strings applications use, before and after: what to change to use the restored database.',
      skipIf: (ctx) => (ctx.state.countsOk === false ? 'the row counts do not match the dump: do not point applications at this database' : undefined),
      plan: (ctx) => [`print old -> new connection strings for ${String(ctx.params.database)}`],
      async run(ctx) {
        const p = plan(ctx);
        const conn = services(ctx).connection;
        const changes = connectionChanges(conn, p.dump.database, p.newDatabase);
        ctx.state.connectionStrings = changes;
        if (ctx.params.swap) {
          ctx.log(`with --swap the names are exchanged next (after the typed confirmation): applications keep their connection strings, and the current ${p.dump.database} is kept as ${p.replacedName}`);
          ctx.log(`without the swap, change them like this:`);
        } else {
          ctx.log(`to use the restored database, change the connection strings (or have the names swapped: run the restore with --swap):`);
        }
        for (const c of changes) ctx.log(`${c.form}: ${c.from} → ${c.to}`);
      },
    },
    {
      id: 'swap',
      title: 'Swap the names of the original and the restored database',
      kind: 'action',
      destructive: {
        what: (ctx) => swapWhat(ctx),
        confirmText: (ctx) => String(ctx.params.database),
      },
      skipIf: (ctx) => (ctx.params.swap ? undefined : 'not asked for (pass --swap to exchange the names after a typed confirmation)'),
      describe: (ctx) => `${swapWhat(ctx)}; both renames happen in one transaction, so either both happen or neither.`,
      plan: (ctx) => [
        `terminate the other sessions of ${String(ctx.params.database)} and of the new database (pg_terminate_backend)`,
        `BEGIN; ALTER DATABASE ${String(ctx.params.database)} RENAME TO ${String(ctx.params.database)}_replaced_<stamp>; ALTER DATABASE <new> RENAME TO ${String(ctx.params.database)}; COMMIT`,
      ],
      run: swap,
    },
    {
      id: 'verify-swap',
      title: 'Verify the swap',
      kind: 'verify',
      skipIf: (ctx) => (ctx.params.swap ? undefined : 'no swap asked for'),
      describe: (ctx) => `Checking that ${String(ctx.params.database)} is now the restored database and that the original is kept under its dated name.`,
      plan: () => ['compare database oids by name in pg_database'],
      run: verifySwap,
    },
  ],
};

function swapWhat(ctx: StepContext): string {
  const p = ctx.state.plan as Plan | undefined;
  const orig = String(ctx.params.database);
  const restored = p?.newDatabase ?? String(ctx.params.newDatabase ?? `${orig}_restored_<stamp>`);
  const replaced = p?.replacedName ?? `${orig}_replaced_<stamp>`;
  if (p && !p.originalExists) return `rename database ${restored} to ${orig} (${orig} does not exist any more)`;
  return `rename database ${orig} to ${replaced} and ${restored} to ${orig} (connections to ${orig} are terminated)`;
}

async function preflight(ctx: StepContext): Promise<void> {
  const svc = services(ctx);
  const database = String(ctx.params.database);
  const problems: string[] = [];
  if (!svc.repo) await openRepository(undefined, svc.env);

  // The dump
  let chosen: ChosenDump | undefined;
  const repo = await openRepository(svc.repo, svc.env);
  try {
    chosen = (await chooseDump(repo, database, ctx.params.dump as string | undefined)).chosen;
    ctx.check('dump', true, `${describeDump(chosen)} in ${repo.describe()}`);
  } catch (err) {
    ctx.check('dump', false, errorMessage(err));
    problems.push(errorMessage(err));
  } finally {
    await repo.close().catch(() => {});
  }

  // The server and the names
  const stamp = nameStamp();
  const newDatabase = (ctx.params.newDatabase as string | undefined) ?? fitName(database, `_restored_${stamp}`);
  const replacedName = fitName(database, `_replaced_${stamp}`);
  const conn = svc.connection;
  let server: { versionNum: number; version: string; superuser: boolean; createdb: boolean; names: Set<string>; owner?: string; user: string } | undefined;
  try {
    server = await withPg(conn, async (c) => {
      const v = await c.query<{ num: string; version: string; superuser: boolean; createdb: boolean; user: string }>(
        `SELECT current_setting('server_version_num') AS num, current_setting('server_version') AS version,
                r.rolsuper AS superuser, r.rolcreatedb AS createdb, current_user AS user
           FROM pg_roles r WHERE r.rolname = current_user`,
      );
      const dbs = await c.query<{ datname: string; owner: string }>(`SELECT datname, pg_get_userbyid(datdba) AS owner FROM pg_database`);
      const row = v.rows[0];
      return {
        versionNum: Number(row.num),
        version: row.version,
        superuser: row.superuser,
        createdb: row.createdb,
        user: row.user,
        names: new Set(dbs.rows.map((r) => r.datname)),
        owner: dbs.rows.find((r) => r.datname === database)?.owner,
      };
    });
    ctx.check('server reachable', true, `${describeConnection(conn)}, PostgreSQL ${server.version}`);
  } catch (err) {
    ctx.check('server reachable', false, errorMessage(err));
    problems.push(errorMessage(err));
  }

  if (server) {
    if (server.names.has(newDatabase)) {
      const message =
        `database "${newDatabase}" already exists on ${describeConnection(conn)}: pgrunbook never restores over a database. ` +
        `Choose another name with --new-database NAME, or drop "${newDatabase}" yourself if it is not needed`;
      ctx.check('new database name free', false, message);
      problems.push(message);
    } else {
      ctx.check('new database name free', true, newDatabase);
    }
    if (!server.superuser && !server.createdb) {
      const message = `user "${server.user}" may not create databases (needs CREATEDB or superuser): ALTER ROLE ${quoteIdent(server.user)} CREATEDB, or connect as another user`;
      ctx.check('may create databases', false, message);
      problems.push(message);
    }
    const originalExists = server.names.has(database);
    if (ctx.params.swap) {
      if (originalExists && server.names.has(replacedName)) {
        const message = `database "${replacedName}" already exists, so the original cannot be kept under that name; run the swap again in a minute`;
        ctx.check('swap possible', false, message);
        problems.push(message);
      } else if (originalExists && !server.superuser && server.owner !== server.user) {
        const message = `user "${server.user}" may not rename database "${database}" (owned by "${server.owner}"): connect as its owner or a superuser, or leave out --swap`;
        ctx.check('swap possible', false, message);
        problems.push(message);
      } else {
        ctx.check('swap possible', true, originalExists ? `${database} -> ${replacedName}, ${newDatabase} -> ${database}` : `${database} does not exist: ${newDatabase} will just be renamed to ${database}`);
      }
    }
    if (!originalExists) ctx.log(`database ${database} does not exist on this server any more: the new database gets the server's default encoding and locale`, 'warn');

    // pg_restore
    let pgRestore: { path: string; version: string } | undefined;
    try {
      pgRestore = await findPgRestore(server.versionNum, chosen?.pgDumpVersion);
      ctx.check('pg_restore', true, `${pgRestore.path} ${pgRestore.version}${chosen?.pgDumpVersion ? ` (dump made by pg_dump ${chosen.pgDumpVersion})` : ''}`);
    } catch (err) {
      ctx.check('pg_restore', false, errorMessage(err));
      problems.push(errorMessage(err));
    }

    // Room for the dump
    const workDir = workDirParam(ctx);
    const bad = await checkWorkDir(workDir);
    if (bad) {
      ctx.check('work directory', false, bad);
      problems.push(bad);
    } else if (chosen) {
      const space = await checkFreeSpace(workDir, chosen.size ?? 0);
      if (!space.ok) {
        const message = freeSpaceMessage(space, `the dump (${formatBytes(chosen.size ?? 0)})`);
        ctx.check('work directory', false, message);
        problems.push(message);
      } else {
        ctx.check('work directory', true, `${workDir}: ${formatBytes(space.free)} free, the dump takes ${formatBytes(chosen.size ?? 0)}`);
      }
    }

    if (!problems.length) {
      const p: Plan = {
        dump: chosen!,
        newDatabase,
        replacedName,
        originalExists,
        pgRestore: pgRestore!.path,
        pgRestoreVersion: pgRestore!.version,
        jobs: Number(ctx.params.jobs ?? 2),
        workDir,
        keepOwners: server.superuser,
        serverVersionNum: server.versionNum,
        originalOwner: server.owner,
        user: server.user,
      };
      ctx.state.plan = p;
      if (!p.keepOwners) ctx.log(`user "${server.user}" is not a superuser: objects are restored owned by "${server.user}" (pg_restore --no-owner --no-privileges)`, 'warn');
    }
  }
  if (problems.length) throw new Error(`cannot restore: ${problems.join('; ')}. Nothing was created`);

  // The swap's typed confirmation, asked now: a swap that will be refused must not leave a
  // restored database behind. The swap step asks again right before renaming.
  if (ctx.params.swap) {
    const what = swapWhat(ctx);
    const expected = String(ctx.params.database);
    const allowed = await ctx.confirm({ message: `After the restore and its checks: ${what}. Type "${expected}" to continue.`, destructive: { what, expected } });
    if (!allowed) {
      if (ctx.signal.aborted) throw ctx.signal.reason ?? new Error('interrupted');
      delete ctx.state.plan;
      const err = new ConfirmationRefusedError(`not confirmed: ${what} (--swap); to allow it pass --confirm ${shellQuote(expected)}, or leave out --swap. Nothing was created`);
      (err as ConfirmationRefusedError & { hint?: string }).hint = `to allow it, run the restore again with --confirm ${shellQuote(expected)}, or without --swap`;
      throw err;
    }
  }
}

/** The owner recorded in the dump's DATABASE entry ("DATABASE - <name> <owner>"), if there is one. */
export function dumpDatabaseOwner(toc: Toc, database: string): string | undefined {
  const prefix = `DATABASE - ${database} `;
  const e = toc.entries.find((x) => x.text.startsWith(prefix));
  const owner = e?.text.slice(prefix.length).trim();
  return owner ? owner : undefined;
}

/** The role the restored database is to belong to: the dump's owner, else the original's, if it exists here and may be given. */
async function chooseOwner(ctx: StepContext, maint: ConnectionSettings): Promise<string | undefined> {
  const p = plan(ctx);
  const candidates = [ctx.state.dumpOwner as string | undefined, p.originalOwner].filter((x): x is string => Boolean(x));
  if (!candidates.length) {
    ctx.log(`neither the dump nor the server names an owner of ${p.dump.database}: the new database belongs to "${p.user}"`, 'warn');
    return undefined;
  }
  return withPg(maint, async (c) => {
    for (const role of candidates) {
      const r = await c.query<{ ok: boolean }>(
        `SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR pg_has_role(current_user, oid, 'MEMBER') AS ok FROM pg_roles WHERE rolname = $1`,
        [role],
      );
      if (!r.rows.length) {
        ctx.log(`role "${role}" (owner of ${p.dump.database}) does not exist on this server`, 'warn');
        continue;
      }
      if (!r.rows[0].ok) {
        ctx.log(`user "${p.user}" may not give a database to role "${role}" (not a superuser, not a member): the new database belongs to "${p.user}"; as a superuser: ALTER DATABASE ${quoteIdent(p.newDatabase)} OWNER TO ${quoteIdent(role)};`, 'warn');
        return undefined;
      }
      return role;
    }
    ctx.log(`the new database belongs to "${p.user}"; create the owner role, then: ALTER DATABASE ${quoteIdent(p.newDatabase)} OWNER TO <role>;`, 'warn');
    return undefined;
  });
}

async function restore(ctx: StepContext): Promise<void> {
  const p = plan(ctx);
  const svc = services(ctx);
  try {
    const wf = await ensureDumpFile(ctx, p.dump, p.workDir);
    const maint = await maintenanceConnection(svc.connection, [p.newDatabase]);
    if (ctx.state.created && !ctx.state.restored) {
      // A resumed run whose earlier attempt stopped half-way (a crash, a lost host): start the database afresh.
      if (!(await dropDatabase(ctx, p.newDatabase, 'an earlier attempt of this run left it half-restored'))) {
        throw new Error(`database ${p.newDatabase} is left half-restored by an earlier attempt and could not be dropped; drop it, then resume`);
      }
      ctx.state.created = false;
    }
    if (!ctx.state.created) {
      const owner = await chooseOwner(ctx, maint);
      ctx.state.owner = owner;
      const clauses = (await createDatabaseClauses(maint, p.originalExists ? p.dump.database : undefined)) + (owner ? ` OWNER ${quoteIdent(owner)}` : '');
      await withPg(maint, async (c) => {
        // Checked again: another session may have taken the name since the preflight.
        if (await databaseExists(c, p.newDatabase)) {
          throw new Error(`database "${p.newDatabase}" already exists (created since the checks): pgrunbook never restores over a database; choose another --new-database`);
        }
        await c.query(`CREATE DATABASE ${quoteIdent(p.newDatabase)} ${clauses}`);
      });
      ctx.state.created = true;
      ctx.log(`created database ${p.newDatabase} (${clauses})`);
    }
    const total = (ctx.state.tocEntries as number | undefined) ?? (await readToc(p.pgRestore, wf.file, { env: svc.env, signal: ctx.signal })).entries.length;
    ctx.progress({ done: 0, total, unit: 'items' });
    const r = await runPgRestore({
      pgRestore: p.pgRestore,
      connection: { ...svc.connection, database: p.newDatabase },
      file: wf.file,
      jobs: p.jobs,
      args: p.keepOwners ? [] : ['--no-owner', '--no-privileges'],
      signal: ctx.signal,
      env: svc.env,
      onItem: (n) => ctx.progress({ done: Math.min(n, total), total, unit: 'items' }),
      onMessage: (line) => ctx.log(line, /error/i.test(line) ? 'error' : 'warn'),
    });
    ctx.progress({ done: total, total, unit: 'items' });
    ctx.log(`pg_restore finished: ${r.items} items restored into ${p.newDatabase} with ${p.jobs} job(s)`);
    ctx.log(`not in a dump and so not restored: settings and grants on the database itself (ALTER DATABASE ... SET, GRANT ... ON DATABASE) and roles; compare with the original if applications need them`);
    ctx.state.restored = true;
  } catch (err) {
    // A half-restored database is of no use and nobody else knows it: drop it. The original is never touched here.
    if (ctx.state.created) {
      if (await dropDatabase(ctx, p.newDatabase, 'the restore did not finish')) ctx.state.created = false;
    }
    const role = /role "([^"]+)" does not exist/.exec(errorMessage(err));
    if (role && !ctx.signal.aborted) {
      throw new Error(
        `${errorMessage(err)}. Roles are not part of a dump: create role "${role[1]}" on this server first (pg_dumpall --roles-only on the source shows them), then resume`,
      );
    }
    throw err;
  } finally {
    await dropWorkFile(ctx);
  }
}

async function compareCounts(ctx: StepContext): Promise<void> {
  const p = plan(ctx);
  const svc = services(ctx);
  const repo = await openRepository(svc.repo, svc.env);
  let meta: DumpMeta;
  try {
    meta = await readDumpMeta(repo, p.dump.database, p.dump.id);
  } finally {
    await repo.close().catch(() => {});
  }
  const expected = meta.rowCounts;
  if (!expected) {
    ctx.check('row counts', false, `dump.json of ${p.dump.id} has no row counts, so the restore cannot be verified`);
    ctx.state.countsOk = false;
    return;
  }
  const keys = Object.keys(expected).sort();
  let ok = true;
  let done = 0;
  await withPg({ ...svc.connection, database: p.newDatabase }, async (c) => {
    const owner = (await c.query<{ o: string }>(`SELECT pg_get_userbyid(datdba) AS o FROM pg_database WHERE datname = current_database()`)).rows[0].o;
    const wanted = (ctx.state.owner as string | undefined) ?? p.user;
    const sameAsOriginal = owner === ((ctx.state.dumpOwner as string | undefined) ?? p.originalOwner ?? owner);
    ctx.check('owner', owner === wanted, owner === wanted ? `${p.newDatabase} belongs to "${owner}"${sameAsOriginal ? `, as ${p.dump.database} did` : ` (${p.dump.database} belonged to another role; see the warning above)`}` : `${p.newDatabase} belongs to "${owner}", expected "${wanted}"`);
    if (owner !== wanted) ok = false;
    const tables = new Map<string, { nspname: string; relname: string }>();
    // dump.json counts ordinary tables and leaf partitions (USER_TABLES_SQL); a dump.json written
    // before that also counted partitioned parents (all their partitions' rows): those keys are
    // looked up among partitioned tables too, and count(*) of a parent is what it recorded.
    for (const t of (await c.query<{ nspname: string; relname: string }>(USER_TABLES_SQL)).rows) tables.set(`${t.nspname}.${t.relname}`, t);
    const anyTables = new Map<string, { nspname: string; relname: string }>();
    for (const t of (await c.query<{ nspname: string; relname: string }>(ANY_TABLES_SQL)).rows) anyTables.set(`${t.nspname}.${t.relname}`, t);
    for (const key of keys) {
      ctx.signal.throwIfAborted();
      const t = tables.get(key) ?? anyTables.get(key);
      if (!t) {
        ok = false;
        ctx.check(`rows ${key}`, false, `missing: no table ${key} in ${p.newDatabase}; dump.json says ${expected[key]} rows`);
      } else {
        const n = Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${c.escapeIdentifier(t.nspname)}.${c.escapeIdentifier(t.relname)}`)).rows[0].n);
        if (n === expected[key]) ctx.check(`rows ${key}`, true, `${n} rows, as in dump.json`);
        else {
          ok = false;
          ctx.check(`rows ${key}`, false, `${n} rows in ${p.newDatabase}, dump.json says ${expected[key]}`);
        }
      }
      ctx.progress({ done: ++done, total: keys.length, unit: 'tables' });
    }
    const extra = [...tables.keys()].filter((k) => !(k in expected));
    if (extra.length) ctx.log(`tables in ${p.newDatabase} that dump.json has no count for: ${extra.join(', ')}`, 'warn');
  });
  ctx.state.countsOk = ok;
  if (keys.length === 0) ctx.log('dump.json lists no tables: the database was dumped without any');
  if (!ok) ctx.log(`the restored database ${p.newDatabase} is kept for inspection; drop it when done: DROP DATABASE ${quoteIdent(p.newDatabase)};`, 'error');
}

async function swap(ctx: StepContext): Promise<void> {
  const p = plan(ctx);
  const svc = services(ctx);
  const orig = p.dump.database;
  const maint = await maintenanceConnection(svc.connection, [orig, p.newDatabase]);
  await withPg({ ...maint, applicationName: 'pgrunbook logical-restore' }, async (c) => {
    const names = new Map((await c.query<{ datname: string; oid: string }>(`SELECT datname, oid::text AS oid FROM pg_database`)).rows.map((r) => [r.datname, r.oid]));
    if (!names.has(p.newDatabase)) throw new Error(`database ${p.newDatabase} does not exist any more; nothing was renamed`);
    const origExists = names.has(orig);
    if (origExists !== p.originalExists) {
      throw new Error(`database ${orig} ${origExists ? 'exists again' : 'has disappeared'} since the checks; nothing was renamed. Look at what happened, then run the restore again`);
    }
    if (origExists && names.has(p.replacedName)) throw new Error(`database ${p.replacedName} exists, so ${orig} cannot be kept under that name; nothing was renamed`);
    ctx.state.swapOids = { restored: names.get(p.newDatabase), original: names.get(orig) };
    const waitArg = p.serverVersionNum >= 140000 ? ', 5000' : '';
    for (let attempt = 1; ; attempt++) {
      ctx.signal.throwIfAborted();
      const killed = await c.query<{ n: string }>(
        `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid${waitArg})) AS n FROM pg_stat_activity WHERE datname = ANY($1) AND pid <> pg_backend_pid()`,
        [[orig, p.newDatabase]],
      );
      if (Number(killed.rows[0].n) > 0) ctx.log(`terminated ${killed.rows[0].n} session(s) of ${orig} and ${p.newDatabase}`);
      try {
        // One transaction: both renames or neither.
        await c.query('BEGIN');
        if (origExists) await c.query(`ALTER DATABASE ${quoteIdent(orig)} RENAME TO ${quoteIdent(p.replacedName)}`);
        await c.query(`ALTER DATABASE ${quoteIdent(p.newDatabase)} RENAME TO ${quoteIdent(orig)}`);
        await c.query('COMMIT');
        break;
      } catch (err) {
        await c.query('ROLLBACK').catch(() => {});
        // 55006: a session (re)connected between the termination and the rename: try again.
        if ((err as { code?: string }).code === '55006' && attempt < 10) {
          ctx.log(`a session is still connected (${errorMessage(err)}); terminating again (attempt ${attempt + 1})`, 'warn');
          await new Promise((r) => setTimeout(r, 100 * attempt));
          continue;
        }
        throw new Error(`renaming failed, nothing was renamed: ${errorMessage(err)}${(err as { code?: string }).code === '55006' ? '. Sessions keep reconnecting: stop the applications using them, then resume' : ''}`);
      }
    }
  });
  ctx.state.swapped = true;
  ctx.log(p.originalExists ? `renamed ${orig} to ${p.replacedName} and ${p.newDatabase} to ${orig}` : `renamed ${p.newDatabase} to ${orig}`);
  if (p.originalExists) ctx.log(`the previous ${orig} is kept as ${p.replacedName}; drop it once you no longer need it: DROP DATABASE ${quoteIdent(p.replacedName)};`);
}

async function verifySwap(ctx: StepContext): Promise<void> {
  const p = plan(ctx);
  const orig = p.dump.database;
  const oids = ctx.state.swapOids as { restored?: string; original?: string } | undefined;
  const names = await withPg(services(ctx).connection.database === orig ? await maintenanceConnection(services(ctx).connection, [orig]) : services(ctx).connection, async (c) =>
    new Map((await c.query<{ datname: string; oid: string }>(`SELECT datname, oid::text AS oid FROM pg_database`)).rows.map((r) => [r.datname, r.oid])),
  );
  ctx.check(`${orig} is the restored database`, Boolean(oids?.restored) && names.get(orig) === oids?.restored, names.has(orig) ? `oid ${names.get(orig)}, restored database's oid ${oids?.restored}` : `${orig} does not exist`);
  if (p.originalExists) {
    ctx.check(`${p.replacedName} is the original`, Boolean(oids?.original) && names.get(p.replacedName) === oids?.original, names.has(p.replacedName) ? `oid ${names.get(p.replacedName)}, original's oid ${oids?.original}` : `${p.replacedName} does not exist`);
  }
  ctx.check(`${p.newDatabase} renamed away`, !names.has(p.newDatabase), names.has(p.newDatabase) ? `${p.newDatabase} still exists` : 'gone');
}
