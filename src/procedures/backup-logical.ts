// Logical backup: each database's `pg_dump -Fc` streamed into the repository (no temporary
// file), with exact per-table row counts taken in the very snapshot the dump reads, and dump.json
// (size, SHA-256, counts, versions) written last as the commit marker. A dump that fails or is
// interrupted never gets its dump.json, so it is never offered for restore.
import type pg from 'pg';
import type { Procedure, StepContext } from '../engine/types.js';
import { errorMessage } from '../engine/runner.js';
import { formatBytes, formatDuration } from '../engine/format.js';
import { describeConnection, type ConnectionSettings } from '../config/connection.js';
import { connectPg, withPg } from '../postgres/client.js';
import { findPgClientFor, readThroughRestoreList, serverMajor, startPgDump } from '../postgres/pgdump.js';
import { USER_TABLES_SQL } from '../postgres/user-tables.js';
import { backupId, openRepository, safeName, uniqueBackupId, type Repository } from '../storage/repository.js';
import { DUMP_META, DUMP_PREFIX, type DumpMeta } from '../storage/catalog.js';
import { describeLocation, parseRepoUrl } from '../storage/url.js';
import { checkRepositoryIdentity, ensureRepositoryIdentity, IDENTITY_KEY, readRepositoryIdentity, type RepositoryIdentity } from '../storage/identity.js';
import { services } from './services.js';

/** What preflight learned, journaled so a resumed run dumps exactly what was checked. */
interface Preflight {
  targets: string[];
  serverVersion: string;
  serverMajor: number;
  pgDump: { path: string; version: string };
  /** Absent when pg_restore is not installed: verify then checks checksums and sizes only. */
  pgRestore?: string;
  /** pg_database_size: the space on disk, an upper bound rather than a forecast of the dump's size. */
  databaseSizes: Record<string, number>;
  /** The source cluster (pg_control_system()), checked against the repository's format record. */
  systemIdentifier?: string;
  walSegmentSize?: number;
  databaseOids?: Record<string, number>;
}

/** One committed dump, as the verify step needs it. */
interface DumpRecord {
  key: string;
  metaKey: string;
  size: number;
  sha256: string;
  tables: number;
  rows: number;
}

const MAX_PARALLEL = 32;

export const backupLogicalProcedure: Procedure = {
  id: 'backup-logical',
  title: 'Logical backup (pg_dump)',
  summary: 'pg_dump -Fc of each database streamed into the repository, with exact row counts from the same snapshot, size and SHA-256.',
  group: 'backup',
  params: [
    {
      name: 'databases',
      type: 'list',
      description: "databases to dump (default: the profile's, else every database that accepts connections, templates excluded)",
      example: 'app,billing',
    },
    { name: 'parallel', type: 'number', default: 1, description: `databases dumped at the same time (1-${MAX_PARALLEL}); each uses two connections`, example: '2' },
  ],
  validate(params) {
    const errors: string[] = [];
    const n = params.parallel;
    if (n !== undefined && !(Number.isInteger(n) && (n as number) >= 1 && (n as number) <= MAX_PARALLEL)) {
      errors.push(`--parallel: expected a whole number from 1 to ${MAX_PARALLEL}, got ${String(n)}`);
    }
    return errors;
  },
  steps: [
    {
      id: 'preflight',
      title: 'Check the repository, the server and pg_dump',
      kind: 'check',
      describe: (ctx) =>
        `Before anything is dumped: the repository answers, ${describeConnection(services(ctx).connection)} answers, ` +
        `pg_dump is at least as new as the server, and every database to dump exists.`,
      plan: (ctx) => [
        `open the repository ${describeRepo(ctx)} and list ${DUMP_PREFIX}`,
        `connect to ${describeConnection(services(ctx).connection)}; read the server version and the databases`,
        `find pg_dump (its major version must be at least the server's) and pg_restore`,
      ],
      run: preflight,
    },
    {
      id: 'dump',
      title: 'Dump each database into the repository',
      kind: 'action',
      describe: (ctx) => {
        const pre = ctx.state.preflight as Preflight | undefined;
        const dbs = pre?.targets.join(', ') ?? 'the databases';
        return `pg_dump -Fc of ${dbs}, streamed into ${describeRepo(ctx)}, ${Number(ctx.params.parallel ?? 1)} at a time; row counts from the same snapshot; dump.json written last.`;
      },
      plan: planDump,
      run: dumpAll,
    },
    {
      id: 'verify',
      title: 'Read every dump back',
      kind: 'verify',
      describe: () => 'Reading each dump back from the repository: its SHA-256 and size must match dump.json, and pg_restore --list must parse it.',
      plan: (ctx) => [`read each dump back from ${describeRepo(ctx)}: check its SHA-256 and size against dump.json; pg_restore --list it`],
      skipIf: (ctx) => (!ctx.dryRun && Object.keys(dumpRecords(ctx)).length === 0 ? 'no dump was made' : undefined),
      run: verifyDumps,
    },
  ],
};

