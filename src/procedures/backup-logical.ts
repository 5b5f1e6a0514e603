// Logical backup: each database's `pg_dump -Fc` streamed into the repository (no temporary
// file), with exact per-table row counts read from the dump's own data as it streams, and dump.json
// (size, SHA-256, counts, versions) written last as the commit marker. A dump that fails or is
// interrupted never gets its dump.json, so it is never offered for restore.
import { describeConnection } from '../config/connection.js';
import { formatBytes } from '../engine/format.js';
import { errorMessage } from '../engine/runner.js';
import type { StepContext } from '../engine/types.js';
import { listDumpableDatabases, systemIdentifierDeniedHint } from '../postgres/cluster.js';
import { findPgClientFor, serverMajor } from '../postgres/programs/pg_dump.js';
import { checkRepositoryIdentity, readRepositoryIdentity, type RepositoryIdentity } from '../repo/identity.js';
import { openRepository, type Repository } from '../repo/repository.js';
import {
  dumpDatabases,
  dumpFailureMessage,
  dumpTargetProblems,
  freshDumpId,
  planDumps,
  planPreflight,
  probeDumps,
  readDumpSource,
  takeCommittedDumps,
  type DumpRecord,
  type LogicalPreflight,
} from '../services/logical-dump.js';
import { verifyDumps } from '../services/logical-dump-verify.js';
import { describeRepository, ownerCheckDetail } from '../services/run-repository.js';
import { defineProcedure, type Typed } from './define.js';

type BackupLogicalParams = {
  databases?: string[];
  /** Databases dumped at the same time. */
  parallel?: number;
};

type BackupLogicalState = {
  preflight?: LogicalPreflight;
  /** One id for all databases of this run; kept so that a resumed run continues it. */
  dumpId?: string;
  /** The committed dumps, by database. */
  dumps?: Record<string, DumpRecord>;
};

type Ctx = StepContext<Typed<BackupLogicalParams, BackupLogicalState>>;

const MAX_PARALLEL = 32;

export const backupLogicalProcedure = defineProcedure<BackupLogicalParams, BackupLogicalState>({
  id: 'backup-logical',
  title: 'Logical backup (pg_dump)',
  summary: 'pg_dump -Fc of each database streamed into the repository (zstd), with exact row counts read from the dump itself, size and SHA-256.',
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
    if (n !== undefined && !(Number.isInteger(n) && n >= 1 && n <= MAX_PARALLEL)) {
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
        `Before anything is dumped: the repository answers, ${describeConnection(ctx.services.connection)} answers, ` +
        `pg_dump is at least as new as the server, and every database to dump exists.`,
      plan: (ctx) => planPreflight(describeRepo(ctx), describeConnection(ctx.services.connection)),
      run: preflight,
    },
    {
      id: 'dump',
      title: 'Dump each database into the repository',
      kind: 'action',
      describe: (ctx) => {
        const dbs = ctx.state.preflight?.targets.join(', ') ?? 'the databases';
        return `pg_dump -Fc of ${dbs}, streamed into ${describeRepo(ctx)}, ${parallelOf(ctx)} at a time; each table's rows counted in the dump's own data as it streams; dump.json written last.`;
      },
      plan: planDump,
      async run(ctx) {
        const pre = ctx.state.preflight;
        if (!pre) throw new Error('the preflight step has not run in this run; start a new backup');
        const repo = await openRepository(ctx.services.repo, ctx.services.env);
        try {
          const id = (ctx.state.dumpId ??= await freshDumpId(repo, pre.targets));
          const dumps = (ctx.state.dumps ??= {});
          const pending = await takeCommittedDumps(ctx, repo, pre.targets, id, dumps);
          const failures = await dumpDatabases(ctx, ctx.services, repo, pre, id, pending, dumps, parallelOf(ctx));
          if (failures.length) throw new Error(dumpFailureMessage(failures, pre.targets.filter((db) => dumps[db])));
        } finally {
          await repo.close().catch(() => {});
        }
      },
    },
    {
      id: 'verify',
      title: 'Check every dump in the repository',
      kind: 'verify',
      describe: () =>
        'Each dump as the repository holds it: its size must be what was written (its SHA-256 was taken while writing, and every data block read as it streamed), and pg_restore --list must parse its table of contents. A dump committed by an earlier attempt is read back whole against its SHA-256.',
      plan: (ctx) => [`check each dump in ${describeRepo(ctx)}: its size against what was written (SHA-256 taken while writing); pg_restore --list its table of contents (a dump from an earlier attempt: read back whole against dump.json's SHA-256)`],
      skipIf: (ctx) => (!ctx.dryRun && Object.keys(ctx.state.dumps ?? {}).length === 0 ? 'no dump was made' : undefined),
      async run(ctx) {
        const pre = ctx.state.preflight;
        if (!pre) throw new Error('the preflight step has not run in this run; start a new backup');
        const dumps = ctx.state.dumps ?? {};
        const repo = await openRepository(ctx.services.repo, ctx.services.env);
        try {
          const records = pre.targets.filter((db) => dumps[db]).map((db): [string, DumpRecord] => [db, dumps[db]]);
          await verifyDumps(ctx, repo, records, { pgRestore: pre.pgRestore, env: ctx.services.env });
          // The id restores take with --dump: on the report's first lines.
          if (records.length) ctx.fact(records.length === 1 ? 'Dump' : 'Dumps', `${ctx.state.dumpId} of ${records.map(([db]) => db).join(', ')}`);
        } finally {
          await repo.close().catch(() => {});
        }
      },
    },
  ],
});

