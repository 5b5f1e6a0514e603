// What killed runs leave behind in a local repository: the driver's hidden temp files
// (`.pgrunbook-tmp-<random>`, written during a put and renamed into place at its end; a crash or
// a kill -9 leaves them) and directories left empty. Retention removes those older than a day,
// by the real clock, never anything under `locks/`, never the repository's root.
//
// S3 and Azure have neither (an upload is invisible until complete; there are no directories):
// for them nothing is found.
import { lstat, readdir, rmdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { LocalStore } from '../storage/local.js';
import { RESERVED_NAME_PREFIX, type ObjectStore } from '../storage/types.js';
import { BASEBACKUP_PREFIX, DUMP_PREFIX, LOCK_PREFIX, VERIFY_PREFIX, WAL_PREFIX } from './layout.js';

export const TEMP_FILE_PREFIX = `${RESERVED_NAME_PREFIX}tmp-`;
export const DEBRIS_MIN_AGE_MS = 24 * 3_600_000;
/** Top-level prefixes retention never touches (lock files and their directory). */
export const PROTECTED_PREFIXES = [LOCK_PREFIX];
/** Empty directories are removed only below these (never a top-level directory: the volume's
 *  lost+found, or anything else that is not the repository's, stays). */
export const CLEANABLE_DIRECTORY_PREFIXES = [BASEBACKUP_PREFIX, DUMP_PREFIX, WAL_PREFIX, VERIFY_PREFIX];

function isCleanableDirectory(rel: string): boolean {
  return CLEANABLE_DIRECTORY_PREFIXES.some((p) => rel.startsWith(p) && rel.length > p.length);
}

export interface DebrisItem {
  /** Relative to the repository root, '/'-separated; directories end with '/'. */
  path: string;
  kind: 'temp-file' | 'empty-directory';
  bytes: number;
  /** Last modified (ISO). */
  modified: string;
}

export interface DebrisScan {
  /** False for stores that cannot hold such debris (S3, Azure). */
  supported: boolean;
  items: DebrisItem[];
  /** Temp files and empty directories younger than the minimum age: kept (an upload may be writing them). */
  young: { tempFiles: number; emptyDirectories: number };
}

function isProtected(rel: string): boolean {
  return PROTECTED_PREFIXES.some((p) => rel === p.slice(0, -1) || rel.startsWith(p));
}

/**
 * Temp files and empty directories older than `minAgeMs` by `clock` (the real clock: an injected
 * "now" must never make a running upload look abandoned). A directory counts as empty when all
 * it holds is debris that goes too; deepest first in the result, so removing in order works.
 */
export async function findDebris(store: ObjectStore, opts: { clock?: Date; minAgeMs?: number } = {}): Promise<DebrisScan> {
  const scan: DebrisScan = { supported: false, items: [], young: { tempFiles: 0, emptyDirectories: 0 } };
  if (!(store instanceof LocalStore)) return scan;
  scan.supported = true;
  const clock = (opts.clock ?? new Date()).getTime();
  const minAge = opts.minAgeMs ?? DEBRIS_MIN_AGE_MS;
  const old = (mtime: Date) => clock - mtime.getTime() >= minAge;

  /** Returns whether `dir` (relative `rel`, '' for the root) would be empty once its debris is gone. */
  async function walk(dir: string, rel: string): Promise<boolean> {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return false;
      throw err;
    }
    let allGoes = true;
    for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const childRel = rel ? `${rel}/${e.name}` : e.name;
      const path = join(dir, e.name);
      if (isProtected(childRel)) {
        allGoes = false;
        continue;
      }
      if (e.isDirectory()) {
        const goes = await walk(path, childRel);
        if (!goes || !isCleanableDirectory(childRel)) {
          allGoes = false;
          continue;
        }
        let st;
        try {
          st = await lstat(path);
        } catch {
          allGoes = false;
          continue;
        }
        if (old(st.mtime)) {
          scan.items.push({ path: `${childRel}/`, kind: 'empty-directory', bytes: 0, modified: st.mtime.toISOString() });
        } else {
          scan.young.emptyDirectories++;
          allGoes = false;
        }
        continue;
      }
      if (e.isFile() && e.name.startsWith(TEMP_FILE_PREFIX)) {
        let st;
        try {
          st = await lstat(path);
        } catch {
          continue; // renamed into place or removed meanwhile
        }
        if (old(st.mtime)) {
          scan.items.push({ path: childRel, kind: 'temp-file', bytes: st.size, modified: st.mtime.toISOString() });
        } else {
          scan.young.tempFiles++;
          allGoes = false;
        }
        continue;
      }
      allGoes = false;
    }
    return allGoes;
  }
  await walk(store.root, '');
  // Files before directories, deeper directories before their parents.
  scan.items.sort((a, b) => (a.kind === b.kind ? (a.kind === 'empty-directory' ? b.path.split('/').length - a.path.split('/').length || a.path.localeCompare(b.path) : a.path.localeCompare(b.path)) : a.kind === 'temp-file' ? -1 : 1));
  return scan;
}

