// The dumps a restore can use, in the repository (complete ones: dump.json present), and the
// private local copy a restore works from: downloaded with its SHA-256 and size checked, in a
// directory only we can read, removed afterwards.
import fs from 'node:fs';
import { ArchiveRowCounter, fillDataOffsets, readArchiveHead, type ArchiveLayout } from '../postgres/formats/custom-archive.js';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { formatBytes } from '../engine/format.js';
import { errorMessage } from '../engine/runner.js';
import { DUMP_META, DUMP_PREFIX, type DumpMeta } from './catalog.js';
import { decompressStream, zstdDecompressIntoFile, type Codec } from './codec.js';
import { openRepository, safeName, type Repository } from './repository.js';
import { pgrunbookCommand } from '../engine/command-name.js';

// ---------------------------------------------------------------------------------------------
// Work files

/** Room kept free besides the dump itself: a full disk breaks more than this restore. */
export function spaceMargin(size: number): number {
  return Math.max(64 * 1024 * 1024, Math.ceil(size * 0.05));
}

export interface FreeSpace {
  dir: string;
  free: number;
  needed: number;
  ok: boolean;
}

/** Free space for an unprivileged writer in `dir` (which must exist), against `size` plus a margin. */
export async function checkFreeSpace(dir: string, size: number): Promise<FreeSpace> {
  const st = await fsp.statfs(dir);
  const free = Number(st.bavail) * Number(st.bsize);
  const needed = size + spaceMargin(size);
  return { dir, free, needed, ok: free >= needed };
}

export function freeSpaceMessage(s: FreeSpace, what: string): string {
  return (
    `not enough free space in ${s.dir} for ${what}: ${formatBytes(s.needed)} needed (with a margin), ${formatBytes(s.free)} free. ` +
    `Pass --work-dir DIR on a filesystem with room (the file is deleted afterwards), or free some space`
  );
}

export interface DownloadedDump {
  /** The private directory holding the file (mode 0700); remove it with removeWorkDir. */
  dir: string;
  file: string;
  bytes: number;
}

/**
 * Copy an object into a fresh private directory under `parentDir`, checking its SHA-256 and size
 * on the way. On any failure (a corrupt object, a full disk, an abort) nothing is left behind.
 */
export async function downloadToFile(
  repo: Repository,
  key: string,
  opts: {
    sha256?: string;
    size?: number;
    /** The codec around the stored object: the file gets what is inside it, `archiveSize` bytes. */
    compression?: Codec;
    archiveSize?: number;
    parentDir: string;
    fileName: string;
    /** Where each data block starts (dump.json's dataBlocks): written into the TOC without reading the archive for them. */
    dataBlocks?: [number, number][];
    signal?: AbortSignal;
    onBytes?: (total: number) => void;
  },
): Promise<DownloadedDump> {
  const dir = await fsp.mkdtemp(path.join(opts.parentDir, 'pgrunbook-restore-'));
  await fsp.chmod(dir, 0o700);
  const file = path.join(dir, opts.fileName);
  let bytes = 0;
  try {
    const body = await repo.getVerified(key, opts.sha256, opts.signal);
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        bytes += chunk.length;
        opts.onBytes?.(bytes);
        cb(null, chunk);
      },
    });
    // The stream fails at its end when the bytes do not hash to `sha256`: the file is then removed.
    let layout: () => ArchiveLayout | Promise<ArchiveLayout | undefined>;
    if (opts.compression === 'zstd' && opts.dataBlocks?.length) {
      // The block positions are known: zstd writes the archive into the file itself (the
      // decompressed bytes never pass through this process), and only the TOC is read back.
      const fh = await fsp.open(file, 'wx', 0o600);
      try {
        await pipeline(body, counter, zstdDecompressIntoFile(fh.fd), { signal: opts.signal });
      } finally {
        await fh.close();
      }
      const blocks = new Map(opts.dataBlocks);
      layout = async () => {
        const head = await readArchiveHead(file);
        return head && { head, blockAt: blocks };
      };
    } else {
      // On the way, where each table's data starts: written into the file's TOC afterwards.
      const locator = new ArchiveRowCounter(false);
      await pipeline(body, counter, decompressStream(opts.compression ?? 'none'), locator, fs.createWriteStream(file, { mode: 0o600 }), { signal: opts.signal });
      layout = () => locator.layout();
    }
    if (opts.size !== undefined && bytes !== opts.size) {
      throw new Error(`${key} holds ${bytes} bytes, dump.json says ${opts.size}: the dump is damaged; choose another one with --dump ID`);
    }
    const written = (await fsp.stat(file)).size;
    if (opts.archiveSize !== undefined && written !== opts.archiveSize) {
      throw new Error(`${key} decompresses to ${written} bytes, dump.json says ${opts.archiveSize}: the dump is damaged; choose another one with --dump ID`);
    }
    try {
      const found = await layout();
      if (found) await fillDataOffsets(file, found);
    } catch {
      // Not an archive this reader knows (another format version): pg_restore finds the blocks itself, only slower.
    }
    return { dir, file, bytes };
  } catch (err) {
    await removeWorkDir(dir);
    throw err;
  }
}

