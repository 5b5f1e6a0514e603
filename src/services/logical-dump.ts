// A logical backup's databases, each dumped into the repository: pg_dump -Fc --compress=0 streamed
// there (no temporary file) through the repository's codec (zstd: through a worker thread and
// named pipes, logical-dump-pass.ts), with exact per-table row counts and each table's data
// position read from the dump's own archive as it passes (no second scan of the tables), and dump.json (size,
// SHA-256, counts, versions) written last as the commit marker. A dump that fails
// or is interrupted never gets its dump.json, so it is never offered for restore.
import { pipeline } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import type { ConnectionSettings } from '../config/connection.js';
import { formatBytes, formatDuration } from '../engine/format.js';
import { errorMessage } from '../engine/runner.js';
import { withPg } from '../postgres/client.js';
import { listDatabases, readServerIdentity, type DatabaseInfo, type ServerIdentity } from '../postgres/cluster.js';
import { ArchiveFormatError, ArchiveRowCounter } from '../postgres/formats/custom-archive.js';
import { startPgDump, type ChildExit } from '../postgres/programs/pg_dump.js';
import { describeSnapshotDump, ExportedSnapshot } from '../postgres/snapshot.js';
import { DUMP_META, DUMP_PREFIX, type DumpMeta } from '../repo/catalog.js';
import { compressStream, defaultCodec, type Codec } from '../repo/codec.js';
import { ensureRepositoryIdentity } from '../repo/identity.js';
import { backupId, safeName, uniqueBackupId, type ObjectRecord, type Repository } from '../repo/repository.js';
import { startDumpPass } from './logical-dump-pass.js';
import { anythingUnder, probeRepository, type RunIO } from './run-repository.js';

/** What preflight learned, journaled so a resumed run dumps exactly what was checked. */
export type LogicalPreflight = {
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
};

/** One committed dump, as the verify step needs it. */
export type DumpRecord = {
  key: string;
  metaKey: string;
  size: number;
  sha256: string;
  tables: number;
  rows: number;
  /** The codec around the archive (absent: pg_dump's own compression, dumps made before). */
  compression?: Codec;
  /**
   * Made by this run: hashed as written and every data block of its archive walked as it streamed
   * (the row counts come from it), so verify does not read it back whole.
   */
  walked?: boolean;
};

export function planPreflight(repo: string, server: string): string[] {
  return [
    `open the repository ${repo} and list ${DUMP_PREFIX}`,
    `connect to ${server}; read the server version and the databases`,
    `find pg_dump (its major version must be at least the server's) and pg_restore`,
  ];
}

/** A listing of the dumps proves the storage answers and the credentials work, without writing anything. */
export function probeDumps(repo: Repository): Promise<void> {
  return probeRepository(repo, DUMP_PREFIX);
}

export type DumpSettings = { connection: ConnectionSettings; env: NodeJS.ProcessEnv; codec?: Codec };

/** The server to dump: version, identity and its databases. */
export async function readDumpSource(conn: ConnectionSettings): Promise<ServerIdentity & { databases: DatabaseInfo[] }> {
  return withPg(conn, async (c) => ({ ...(await readServerIdentity(c)), databases: await listDatabases(c) }));
}