export interface DebrisRemoval {
  removed: DebrisItem[];
  /** Left alone, with why (changed since the plan: written to again, no longer empty). */
  kept: { item: DebrisItem; why: string }[];
}

/**
 * Removes what `findDebris` found, checking each item again just before: still there, still a
 * temp file or an empty directory, still older than the minimum age, not protected.
 */
export async function removeDebris(store: ObjectStore, items: DebrisItem[], opts: { clock?: Date; minAgeMs?: number; signal?: AbortSignal } = {}): Promise<DebrisRemoval> {
  const out: DebrisRemoval = { removed: [], kept: [] };
  if (!(store instanceof LocalStore)) return out;
  const minAge = opts.minAgeMs ?? DEBRIS_MIN_AGE_MS;
  const ordered = [...items].sort((a, b) => (a.kind === b.kind ? (a.kind === 'empty-directory' ? b.path.split('/').length - a.path.split('/').length : 0) : a.kind === 'temp-file' ? -1 : 1));
  for (const item of ordered) {
    opts.signal?.throwIfAborted();
    const rel = item.path.replace(/\/$/, '');
    const segments = rel.split('/');
    if (!rel || segments.some((s) => s === '' || s === '.' || s === '..') || isProtected(rel) || (item.kind === 'empty-directory' && !isCleanableDirectory(rel))) {
      out.kept.push({ item, why: 'not a path retention may touch' });
      continue;
    }
    const path = join(store.root, ...segments);
    let st;
    try {
      st = await lstat(path);
    } catch {
      out.kept.push({ item, why: 'already gone' });
      continue;
    }
    const clock = (opts.clock ?? new Date()).getTime();
    // A directory's own time changes when the debris in it goes; rmdir below refuses one that is not empty.
    if (item.kind === 'temp-file' && clock - st.mtime.getTime() < minAge) {
      out.kept.push({ item, why: 'written to since the plan (younger than a day now)' });
      continue;
    }
    try {
      if (item.kind === 'temp-file') {
        if (!st.isFile() || !segments[segments.length - 1].startsWith(TEMP_FILE_PREFIX)) {
          out.kept.push({ item, why: 'no longer a temp file' });
          continue;
        }
        await unlink(path);
      } else {
        if (!st.isDirectory()) {
          out.kept.push({ item, why: 'no longer a directory' });
          continue;
        }
        await rmdir(path); // fails unless empty: a put that started meanwhile wins
      }
      out.removed.push(item);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EEXIST') out.kept.push({ item, why: 'no longer empty' });
      else if (code === 'ENOENT') out.kept.push({ item, why: 'already gone' });
      else throw new Error(`cannot remove ${item.path} from ${store.describe()}: ${(err as Error).message}`);
    }
  }
  return out;
}