// ---------------------------------------------------------------------------------------------
// preflight

async function preflight(ctx: StepContext): Promise<void> {
  const svc = services(ctx);
  // No repository is bad usage: say so (openRepository's message names --repo and PGRUNBOOK_REPO)
  // before touching anything else.
  if (!svc.repo) await openRepository(undefined, svc.env);
  const problems: string[] = [];

  let repo: Repository | undefined;
  let identity: RepositoryIdentity | undefined;
  let repoStore: Repository['store'] | undefined;
  try {
    repo = await openRepository(svc.repo, svc.env);
    await probeRepository(repo);
    repoStore = repo.store;
    identity = await readRepositoryIdentity(repo.store);
    ctx.check('repository reachable', true, repo.describe());
  } catch (err) {
    // An unparsable URL says so itself; a store that does not answer gets told where to look.
    const message = repo
      ? `the repository is not reachable: ${errorMessage(err).replace(/\.+$/, '')}. Check the URL (${repo.describe()}), the credentials and that the storage answers`
      : errorMessage(err);
    ctx.check('repository reachable', false, message);
    problems.push(message);
  } finally {
    await repo?.close().catch(() => {});
  }

  const conn = svc.connection;
  let server:
    | { version: string; versionNum: number; systemIdentifier?: string; walSegmentSize?: number; databases: { name: string; oid: number; allowConn: boolean; template: boolean; size: number | null }[] }
    | undefined;
  try {
    server = await withPg(conn, async (c) => {
      const v = await c.query<{ version: string; num: string; seg: string }>(
        `SELECT current_setting('server_version') AS version, current_setting('server_version_num') AS num, pg_size_bytes(current_setting('wal_segment_size')) AS seg`,
      );
      // May be revoked from this role: then the repository cannot be checked, and says so below.
      let systemIdentifier: string | undefined;
      try {
        systemIdentifier = (await c.query<{ id: string }>(`SELECT system_identifier::text AS id FROM pg_control_system()`)).rows[0]?.id;
      } catch {
        systemIdentifier = undefined;
      }
      const dbs = await c.query<{ name: string; oid: string; allow_conn: boolean; template: boolean; size: string | null }>(
        `SELECT datname AS name, oid::int8 AS oid, datallowconn AS allow_conn, datistemplate AS template,
                CASE WHEN has_database_privilege(oid, 'CONNECT') THEN pg_database_size(oid) END AS size
           FROM pg_database ORDER BY datname`,
      );
      return {
        version: v.rows[0].version,
        versionNum: Number(v.rows[0].num),
        walSegmentSize: Number(v.rows[0].seg),
        systemIdentifier,
        databases: dbs.rows.map((r) => ({ name: r.name, oid: Number(r.oid), allowConn: r.allow_conn, template: r.template, size: r.size === null ? null : Number(r.size) })),
      };
    });
    ctx.check('server reachable', true, `${describeConnection(conn)}, PostgreSQL ${server.version}`);
  } catch (err) {
    const message = errorMessage(err);
    ctx.check('server reachable', false, message);
    problems.push(message);
  }

  // A repository holds one cluster: another cluster's is refused before anything is written.
  if (identity && repoStore && server) {
    if (!server.systemIdentifier) {
      const message = `the repository belongs to the cluster with system identifier ${identity.systemIdentifier}, and user "${conn.user}" may not read this server's (pg_control_system()); connect as a role that may (a superuser or pg_monitor member), or GRANT EXECUTE ON FUNCTION pg_control_system() TO ${conn.user}`;
      ctx.check('repository belongs to this cluster', false, message);
      problems.push(message);
    } else {
      for (const w of checkRepositoryIdentity(repoStore, identity, server.systemIdentifier, { pgMajor: serverMajor(server.versionNum), walSegmentSize: server.walSegmentSize })) ctx.log(w, 'warn');
      ctx.check('repository belongs to this cluster', true, `${IDENTITY_KEY}: system identifier ${identity.systemIdentifier}`);
    }
  }

  let pgDump: { path: string; version: string } | undefined;
  let pgRestore: string | undefined;
  let targets: string[] = [];
  if (server) {
    const major = serverMajor(server.versionNum);
    try {
      const v = await findPgClientFor('pg_dump', major, server.version);
      pgDump = { path: v.path, version: v.full };
      ctx.check('pg_dump', true, `${v.path} ${v.full} (server ${server.version})`);
    } catch (err) {
      ctx.check('pg_dump', false, errorMessage(err));
      problems.push(errorMessage(err));
    }
    try {
      pgRestore = (await findPgClientFor('pg_restore', major, server.version)).path;
    } catch (err) {
      ctx.log(`pg_restore not usable (${errorMessage(err)}): the verify step will check checksums and sizes, not that the archives parse`, 'warn');
    }

    const dumpable = server.databases.filter((d) => d.allowConn && !d.template).map((d) => d.name);
    const given = targetsGiven(ctx);
    targets = given ?? dumpable;
    const bad: string[] = [];
    for (const db of targets) {
      const found = server.databases.find((d) => d.name === db);
      if (!found) bad.push(`database "${db}" does not exist`);
      else if (!found.allowConn) bad.push(`database "${db}" does not accept connections (datallowconn is false)`);
      else if (found.size === null) bad.push(`user "${conn.user}" may not connect to database "${db}"`);
    }
    const collisions = collidingNames(targets);
    if (collisions.length) bad.push(`databases ${collisions.join(' and ')} would share one folder in the repository (names are made safe by replacing unusual characters with _); dump them in separate runs`);
    if (targets.length === 0) bad.push('no database to dump: the server has none that accepts connections');
    if (bad.length) {
      const message = `${bad.join('; ')} on ${describeConnection(conn)}. Databases that can be dumped: ${dumpable.join(', ') || 'none'}. Fix --databases (or the profile's databases)`;
      ctx.check('databases', false, message);
      problems.push(message);
    } else {
      ctx.check('databases', true, targets.join(', '));
      const sizes = targets.map((db) => `${db} ${formatBytes(server!.databases.find((d) => d.name === db)!.size ?? 0)}`);
      ctx.log(`size on disk (the dump is usually much smaller: compressed, without indexes): ${sizes.join(', ')}`);
    }
  }

  if (problems.length) throw new Error(`cannot start the backup: ${problems.join('; ')}`);
  const pre: Preflight = {
    targets,
    serverVersion: server!.version,
    serverMajor: serverMajor(server!.versionNum),
    pgDump: pgDump!,
    pgRestore,
    databaseSizes: Object.fromEntries(targets.map((db) => [db, server!.databases.find((d) => d.name === db)!.size ?? 0])),
    systemIdentifier: server!.systemIdentifier,
    walSegmentSize: server!.walSegmentSize,
    databaseOids: Object.fromEntries(targets.map((db) => [db, server!.databases.find((d) => d.name === db)!.oid])),
  };
  ctx.state.preflight = pre;
}