// ---------------------------------------------------------------------------------------------
// preflight

async function preflight(ctx: Ctx): Promise<void> {
  const { connection: conn, env } = ctx.services;
  // No repository is bad usage: say so (openRepository's message names --repo and PGRUNBOOK_REPO)
  // before touching anything else.
  if (!ctx.services.repo) await openRepository(undefined, env);
  // Where pg_dump and pg_restore are and their versions, looked up (and cached) while the
  // repository and the server answer: the checks below then take them from the cache.
  const warm = Promise.all([findPgClientFor('pg_dump', 0), findPgClientFor('pg_restore', 0)]).catch(() => {});
  const problems: string[] = [];
  const fail = (name: string, message: string) => {
    ctx.check(name, false, message);
    problems.push(message);
  };

  // The server is asked while the repository answers; its check is reported after the repository's.
  const serverRead = readDumpSource(conn);
  serverRead.catch(() => {});
  let repo: Repository | undefined;
  let identity: RepositoryIdentity | undefined;
  let repoStore: Repository['store'] | undefined;
  try {
    repo = await openRepository(ctx.services.repo, env);
    await probeDumps(repo);
    repoStore = repo.store;
    identity = await readRepositoryIdentity(repo.store);
    ctx.check('repository reachable', true, repo.describe());
  } catch (err) {
    // An unparsable URL says so itself; a store that does not answer gets told where to look.
    fail(
      'repository reachable',
      repo
        ? `the repository is not reachable: ${errorMessage(err).replace(/\.+$/, '')}. Check the URL (${repo.describe()}), the credentials and that the storage answers`
        : errorMessage(err),
    );
  } finally {
    await repo?.close().catch(() => {});
  }

  let server: Awaited<ReturnType<typeof readDumpSource>> | undefined;
  try {
    server = await serverRead;
    ctx.check('server reachable', true, `${describeConnection(conn)}, PostgreSQL ${server.version}`);
  } catch (err) {
    fail('server reachable', errorMessage(err));
  }

  // A repository holds one cluster: another cluster's is refused before anything is written.
  if (identity && repoStore && server) {
    if (!server.systemIdentifier) {
      fail('repository belongs to this cluster', `the repository belongs to the cluster with system identifier ${identity.systemIdentifier}, and ${systemIdentifierDeniedHint(conn.user)}`);
    } else {
      for (const w of checkRepositoryIdentity(repoStore, identity, server.systemIdentifier, { pgMajor: serverMajor(server.versionNum), walSegmentSize: server.walSegmentSize })) ctx.log(w, 'warn');
      ctx.check('repository belongs to this cluster', true, ownerCheckDetail(identity));
    }
  }
  if (!server) throw new Error(`cannot start the backup: ${problems.join('; ')}`);

  const major = serverMajor(server.versionNum);
  await warm;
  let pgDump: { path: string; version: string } | undefined;
  try {
    const v = await findPgClientFor('pg_dump', major, server.version);
    pgDump = { path: v.path, version: v.full };
    ctx.check('pg_dump', true, `${v.path} ${v.full} (server ${server.version})`);
  } catch (err) {
    fail('pg_dump', errorMessage(err));
  }
  let pgRestore: string | undefined;
  try {
    pgRestore = (await findPgClientFor('pg_restore', major, server.version)).path;
  } catch (err) {
    ctx.log(`pg_restore not usable (${errorMessage(err)}): the verify step will check checksums and sizes, not that the archives parse`, 'warn');
  }

  const dumpable = server.databases.filter((d) => d.allowConn && !d.template).map((d) => d.name);
  const targets = targetsGiven(ctx) ?? dumpable;
  const bad = dumpTargetProblems(targets, server.databases, conn.user);
  const sizeOf = (db: string) => server.databases.find((d) => d.name === db)?.size ?? 0;
  if (bad.length) {
    fail('databases', `${bad.join('; ')} on ${describeConnection(conn)}. Databases that can be dumped: ${dumpable.join(', ') || 'none'}. Fix --databases (or the profile's databases)`);
  } else {
    ctx.check('databases', true, targets.join(', '));
    ctx.log(`size on disk (the dump is usually much smaller: compressed, without indexes): ${targets.map((db) => `${db} ${formatBytes(sizeOf(db))}`).join(', ')}`);
  }

  if (problems.length || !pgDump) throw new Error(`cannot start the backup: ${problems.join('; ')}`);
  ctx.state.preflight = {
    targets,
    serverVersion: server.version,
    serverMajor: major,
    pgDump,
    pgRestore,
    databaseSizes: Object.fromEntries(targets.map((db) => [db, sizeOf(db)])),
    systemIdentifier: server.systemIdentifier,
    walSegmentSize: server.walSegmentSize,
    databaseOids: Object.fromEntries(targets.map((db) => [db, server.databases.find((d) => d.name === db)!.oid])),
  };
}

