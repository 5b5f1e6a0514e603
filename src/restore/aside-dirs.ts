// Data directories a recovery moved aside (`<pgdata>.pgrunbook-<UTC time>`, see datadir.ts), and
// the staging directories pitr unpacks a backup into before it touches anything
// (`<pgdata>.pgrunbook-staged-<run id>`, unpack.ts): a run that stopped at its confirmation keeps
// its staging directory for --resume, a whole data directory and the WAL it checked. Found next to
// the data directory, with their origin and age, for status and for `retention --data-dirs`, which
// removes old ones. Never the live data directory, never one a server runs in (a live
// postmaster.pid), never a staging directory whose run still lives, never anything whose name is
// not ours.
import type fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export interface AsideDir {
  path: string;
  /** Its name, which the operator types to confirm removing it. */
  name: string;
  /** The data directory it was moved away from, or is staged for. */
  origin: string;
  /** When it was moved aside, or its run started (from its name). */
  movedAt: Date;
  /** A staging directory: the run that made it (for --resume). */
  stagedBy?: string;
  /** Why it must not be removed, when it must not. */
  inUse?: string;
}

const SUFFIX = /\.pgrunbook-(\d{8}T\d{6}Z)$/;
/** `<pgdata>.pgrunbook-staged-<procedure>-<UTC time>-<hex>` (run ids: journal.ts newRunId). */
const STAGED = /\.pgrunbook-staged-([A-Za-z0-9_-]+-(\d{8}T\d{6}Z)-[0-9a-f]+)$/;

function stampTime(s: string): Date | undefined {
  const d = new Date(`${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}T${s.slice(9, 11)}:${s.slice(11, 13)}:${s.slice(13, 15)}Z`);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

/** The time in an aside name ("20261201T031500Z"), or undefined when the name is not one. */
export function asideTime(name: string): Date | undefined {
  const m = SUFFIX.exec(name);
  return m ? stampTime(m[1]) : undefined;
}

/** The run id and start time in a staging directory's name, or undefined when the name is not one. */
export function stagedRun(name: string): { runId: string; startedAt: Date } | undefined {
  const m = STAGED.exec(name);
  const startedAt = m ? stampTime(m[2]) : undefined;
  return m && startedAt ? { runId: m[1], startedAt } : undefined;
}

/** The moved-aside directories of `pgdata`, oldest first. None when its parent cannot be read. */
export async function listAsideDirs(pgdata: string): Promise<AsideDir[]> {
  const origin = path.resolve(pgdata);
  const parent = path.dirname(origin);
  const prefix = `${path.basename(origin)}.pgrunbook-`;
  let names: string[];
  try {
    names = await fsp.readdir(parent);
  } catch {
    return [];
  }
  const out: AsideDir[] = [];
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const staged = stagedRun(name);
    const movedAt = staged?.startedAt ?? asideTime(name);
    const p = path.join(parent, name);
    if (!movedAt || !(await isRealDirectory(p))) continue;
    const dir: AsideDir = { path: p, name, origin, movedAt, ...(staged ? { stagedBy: staged.runId } : {}) };
    const inUse = await whyInUse(p, origin, staged?.runId);
    if (inUse) dir.inUse = inUse;
    out.push(dir);
  }
  return out.sort((a, b) => a.movedAt.getTime() - b.movedAt.getTime());
}

async function isRealDirectory(p: string): Promise<boolean> {
  try {
    return (await fsp.lstat(p)).isDirectory();
  } catch {
    return false;
  }
}

/** Why `dir` must not be removed: it is the live data directory, a server runs in it, or the run staging it (`stagedBy`) still lives. */
export async function whyInUse(dir: string, liveDataDir: string, stagedBy?: string): Promise<string | undefined> {
  const real = await fsp.realpath(dir).catch(() => path.resolve(dir));
  const live = await fsp.realpath(liveDataDir).catch(() => path.resolve(liveDataDir));
  if (real === live) return 'it is the live data directory';
  const pid = await postmasterPid(dir);
  if (pid !== undefined && processAlive(pid)) return `a server runs in it (postmaster.pid: process ${pid})`;
  if (stagedBy) {
    const runPid = await stagingRunPid(dir, stagedBy);
    if (runPid !== undefined && processAlive(runPid)) return `its run ${stagedBy} is still going (process ${runPid})`;
  }
  return undefined;
}

/** The process of the run that staged `dir`, from its marker (datadir.ts makeRestoreDir), when it ran on this host. */
async function stagingRunPid(dir: string, runId: string): Promise<number | undefined> {
  try {
    const [host, pidText] = (await fsp.readFile(path.join(dir, `.pgrunbook-restoring-${runId}`), 'utf8')).trim().split(' ');
    const pid = Number(pidText);
    return host === os.hostname() && Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function postmasterPid(dir: string): Promise<number | undefined> {
  try {
    const first = (await fsp.readFile(path.join(dir, 'postmaster.pid'), 'utf8')).split('\n')[0];
    const pid = Number(first);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Bytes under `dir` (files only; symbolic links are not followed). */
export async function directoryBytes(dir: string): Promise<number> {
  let total = 0;
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop()!;
    let entries: fs.Dirent[];
    try {
      entries = await fsp.readdir(d, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) stack.push(p);
      else if (e.isFile()) total += (await fsp.lstat(p).catch(() => undefined))?.size ?? 0;
    }
  }
  return total;
}

/**
 * Removes a moved-aside directory after checking again, just before, that it still is one: its
 * name is ours, it is a real directory next to `liveDataDir`, and it is not in use.
 */
export async function removeAsideDir(dir: string, liveDataDir: string): Promise<void> {
  const origin = path.resolve(liveDataDir);
  const name = path.basename(dir);
  const staged = stagedRun(name);
  if (path.dirname(path.resolve(dir)) !== path.dirname(origin) || !name.startsWith(`${path.basename(origin)}.pgrunbook-`) || !(staged || asideTime(name))) {
    throw new Error(`${dir} is not a data directory pgrunbook moved aside or staged next to ${origin}; it is left alone`);
  }
  if (!(await isRealDirectory(dir))) throw new Error(`${dir} is no longer a directory; it is left alone`);
  const inUse = await whyInUse(dir, origin, staged?.runId);
  if (inUse) throw new Error(`${dir} is not removed: ${inUse}`);
  await fsp.rm(dir, { recursive: true, force: false });
}

/** "3 d", "5 h", "12 min": an age in the largest whole unit. */
export function ageWords(ms: number): string {
  const min = Math.max(0, Math.floor(ms / 60_000));
  if (min < 120) return `${min} min`;
  const h = Math.floor(min / 60);
  if (h < 48) return `${h} h`;
  return `${Math.floor(h / 24)} d`;
}

/** One line per directory: "/x/data.pgrunbook-20261201T031500Z (from /x/data, moved aside 3 d ago)". */
export function describeAsideDir(d: AsideDir, now: Date): string {
  const age = ageWords(now.getTime() - d.movedAt.getTime());
  const what = d.stagedBy ? `a backup unpacked for ${d.origin} by run ${d.stagedBy}, kept for --resume ${d.stagedBy}; started ${age} ago` : `from ${d.origin}, moved aside ${age} ago`;
  return `${d.path} (${what}${d.inUse ? `; in use: ${d.inUse}` : ''})`;
}