/** A listing proves the storage answers and the credentials work, without writing anything. */
async function probeRepository(repo: Repository): Promise<void> {
  for await (const entry of repo.store.list(DUMP_PREFIX)) {
    void entry;
    break;
  }
}

function targetsGiven(ctx: StepContext): string[] | undefined {
  const given = ctx.params.databases as string[] | undefined;
  if (given?.length) return [...new Set(given)];
  const profileDbs = services(ctx).profile.databases;
  if (profileDbs?.length) return [...new Set(profileDbs)];
  return undefined;
}

function collidingNames(dbs: string[]): string[] {
  const seen = new Map<string, string>();
  const out: string[] = [];
  for (const db of dbs) {
    const safe = safeName(db);
    const other = seen.get(safe);
    if (other !== undefined) out.push(`"${other}" and "${db}"`);
    else seen.set(safe, db);
  }
  return out;
}

function describeRepo(ctx: StepContext): string {
  const url = services(ctx).repo;
  if (!url) return '(no repository: pass --repo URL or set PGRUNBOOK_REPO)';
  try {
    return describeLocation(parseRepoUrl(url, services(ctx).env));
  } catch (err) {
    return `(invalid repository URL: ${errorMessage(err)})`;
  }
}

// ---------------------------------------------------------------------------------------------
// dump

