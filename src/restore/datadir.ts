// The data directory a recovery replaces: moved aside under a dated name (never deleted), made
// anew for the base backup (only ever emptied when this run made it), and room for both.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { formatBytes } from '../engine/format.js';
import { isRoot, lookupUser, ownerOf } from '../postgres/osuser.js';

export type Owner = { uid: number; gid: number };

/** Where `pgdata` goes aside: next to it, named for the time (to the second, UTC). */
export function asideName(pgdata: string, now = new Date()): string {
  return `${pgdata}.pgrunbook-${now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}`;
}

/** Rename `pgdata` to `aside`, keeping what a new one must match: its owner and mode. */
export async function moveAside(pgdata: string, aside: string): Promise<{ owner: Owner; mode: number }> {
  const owner = await ownerOf(pgdata);
  const mode = (await fsp.stat(pgdata)).mode & 0o777;
  await fsp.rename(pgdata, aside).catch((e: NodeJS.ErrnoException) => {
    throw new Error(
      `could not move ${pgdata} aside to ${aside}: ${e.message}${e.code === 'EXDEV' ? ' (different file systems)' : ''}. The server is stopped and the data directory is untouched; start it again with the profile's start command if you stop here.`,
    );
  });
  return { owner, mode };
}

/** Who should own a data directory made from nothing: the parent's owner, or postgres when that is root. */
export async function newDataDirOwner(parent: string): Promise<Owner> {
  const owner = await ownerOf(parent);
  if (isRoot() && owner.uid === 0) {
    const pg = await lookupUser('postgres').catch(() => undefined);
    if (pg) return { uid: pg.uid, gid: pg.gid };
  }
  return owner;
}

/** Free space next to `pgdata` for a backup that unpacks to about `need` bytes (the old directory stays). */
export async function freeSpaceFor(pgdata: string, need: number): Promise<{ free: number } | undefined> {
  let free: number;
  try {
    const st = await fsp.statfs(path.dirname(pgdata));
    free = st.bavail * st.bsize;
  } catch {
    return undefined; // no statfs here: the unpack itself will say when space runs out
  }
  if (need && free < need * 1.1) {
    throw new Error(`not enough free space next to ${pgdata}: the backup unpacks to about ${formatBytes(need)}, ${formatBytes(free)} is free (the current data directory is kept, so both must fit). Free space first.`);
  }
  return { free };
}

function markerOf(pgdata: string, runId: string): string {
  return path.join(pgdata, `.pgrunbook-restoring-${runId}`);
}

/**
 * A resumed run taking over the directory an earlier attempt of it made: its marker now names this
 * process, so `retention --data-dirs` leaves it alone while this run lives. Nothing without the marker.
 */
export async function claimRestoreDir(pgdata: string, runId: string): Promise<void> {
  const marker = markerOf(pgdata, runId);
  if (fs.existsSync(marker)) await fsp.writeFile(marker, `${os.hostname()} ${process.pid}\n`);
}

/**
 * An empty `pgdata` (mode 0700, owned by `owner`) marked as this run's. After an interrupted
 * unpack it starts over from empty, but only a directory this run made (it carries the marker)
 * or an empty one: never anything else found at that path.
 */
export async function makeRestoreDir(pgdata: string, runId: string, owner: Owner): Promise<void> {
  const marker = markerOf(pgdata, runId);
  if (fs.existsSync(pgdata)) {
    const entries = await fsp.readdir(pgdata);
    if (entries.length && !fs.existsSync(marker)) {
      throw new Error(`${pgdata} exists and was not made by this restore (run ${runId}); it is left alone. Move it aside yourself, then --resume ${runId}.`);
    }
    await fsp.rm(pgdata, { recursive: true, force: true });
  }
  await fsp.mkdir(pgdata, { mode: 0o700 });
  // Who is writing it: `retention --data-dirs` leaves a staging directory alone while its run lives.
  await fsp.writeFile(marker, `${os.hostname()} ${process.pid}\n`);
  if (isRoot()) await fsp.chown(pgdata, owner.uid, owner.gid);
}

/**
 * Inside a staged data directory: WAL segments the preflight read and checked on the recovery's
 * path, kept for replay. handOverKeptWal moves them out before the server starts.
 */
export const KEPT_WAL_DIR = '.pgrunbook-wal';

/**
 * Moves the segments the preflight kept in `pgdata`/KEPT_WAL_DIR into `fetchDir` (the spool's
 * fetch directory, where restore_command's shell fast path takes a segment by rename; it was
 * emptied for this recovery), then removes the directory. Returns how many were handed over.
 */
export async function handOverKeptWal(pgdata: string, fetchDir: string, owner: Owner | undefined): Promise<number> {
  const dir = path.join(pgdata, KEPT_WAL_DIR);
  const names = await fsp.readdir(dir).catch(() => [] as string[]);
  if (names.length) {
    await fsp.mkdir(fetchDir, { recursive: true, mode: 0o700 });
    if (owner && isRoot()) await fsp.chown(fetchDir, owner.uid, owner.gid);
  }
  let moved = 0;
  for (const n of names) {
    // Another file system (EXDEV), say: replay fetches the rest from the repository as usual.
    const ok = await fsp.rename(path.join(dir, n), path.join(fetchDir, n)).then(() => true, () => false);
    if (!ok) break;
    moved++;
  }
  await fsp.rm(dir, { recursive: true, force: true });
  return moved;
}

/** The unpacked backup as a server may start from it: no stale postmaster.pid, no marker, mode 0700. */
export async function finishRestoreDir(pgdata: string, runId: string): Promise<void> {
  await fsp.rm(path.join(pgdata, 'postmaster.pid'), { force: true });
  await fsp.rm(markerOf(pgdata, runId), { force: true });
  await fsp.chmod(pgdata, 0o700);
}