/** What stands in the way of dumping `targets` from a server with `databases`; empty when nothing does. */
export function dumpTargetProblems(targets: string[], databases: DatabaseInfo[], user: string | undefined): string[] {
  const bad: string[] = [];
  for (const db of targets) {
    const found = databases.find((d) => d.name === db);
    if (!found) bad.push(`database "${db}" does not exist`);
    else if (!found.allowConn) bad.push(`database "${db}" does not accept connections (datallowconn is false)`);
    else if (found.size === null) bad.push(`user "${user}" may not connect to database "${db}"`);
  }
  const collisions = collidingNames(targets);
  if (collisions.length) bad.push(`databases ${collisions.join(' and ')} would share one folder in the repository (names are made safe by replacing unusual characters with _); dump them in separate runs`);
  if (targets.length === 0) bad.push('no database to dump: the server has none that accepts connections');
  return bad;
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

export function dumpObjectName(database: string): string {
  return `${safeName(database)}.dump`;
}

/** What the dump step will do, for --dry-run. */
export function planDumps(dbs: string[], parallel: number): string[] {
  const id = backupId(new Date());
  const dumpKey = (db: string, name: string) => `${DUMP_PREFIX}${safeName(db)}/${safeName(id)}/${name}`;
  const lines = [`backup id ${id}-<ms>-<random> (the start time plus a random part); ${parallel} database(s) at a time`];
  for (const db of dbs) lines.push(`${db}: ${describeSnapshotDump(dumpKey(db, dumpObjectName(db)), dumpKey(db, DUMP_META))}`);
  return lines;
}

async function readCommittedDump(repo: Repository, db: string, id: string): Promise<DumpRecord | undefined> {
  const metaKey = repo.dumpKey(db, id, DUMP_META);
  const info = await repo.store.head(metaKey);
  if (!info) return undefined;
  const meta = JSON.parse((await buffer(await repo.getVerified(metaKey, info.metadata.sha256))).toString('utf8')) as DumpMeta;
  const counts = meta.rowCounts ?? {};
  return {
    key: repo.dumpKey(db, id, meta.object ?? dumpObjectName(db)),
    metaKey,
    size: meta.size ?? 0,
    sha256: meta.sha256 ?? '',
    tables: Object.keys(counts).length,
    rows: Object.values(counts).reduce((a, b) => a + b, 0),
    ...(meta.compression ? { compression: meta.compression } : {}),
  };
}

/** The start time plus a random part (no other run picks the same); checked against what is there anyway. */
export async function freshDumpId(repo: Repository, dbs: string[]): Promise<string> {
  const now = new Date();
  for (let n = 1; n < 10; n++) {
    const id = uniqueBackupId(now);
    let taken = false;
    for (const db of dbs) {
      taken = await anythingUnder(repo, `${DUMP_PREFIX}${safeName(db)}/${safeName(id)}/`);
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

/**
 * Resumed: a database committed by an earlier attempt of this run is done. Its dump.json is the
 * authority (the attempt may have ended before journaling it), and a committed dump's data must
 * never be written over. Records those in `dumps`; returns the databases still to dump.
 */
export async function takeCommittedDumps(io: Pick<RunIO, 'log'>, repo: Repository, targets: string[], id: string, dumps: Record<string, DumpRecord>): Promise<string[]> {
  const pending: string[] = [];
  for (const db of targets) {
    const committed = await readCommittedDump(repo, db, id);
    if (committed) {
      dumps[db] = committed;
      io.log(`${db}: already dumped as ${id} by an earlier attempt of this run`);
      continue;
    }
    delete dumps[db];
    pending.push(db);
  }
  return pending;
}

export type DumpFailure = { db: string; error: string };

/**
 * Dumps `pending`, `parallel` at a time, recording each committed one in `dumps`. One broken
 * database does not cost the others their backup (each dump is committed on its own): its
 * failure is returned, and the others go on. An interruption throws.
 */
export async function dumpDatabases(
  io: RunIO,
  svc: DumpSettings,
  repo: Repository,
  pre: LogicalPreflight,
  id: string,
  pending: string[],
  dumps: Record<string, DumpRecord>,
  parallel: number,
): Promise<DumpFailure[]> {
  const streamed = new Map<string, number>();
  const alreadyDone = Object.values(dumps).reduce((n, d) => n + d.size, 0);
  const total = () => alreadyDone + [...streamed.values()].reduce((a, b) => a + b, 0);
  const width = Math.max(1, Math.min(parallel, pending.length));
  const failures: DumpFailure[] = [];

  await runPool(pending, width, io.signal, async (db) => {
    try {
      dumps[db] = await dumpDatabase(io, svc, repo, pre, db, id, (bytes) => {
        streamed.set(db, bytes);
        io.progress({ done: total(), unit: 'bytes' });
      });
    } catch (err) {
      if (io.signal.aborted) throw err;
      failures.push({ db, error: errorMessage(err).replace(/\.+$/, '') });
      if (pending.length > 1) io.log(`${db}: ${errorMessage(err)}`, 'error');
    }
  });
  const done = total();
  io.progress({ done, total: done, unit: 'bytes' });
  return failures;
}

/** The error a dump step ends with when some dumps failed: which, why, and what was committed. */
export function dumpFailureMessage(failures: DumpFailure[], committed: string[]): string {
  return (
    `${failures.length === 1 ? `the dump of ${failures[0].db} failed: ${failures[0].error}` : `${failures.length} dumps failed: ${failures.map((f) => `${f.db}: ${f.error}`).join('; ')}`}. ` +
    `${failures.length === 1 ? 'It is not listed as a backup' : 'They are not listed as backups'} (no dump.json)` +
    `${committed.length ? `; committed: ${committed.join(', ')}` : ''}. Fix the cause and run the backup again`
  );
}

async function dumpDatabase(io: RunIO, svc: DumpSettings, repo: Repository, pre: LogicalPreflight, db: string, id: string, onBytes: (bytes: number) => void): Promise<DumpRecord> {
  const conn: ConnectionSettings = { ...svc.connection, database: db };
  const name = dumpObjectName(db);
  const key = repo.dumpKey(db, id, name);
  const metaKey = repo.dumpKey(db, id, DUMP_META);
  // Stops this database's pg_dump, upload and counting together when any of them fails.
  const local = new AbortController();
  const signal = AbortSignal.any([io.signal, local.signal]);
  const started = Date.now();
  const startTime = new Date(started).toISOString();

  // The snapshot pg_dump reads and the counts below are one and the same: exported by this
  // transaction, which stays open until both are done.
  const snapshot = await ExportedSnapshot.open(conn, 'pgrunbook backup-logical');
  let putStarted = false;
  let commitAttempted = false;
  try {
    const codec = svc.codec ?? defaultCodec(svc.env);
    io.log(`${db}: pg_dump --format=custom --compress=0 --snapshot=${snapshot.name}, ${codec} -> ${key}`);
    const dumpOpts = {
      pgDump: pre.pgDump.path,
      connection: conn,
      snapshot: snapshot.name,
      signal,
      env: svc.env,
      onBytes,
      // Once we stop pg_dump ourselves, what it says about being stopped is noise.
      onStderrLine: (line: string) => {
        if (!signal.aborted) io.log(`${db}: ${line}`, 'warn');
      },
    };
    const abortOnFailure = <T>(p: Promise<T>): Promise<T> =>
      p.catch((err: unknown) => {
        local.abort(err);
        throw err;
      });
    // zstd: pg_dump's archive goes through a thread (row counts) into zstd over named pipes, and
    // only zstd's output through this thread (logical-dump-pass.ts). Otherwise, or where named pipes
    // cannot be made: pg_dump's bytes -> the row counter (pass-through) -> the codec -> the
    // repository. Either way a failure anywhere fails the upload rather than storing a short dump.
    const pass = codec === 'zstd' ? startDumpPass(dumpOpts) : undefined;
    putStarted = true;
    let command: string;
    let archiveBytes: () => number;
    let exit: PromiseSettledResult<ChildExit>;
    let put: PromiseSettledResult<ObjectRecord>;
    let counted: () => Promise<{ rows: Record<string, number> | ArchiveFormatError; blocks?: [number, number][] }>;
    if (pass) {
      command = pass.command;
      archiveBytes = pass.bytes;
      [put, exit] = await Promise.allSettled([abortOnFailure(repo.putObject(key, pass.stored, { signal, sizeHint: pre.databaseSizes[db] || undefined })), pass.exited]);
      counted = () => pass.counted;
    } else {
      const dump = startPgDump(dumpOpts);
      command = dump.command;
      archiveBytes = dump.bytes;
      const rowCounter = new ArchiveRowCounter();
      const stored = pipeline(dump.output, rowCounter, compressStream(codec), () => {});
      [put, exit] = await Promise.allSettled([abortOnFailure(repo.putObject(key, stored, { signal, sizeHint: pre.databaseSizes[db] || undefined })), dump.exited]);
      counted = async () => {
        try {
          return { rows: rowCounter.result().rows, blocks: [...rowCounter.blockAt] };
        } catch (err) {
          if (!(err instanceof ArchiveFormatError)) throw err;
          return { rows: err };
        }
      };
    }
    const exited = exit.status === 'fulfilled' ? exit.value : undefined;

    if (io.signal.aborted) throw io.signal.reason ?? new Error('interrupted');
    // pg_dump failing on its own explains everything else (the upload fails because of it).
    if (exited && !exited.ok && !exited.canceled) throw new Error(`${exited.failure} (command: ${command})`);
    if (put.status === 'rejected') throw new Error(`could not write it to the repository: ${errorMessage(put.reason)}`);
    if (!exited?.ok) throw new Error(`${exited?.failure ?? 'pg_dump failed'} (command: ${command})`);
    const walked = await counted();
    const counts = await countDumpedRows(io, db, walked.rows, snapshot, signal);

    await snapshot.commit().catch((err: unknown) => io.log(`${db}: ending the snapshot transaction: ${errorMessage(err)} (the counts were already read)`, 'warn'));

    const stopped = Date.now();
    const rowCounts = counts.rows;
    const meta: DumpMeta = {
      id,
      database: db,
      object: name,
      format: 'custom',
      compression: codec,
      archiveSize: archiveBytes(),
      // Where each table's data starts in the archive: a restore writes them into its local copy's
      // table of contents so pg_restore --jobs can seek (a streamed archive has none).
      ...(walked.blocks?.length ? { dataBlocks: walked.blocks } : {}),
      rowCountsFrom: counts.from,
      size: put.value.size,
      sha256: put.value.sha256,
      startTime,
      stopTime: new Date(stopped).toISOString(),
      durationMs: stopped - started,
      consistentAt: snapshot.at.toISOString(),
      rowCounts,
      pgDumpVersion: pre.pgDump.version,
      serverVersion: pre.serverVersion,
      databaseSize: pre.databaseSizes[db],
      ...(pre.systemIdentifier ? { systemIdentifier: pre.systemIdentifier } : {}),
      ...(pre.databaseOids?.[db] !== undefined ? { databaseOid: pre.databaseOids[db] } : {}),
    };
    // The operator asked to stop: commit nothing more, even a dump that just finished.
    io.signal.throwIfAborted();
    // The first committed dump adopts the repository for this cluster; another cluster's record
    // (adopted since preflight) refuses it, and the dump's data is removed below.
    if (pre.systemIdentifier) {
      await ensureRepositoryIdentity(repo.store, { systemIdentifier: pre.systemIdentifier, pgMajor: pre.serverMajor, walSegmentSize: pre.walSegmentSize });
    }
    commitAttempted = true;
    await repo.commitDump(meta);
    const tables = Object.keys(rowCounts).length;
    const rows = Object.values(rowCounts).reduce((a, b) => a + b, 0);
    io.log(`${db}: ${formatBytes(meta.size!)} in ${formatDuration(meta.durationMs!)}, ${tables} tables, ${rows} rows; committed ${metaKey}`);
    return { key, metaKey, size: put.value.size, sha256: put.value.sha256, tables, rows, compression: codec, ...(counts.from === 'archive' ? { walked: true } : {}) };
  } catch (err) {
    await snapshot.rollback();
    // Without dump.json the data object is never offered for restore; remove it anyway so it does
    // not take space. Never after a commit was attempted: dump.json may exist despite the error, and
    // a dump.json without its data would be worse than data without a dump.json.
    if (putStarted && !commitAttempted) await removePartial(io, repo, db, key);
    throw err;
  } finally {
    await snapshot.close();
  }
}

/**
 * The rows of every user table in the dump: read from its COPY data (`walked`); tables it has
 * no data for, and every table when the archive could not be read (a pg_dump whose archive
 * version this reader does not know), are counted with count(*) in the dump's snapshot.
 */
async function countDumpedRows(
  io: Pick<RunIO, 'log'>,
  db: string,
  walked: Record<string, number> | ArchiveFormatError,
  snapshot: ExportedSnapshot,
  signal: AbortSignal,
): Promise<{ rows: Record<string, number>; from: 'archive' | 'count' }> {
  let known: Record<string, number> | undefined;
  if (walked instanceof ArchiveFormatError) io.log(`${db}: counting rows with count(*) in the dump's snapshot instead: ${walked.message}`, 'warn');
  else known = walked;
  try {
    return { rows: await snapshot.countRows(signal, known), from: known ? 'archive' : 'count' };
  } catch (err) {
    if (signal.aborted) throw err;
    throw new Error(`counting its rows failed: ${errorMessage(err)}`);
  }
}

async function removePartial(ctx: Pick<RunIO, 'signal' | 'log'>, repo: Repository, db: string, key: string): Promise<void> {
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