function targetsGiven(ctx: Ctx): string[] | undefined {
  const given = ctx.params.databases;
  if (given?.length) return [...new Set(given)];
  const profileDbs = ctx.services.profile.databases;
  if (profileDbs?.length) return [...new Set(profileDbs)];
  return undefined;
}

function parallelOf(ctx: Ctx): number {
  return Number(ctx.params.parallel ?? 1);
}

function describeRepo(ctx: Ctx): string {
  return describeRepository(ctx.services, '(no repository: pass --repo URL or set PGRUNBOOK_REPO)', (message) => `(invalid repository URL: ${message})`);
}

// ---------------------------------------------------------------------------------------------
// dump

async function planDump(ctx: Ctx): Promise<string[]> {
  let dbs = targetsGiven(ctx);
  const lines: string[] = [];
  if (!dbs) {
    try {
      dbs = await listDumpableDatabases(ctx.services.connection);
      lines.push(`databases (every one that accepts connections, templates excluded): ${dbs.join(', ')}`);
    } catch (err) {
      lines.push(`every database that accepts connections, templates excluded (could not list them now: ${errorMessage(err)})`);
      dbs = [];
    }
  } else {
    lines.push(`databases: ${dbs.join(', ')}`);
  }
  return [...lines, ...planDumps(dbs, parallelOf(ctx))];
}
