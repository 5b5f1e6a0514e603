// The spool of asynchronous archiving and prefetching: a directory the server's OS user owns
// (mode 0700), outside the data directory (base backups copy that), shared by wal-push,
// wal-fetch, their background workers and `status`.
//
//   <spool>/push/ok/<name>        the segment is durably in the repository; holds its SHA-256,
//                                 or for a segment the pusher compressed without reading it, its
//                                 file's identity (segmentFingerprint). Created by rename only
//                                 after the store said durable, so the archive_command's shell
//                                 fast path (`test -f`) may trust it.
//   <spool>/push/pusher.pid       the pusher's lock: "<pid> <start ticks>" (stale when that
//                                 process is gone, or the pid was reused by another process)
//   <spool>/push/state.json       the pusher's queue as of its last pass (for `status`)
//   <spool>/push/pusher.log       what the pusher did and why it failed
//   <spool>/fetch/<name>          a prefetched segment, verified; created by rename after verification
//   <spool>/fetch/tmp/            segments being fetched (never handed to PostgreSQL from here)
//   <spool>/fetch/prefetcher.pid, state.json, prefetcher.log, want   the same for wal-fetch
//
// Only Node built-ins here: wal-push loads this module for every segment the fast path missed.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

export type SpoolSide = 'push' | 'fetch';

export function sideDir(spool: string, side: SpoolSide): string {
  return path.join(spool, side);
}

export function okDir(spool: string): string {
  return path.join(spool, 'push', 'ok');
}

export function okFile(spool: string, name: string): string {
  return path.join(okDir(spool), name);
}

export function fetchedFile(spool: string, name: string): string {
  return path.join(spool, 'fetch', name);
}

/** Create the spool (and a side's directories) owned by us, mode 0700. Refuses a spool others may read. */
export async function ensureSpool(spool: string, side: SpoolSide): Promise<void> {
  await fsp.mkdir(spool, { recursive: true, mode: 0o700 });
  const st = await fsp.stat(spool);
  if (!st.isDirectory()) throw new Error(`spool ${spool} is not a directory`);
  if ((st.mode & 0o077) !== 0) await fsp.chmod(spool, 0o700);
  const dirs = side === 'push' ? [sideDir(spool, 'push'), okDir(spool)] : [sideDir(spool, 'fetch'), path.join(spool, 'fetch', 'tmp')];
  for (const d of dirs) await fsp.mkdir(d, { recursive: true, mode: 0o700 });
}

export async function sha256OfFile(file: string): Promise<string> {
  return createHash('sha256')
    .update(await fsp.readFile(file))
    .digest('hex');
}

/**
 * A segment file's identity without reading it: device, inode, size, and the modification and
 * change times in nanoseconds. A segment waiting to be archived is never written again; a file
 * put in its place (a restored data directory, another server's pg_wal) has another inode or at
 * least another change time, which no tool can set back.
 */
export async function segmentFingerprint(file: string): Promise<string> {
  const st = await fsp.stat(file, { bigint: true });
  return `stat:${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

/** Whether an ok file's text vouches for `file` as it is now (its SHA-256 or its fingerprint). */
export async function okFileVouchesFor(text: string, file: string): Promise<boolean> {
  const want = text.trim();
  return want === (want.startsWith('stat:') ? await segmentFingerprint(file) : await sha256OfFile(file));
}

/** Write `text` to `file` by rename: readers see the old file or the whole new one, never a part. */
export async function writeAtomic(file: string, text: string): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  await fsp.writeFile(tmp, text, { mode: 0o600 });
  await fsp.rename(tmp, file);
}

// ---- the one-worker-per-spool lock ----

/** The kernel's start time of a process (field 22 of /proc/PID/stat), to tell a reused pid apart. */
export function processStartTicks(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

export interface LockOwner {
  pid: number;
  startTicks?: string;
}

export function readLock(file: string): LockOwner | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const [pid, ticks] = text.trim().split(/\s+/);
  const n = Number(pid);
  return Number.isInteger(n) && n > 0 ? { pid: n, startTicks: ticks || undefined } : undefined;
}

/** Whether the lock's owner still runs (same pid AND same start time: pids are reused). */
export function lockAlive(owner: LockOwner | undefined): boolean {
  if (!owner) return false;
  try {
    process.kill(owner.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const ticks = processStartTicks(owner.pid);
  return ticks === undefined || owner.startTicks === undefined || ticks === owner.startTicks;
}

/**
 * Take the worker lock of a spool side: create the pid file exclusively; a stale one (its process
 * gone) is removed once and taken over. False when a live worker holds it. The lock only saves
 * work: two workers at once would still be correct (pushes are idempotent and conflict-checked,
 * files appear by rename).
 */
export function takeLock(file: string): boolean {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = fs.openSync(file, 'wx', 0o600);
      fs.writeSync(fd, `${process.pid} ${processStartTicks(process.pid) ?? ''}\n`);
      fs.closeSync(fd);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const owner = readLock(file);
    if (lockAlive(owner)) return false;
    // Stale: remove it only if it still names the dead owner (another starter may have won meanwhile).
    const again = readLock(file);
    if (again && owner && again.pid !== owner.pid) return false;
    fs.rmSync(file, { force: true });
  }
  return false;
}

export function releaseLock(file: string): void {
  const owner = readLock(file);
  if (owner?.pid === process.pid) fs.rmSync(file, { force: true });
}

/** What the pusher writes to state.json after each pass. */
export interface PusherState {
  pid: number;
  startedAt: string;
  updatedAt: string;
  /** .ready files in pg_wal/archive_status at the last pass. */
  ready: number;
  /** Segments being pushed right now. */
  inFlight: number;
  /** ok files waiting for the archiver (pushed ahead, not yet .done). */
  pushedAhead: number;
  pushedTotal: number;
  lastPushed?: string;
  lastError?: string;
  lastErrorAt?: string;
}

export interface PusherReport {
  spool: string;
  alive: boolean;
  pid?: number;
  state?: PusherState;
  /** ok files now (segments pushed ahead that PostgreSQL has not yet been told about). */
  pushedAhead: number;
}

/** What `status` shows of a spool's pusher: alive or not, its last state, the ok files present. */
export async function readPusherReport(spool: string): Promise<PusherReport> {
  const owner = readLock(path.join(spool, 'push', 'pusher.pid'));
  let state: PusherState | undefined;
  try {
    state = JSON.parse(await fsp.readFile(path.join(spool, 'push', 'state.json'), 'utf8')) as PusherState;
  } catch {
    state = undefined;
  }
  let pushedAhead = 0;
  try {
    pushedAhead = (await fsp.readdir(okDir(spool))).filter((n) => !n.startsWith('.')).length;
  } catch {
    pushedAhead = 0;
  }
  return { spool, alive: lockAlive(owner), pid: owner?.pid, state, pushedAhead };
}

/** The spool an archive_command or restore_command names (`--spool DIR`), undone from its shell quoting. */
export function spoolFromCommand(command: string): string | undefined {
  const m = /--spool(?:=|\s+)('(?:[^']|'\\'')*'|"[^"]*"|\S+)/.exec(command);
  if (!m) return undefined;
  let v = m[1];
  if (v.startsWith("'")) v = v.slice(1, -1).replace(/'\\''/g, "'");
  else if (v.startsWith('"')) v = v.slice(1, -1);
  return v.replace(/%%/g, '%');
}