/** Remove a directory made by downloadToFile; only ever one whose name we gave it. */
export async function removeWorkDir(dir: string | undefined): Promise<void> {
  if (!dir || !path.basename(dir).startsWith('pgrunbook-restore-')) return;
  await fsp.rm(dir, { recursive: true, force: true });
}


/** A directory the dump's copy can be written into, or why not. */
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

// ---------------------------------------------------------------------------------------------
// Finding a dump

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
  /** The codec around the archive; absent for dumps made before pgrunbook compressed them itself. */
  compression?: Codec;
  /** The archive's own size, once decompressed: what the local copy takes. */
  archiveSize?: number;
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
        `Check --database and --repo, or make one with: ${pgrunbookCommand(`--procedure backup-logical --databases ${database}`)}`,
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
      ...(meta.compression ? { compression: meta.compression } : {}),
      ...(meta.archiveSize !== undefined ? { archiveSize: meta.archiveSize } : {}),
    },
    meta,
  };
}

export function describeDump(d: ChosenDump): string {
  return `dump ${d.id} of ${d.database}${d.consistentAt ? ` (data as of ${d.consistentAt})` : ''}${d.size !== undefined ? `, ${formatBytes(d.size)}` : ''}`;
}

/** With the repository at `url` opened for the call and closed after it. */
export async function withRepository<T>(url: string | undefined, env: NodeJS.ProcessEnv, fn: (repo: Repository) => Promise<T>): Promise<T> {
  const repo = await openRepository(url, env);
  try {
    return await fn(repo);
  } finally {
    await repo.close().catch(() => {});
  }
}

/**
 * The dump's private copy in a fresh directory under `workDir` (after checking there is room for
 * it), its SHA-256 and size checked on the way. Errors name the object and the repository.
 */
export async function downloadDump(
  url: string | undefined,
  env: NodeJS.ProcessEnv,
  chosen: ChosenDump,
  workDir: string,
  opts: { signal?: AbortSignal; onBytes?: (total: number) => void; onStart?: (message: string) => void } = {},
): Promise<DownloadedDump> {
  const local = chosen.archiveSize ?? chosen.size ?? 0;
  const space = await checkFreeSpace(workDir, local);
  if (!space.ok) throw new Error(freeSpaceMessage(space, `the dump (${formatBytes(local)}${chosen.compression && chosen.compression !== 'none' ? `, decompressed from ${formatBytes(chosen.size ?? 0)}` : ''})`));
  return withRepository(url, env, async (repo) => {
    try {
      opts.onStart?.(`downloading ${chosen.key} (${formatBytes(chosen.size ?? 0)}) into ${workDir}, checking its SHA-256`);
      // Not journaled with the chosen dump (a list as long as the tables): read from dump.json now.
      const blocks = chosen.compression === 'zstd' ? (await readDumpMeta(repo, chosen.database, chosen.id)).dataBlocks : undefined;
      return await downloadToFile(repo, chosen.key, {
        ...(validBlocks(blocks) ? { dataBlocks: blocks } : {}),
        sha256: chosen.sha256,
        size: chosen.size,
        compression: chosen.compression,
        archiveSize: chosen.archiveSize,
        parentDir: workDir,
        fileName: `${safeName(chosen.database)}.dump`,
        signal: opts.signal,
        onBytes: opts.onBytes,
      });
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      // Damaged bytes stay damaged bytes (corrupt: exit 3), whatever the wording around them.
      const corrupt = (err as { corrupt?: unknown } | null)?.corrupt === true;
      throw Object.assign(new Error(`could not download ${chosen.key} from ${repo.describe()}: ${errorMessage(err).replace(/\.+$/, '')}`), corrupt ? { corrupt } : {});
    }
  });
}

function validBlocks(blocks: unknown): blocks is [number, number][] {
  return Array.isArray(blocks) && blocks.length > 0 && blocks.every((b) => Array.isArray(b) && b.length === 2 && b.every((n) => Number.isSafeInteger(n) && n >= 0));
}

/** Where a database's dumps live in the repository, for plans. */
export function dumpFolder(database: string): string {
  return `${DUMP_PREFIX}${safeName(database)}/`;
}