export function dumpObjectName(database: string): string {
  return `${safeName(database)}.dump`;
}

async function planDump(ctx: StepContext): Promise<string[]> {
  let dbs = targetsGiven(ctx);
  const lines: string[] = [];
  if (!dbs) {
    try {
      dbs = await withPg(services(ctx).connection, async (c) =>
        (await c.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname`)).rows.map((r) => r.datname),
      );
      lines.push(`databases (every one that accepts connections, templates excluded): ${dbs.join(', ')}`);
    } catch (err) {
      lines.push(`every database that accepts connections, templates excluded (could not list them now: ${errorMessage(err)})`);
      dbs = [];
    }
  } else {
    lines.push(`databases: ${dbs.join(', ')}`);
  }
  const id = backupId(new Date());
  const repo = { dumpKey: (db: string, name: string) => `${DUMP_PREFIX}${safeName(db)}/${safeName(id)}/${name}` };
  lines.push(`backup id ${id}-<ms>-<random> (the start time plus a random part); ${Number(ctx.params.parallel ?? 1)} database(s) at a time`);
  for (const db of dbs) {
    lines.push(
      `${db}: BEGIN ISOLATION LEVEL REPEATABLE READ; pg_export_snapshot(); pg_dump --format=custom --snapshot=<that snapshot> ` +
        `streamed to ${repo.dumpKey(db, dumpObjectName(db))}; SELECT count(*) of every table in the same snapshot; ` +
        `then ${repo.dumpKey(db, DUMP_META)} written last`,
    );
  }
  return lines;
}

function dumpRecords(ctx: StepContext): Record<string, DumpRecord> {
  return (ctx.state.dumps as Record<string, DumpRecord> | undefined) ?? {};
}

async function dumpAll(ctx: StepContext): Promise<void> {
  const pre = ctx.state.preflight as Preflight | undefined;
  if (!pre) throw new Error('the preflight step has not run in this run; start a new backup');
  const svc = services(ctx);
  const repo = await openRepository(svc.repo, svc.env);
  try {
    const dumps = (ctx.state.dumps ??= {}) as Record<string, DumpRecord>;
    let id = ctx.state.dumpId as string | undefined;
    if (!id) {
      id = await freshDumpId(repo, pre.targets);
      ctx.state.dumpId = id;
    }
    const pending: string[] = [];
    for (const db of pre.targets) {
      // Resumed: a database committed by an earlier attempt of this run is done. Its dump.json is
      // the authority (the attempt may have ended before journaling it), and a committed dump's
      // data must never be written over.
      const committed = await readCommittedDump(repo, db, id);
      if (committed) {
        dumps[db] = committed;
        ctx.log(`${db}: already dumped as ${id} by an earlier attempt of this run`);
        continue;
      }
      delete dumps[db];
      pending.push(db);
    }

    const streamed = new Map<string, number>();
    const alreadyDone = Object.values(dumps).reduce((n, d) => n + d.size, 0);
    const total = () => alreadyDone + [...streamed.values()].reduce((a, b) => a + b, 0);
    const parallel = Math.max(1, Math.min(Number(ctx.params.parallel ?? 1), pending.length));
    const failures: { db: string; error: string }[] = [];

    await runPool(pending, parallel, ctx.signal, async (db) => {
      try {
        dumps[db] = await dumpDatabase(ctx, repo, pre, db, id!, (bytes) => {
          streamed.set(db, bytes);
          ctx.progress({ done: total(), unit: 'bytes' });
        });
      } catch (err) {
        if (ctx.signal.aborted) throw err;
        // The other databases go on: each dump is committed on its own, so one broken database
        // must not cost the others their backup.
        failures.push({ db, error: errorMessage(err).replace(/\.+$/, '') });
        if (pending.length > 1) ctx.log(`${db}: ${errorMessage(err)}`, 'error');
      }
    });
    const done = total();
    ctx.progress({ done, total: done, unit: 'bytes' });

    if (failures.length) {
      const committed = pre.targets.filter((db) => dumps[db]);
      throw new Error(
        `${failures.length === 1 ? `the dump of ${failures[0].db} failed: ${failures[0].error}` : `${failures.length} dumps failed: ${failures.map((f) => `${f.db}: ${f.error}`).join('; ')}`}. ` +
          `${failures.length === 1 ? 'It is not listed as a backup' : 'They are not listed as backups'} (no dump.json)` +
          `${committed.length ? `; committed: ${committed.join(', ')}` : ''}. Fix the cause and run the backup again`,
      );
    }
  } finally {
    await repo.close().catch(() => {});
  }
}

async function readCommittedDump(repo: Repository, db: string, id: string): Promise<DumpRecord | undefined> {
  const metaKey = repo.dumpKey(db, id, DUMP_META);
  const info = await repo.store.head(metaKey);
  if (!info) return undefined;
  const chunks: Buffer[] = [];
  for await (const chunk of await repo.getVerified(metaKey, info.metadata.sha256)) chunks.push(chunk as Buffer);
  const meta = JSON.parse(Buffer.concat(chunks).toString('utf8')) as DumpMeta;
  const counts = meta.rowCounts ?? {};
  return {
    key: repo.dumpKey(db, id, meta.object ?? dumpObjectName(db)),
    metaKey,
    size: meta.size ?? 0,
    sha256: meta.sha256 ?? '',
    tables: Object.keys(counts).length,
    rows: Object.values(counts).reduce((a, b) => a + b, 0),
  };
}

/** The start time plus a random part (no other run picks the same); checked against what is there anyway. */
async function freshDumpId(repo: Repository, dbs: string[]): Promise<string> {
  const now = new Date();
  for (let n = 1; n < 10; n++) {
    const id = uniqueBackupId(now);
    let taken = false;
    for (const db of dbs) {
      for await (const entry of repo.store.list(`${DUMP_PREFIX}${safeName(db)}/${safeName(id)}/`)) {
        void entry;
        taken = true;
        break;
      }
      if (taken) break;
    }
    if (!taken) return id;
  }
  throw new Error(`could not find a free backup id for ${now.toISOString()} in ${repo.describe()}`);
}

async function runPool<T>(items: T[], width: number, signal: AbortSignal, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length && !signal.aborted) {
      const item = items[next++];
      await work(item);
    }
  };
  const results = await Promise.allSettled(Array.from({ length: width }, worker));
  signal.throwIfAborted();
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

async function dumpDatabase(ctx: StepContext, repo: Repository, pre: Preflight, db: string, id: string, onBytes: (bytes: number) => void): Promise<DumpRecord> {
  const svc = services(ctx);
  const conn: ConnectionSettings = { ...svc.connection, database: db };
  const name = dumpObjectName(db);
  const key = repo.dumpKey(db, id, name);
  const metaKey = repo.dumpKey(db, id, DUMP_META);
  // Stops this database's pg_dump, upload and counting together when any of them fails.
  const local = new AbortController();
  const signal = AbortSignal.any([ctx.signal, local.signal]);
  const started = Date.now();
  const startTime = new Date(started).toISOString();

  const client = await connectPg({ ...conn, applicationName: 'pgrunbook backup-logical' });
  let putStarted = false;
  let commitAttempted = false;
  try {
    // The snapshot pg_dump reads and the counts below are one and the same: exported by this
    // transaction, which stays open until both are done.
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY');
    const snap = await client.query<{ snapshot: string; pid: number; at: Date }>(`SELECT pg_export_snapshot() AS snapshot, pg_backend_pid() AS pid, now() AS at`);
    const { snapshot, pid, at } = snap.rows[0];
    ctx.log(`${db}: pg_dump --format=custom --snapshot=${snapshot} -> ${key}`);

    const dump = startPgDump({
      pgDump: pre.pgDump.path,
      connection: conn,
      snapshot,
      signal,
      env: svc.env,
      onBytes,
      // Once we stop pg_dump ourselves, what it says about being stopped is noise.
      onStderrLine: (line) => {
        if (!signal.aborted) ctx.log(`${db}: ${line}`, 'warn');
      },
    });
    putStarted = true;
    const abortOnFailure = <T>(p: Promise<T>): Promise<T> =>
      p.catch((err: unknown) => {
        local.abort(err);
        throw err;
      });
    const [put, counts, exit] = await Promise.allSettled([
      abortOnFailure(repo.putObject(key, dump.output, { signal, sizeHint: pre.databaseSizes[db] || undefined })),
      abortOnFailure(countRows(client, conn, pid, signal)),
      dump.exited,
    ]);
    const exited = exit.status === 'fulfilled' ? exit.value : undefined;

    if (ctx.signal.aborted) throw ctx.signal.reason ?? new Error('interrupted');
    // pg_dump failing on its own explains everything else (the upload fails because of it).
    if (exited && !exited.ok && !exited.canceled) throw new Error(`${exited.failure} (command: ${dump.command})`);
    if (put.status === 'rejected') throw new Error(`could not write it to the repository: ${errorMessage(put.reason)}`);
    if (counts.status === 'rejected') throw new Error(`counting its rows failed: ${errorMessage(counts.reason)}`);
    if (!exited?.ok) throw new Error(`${exited?.failure ?? 'pg_dump failed'} (command: ${dump.command})`);

    await client.query('COMMIT').catch((err: unknown) => ctx.log(`${db}: ending the snapshot transaction: ${errorMessage(err)} (the counts were already read)`, 'warn'));

    const stopped = Date.now();
    const rowCounts = counts.value;
    const meta: DumpMeta = {
      id,
      database: db,
      object: name,
      format: 'custom',
      size: put.value.size,
      sha256: put.value.sha256,
      startTime,
      stopTime: new Date(stopped).toISOString(),
      durationMs: stopped - started,
      consistentAt: new Date(at).toISOString(),
      rowCounts,
      pgDumpVersion: pre.pgDump.version,
      serverVersion: pre.serverVersion,
      databaseSize: pre.databaseSizes[db],
      ...(pre.systemIdentifier ? { systemIdentifier: pre.systemIdentifier } : {}),
      ...(pre.databaseOids?.[db] !== undefined ? { databaseOid: pre.databaseOids[db] } : {}),
    };
    // The operator asked to stop: commit nothing more, even a dump that just finished.
    ctx.signal.throwIfAborted();
    // The first committed dump adopts the repository for this cluster; another cluster's record
    // (adopted since preflight) refuses it, and the dump's data is removed below.
    if (pre.systemIdentifier) {
      await ensureRepositoryIdentity(repo.store, { systemIdentifier: pre.systemIdentifier, pgMajor: pre.serverMajor, walSegmentSize: pre.walSegmentSize });
    }
    commitAttempted = true;
    await repo.commitDump(meta);
    const rows = Object.values(rowCounts).reduce((a, b) => a + b, 0);
    ctx.log(`${db}: ${formatBytes(meta.size!)} in ${formatDuration(meta.durationMs!)}, ${Object.keys(rowCounts).length} tables, ${rows} rows; committed ${metaKey}`);
    return { key, metaKey, size: meta.size!, sha256: meta.sha256!, tables: Object.keys(rowCounts).length, rows };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    // Without dump.json the data object is never offered for restore; remove it anyway so it does
    // not take space. Never after a commit was attempted: dump.json may exist despite the error, and
    // a dump.json without its data would be worse than data without a dump.json.
    if (putStarted && !commitAttempted) await removePartial(ctx, repo, db, key);
    throw err;
  } finally {
    await client.end().catch(() => {});
  }
}

async function countRows(client: pg.Client, conn: ConnectionSettings, pid: number, signal: AbortSignal): Promise<Record<string, number>> {
  const tables = await client.query<{ nspname: string; relname: string }>(USER_TABLES_SQL);
  const counts: Record<string, number> = {};
  // count(*) of a big table can run for minutes: cancel it server-side on abort.
  const cancel = () => {
    void withPg({ ...conn, applicationName: 'pgrunbook cancel' }, (c) => c.query('SELECT pg_cancel_backend($1)', [pid])).catch(() => {});
  };
  signal.addEventListener('abort', cancel, { once: true });
  try {
    for (const t of tables.rows) {
      signal.throwIfAborted();
      const r = await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${client.escapeIdentifier(t.nspname)}.${client.escapeIdentifier(t.relname)}`);
      counts[`${t.nspname}.${t.relname}`] = Number(r.rows[0].n);
    }
  } finally {
    signal.removeEventListener('abort', cancel);
  }
  return counts;
}

async function removePartial(ctx: StepContext, repo: Repository, db: string, key: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  // Bounded: an unreachable store must not hold up the report of what went wrong, nor an
  // interrupted run past the runner's grace period.
  const limitMs = ctx.signal.aborted ? 5_000 : 15_000;
  try {
    await Promise.race([
      repo.store.delete(key),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${limitMs / 1000} s`)), limitMs);
      }),
    ]);
  } catch (err) {
    ctx.log(`${db}: could not remove the incomplete ${key} (${errorMessage(err)}); it has no dump.json, so it is never offered for restore`, 'warn');
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------
// verify

async function verifyDumps(ctx: StepContext): Promise<void> {
  const pre = ctx.state.preflight as Preflight;
  const svc = services(ctx);
  const records = dumpRecords(ctx);
  const repo = await openRepository(svc.repo, svc.env);
  try {
    const dbs = pre.targets.filter((db) => records[db]);
    const totalBytes = dbs.reduce((n, db) => n + records[db].size, 0);
    let doneBytes = 0;
    for (const db of dbs) {
      ctx.signal.throwIfAborted();
      const rec = records[db];
      try {
        if (!(await repo.store.head(rec.metaKey))) {
          ctx.check(`dump ${db}`, false, `${rec.metaKey} is missing: the dump is not committed`);
          continue;
        }
        const body = await repo.getVerified(rec.key, rec.sha256, ctx.signal);
        const before = doneBytes;
        const r = await readThroughRestoreList(body, {
          pgRestore: pre.pgRestore,
          signal: ctx.signal,
          env: svc.env,
          onBytes: (n) => ctx.progress({ done: before + n, total: totalBytes, unit: 'bytes' }),
        });
        doneBytes = before + r.bytes;
        if (r.bytes !== rec.size) {
          ctx.check(`dump ${db}`, false, `${rec.key} holds ${r.bytes} bytes, dump.json says ${rec.size}`);
        } else if (r.exit && !r.exit.ok) {
          ctx.check(`dump ${db}`, false, `${rec.key} does not parse as a pg_dump archive: ${r.exit.failure}`);
        } else {
          const toc = r.toc ? `; pg_restore --list: ${r.toc.entries} entries, ${r.toc.tableData} with table data` : '; not parsed (no pg_restore)';
          ctx.check(`dump ${db}`, true, `${formatBytes(r.bytes)}, SHA-256 matches, ${rec.tables} tables, ${rec.rows} rows${toc}`);
        }
      } catch (err) {
        if (ctx.signal.aborted) throw err;
        ctx.check(`dump ${db}`, false, `reading ${rec.key} back failed: ${errorMessage(err)}`);
      }
    }
    if (doneBytes !== totalBytes) ctx.progress({ done: doneBytes, total: doneBytes, unit: 'bytes' });
  } finally {
    await repo.close().catch(() => {});
  }
}
