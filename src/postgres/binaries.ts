// Finding PostgreSQL programs (initdb, pg_ctl, pg_dump, ...) on this machine.
//
// Search order: $PGRUNBOOK_PG_BINDIR, then PATH, then `pg_config --bindir`, then
// /usr/lib/postgresql/<major>/bin (highest major first, the Debian/Ubuntu layout).
import { constants as fsConstants } from 'node:fs';
import { access, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { execFile } from 'node:child_process';

export const PG_BINDIR_ENV = 'PGRUNBOOK_PG_BINDIR';
const DEBIAN_LIB_DIR = '/usr/lib/postgresql';

/** Programs shipped by the server package (Debian: postgresql-NN); the rest are client tools. */
const SERVER_PROGRAMS = new Set([
  'initdb',
  'pg_ctl',
  'postgres',
  'postmaster',
  'pg_controldata',
  'pg_resetwal',
  'pg_rewind',
  'pg_archivecleanup',
  'pg_checksums',
  'pg_upgrade',
  'pg_waldump',
  'pg_test_fsync',
  'pg_test_timing',
]);

export class PgBinaryNotFoundError extends Error {
  readonly binary: string;
  constructor(name: string, looked: string[]) {
    const server = SERVER_PROGRAMS.has(name);
    const what = server
      ? 'Install the PostgreSQL server: apt-get install -y postgresql (Debian/Ubuntu)'
      : 'Install the PostgreSQL client tools: apt-get install -y postgresql-client (Debian/Ubuntu)';
    super(
      `${name} not found (looked in ${looked.join(', ')}). ${what}, ` +
        `or set ${PG_BINDIR_ENV} to the directory holding ${name}.`,
    );
    this.name = 'PgBinaryNotFoundError';
    this.binary = name;
  }
}

async function isExecutableFile(p: string): Promise<boolean> {
  try {
    const st = await stat(p);
    if (!st.isFile()) return false;
    await access(p, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function searchPath(name: string): Promise<string | undefined> {
  const dirs = (process.env.PATH ?? '').split(path.delimiter).filter(Boolean);
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    if (await isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

let pgConfigBinDir: Promise<string | undefined> | undefined;

async function bindirFromPgConfig(): Promise<string | undefined> {
  pgConfigBinDir ??= (async () => {
    const pgConfig = await searchPath('pg_config');
    if (!pgConfig) return undefined;
    try {
      const r = await runQuick(pgConfig, ['--bindir']);
      const dir = r.exitCode === 0 ? String(r.stdout).trim() : '';
      return dir || undefined;
    } catch {
      return undefined;
    }
  })();
  return pgConfigBinDir;
}

/** /usr/lib/postgresql/<major>/bin directories, highest major version first. */
async function debianBinDirs(): Promise<string[]> {
  let entries: string[];
  try {
    entries = await readdir(DEBIAN_LIB_DIR);
  } catch {
    return [];
  }
  return entries
    .filter((e) => /^\d+(\.\d+)?$/.test(e))
    .sort((a, b) => parseFloat(b) - parseFloat(a))
    .map((e) => path.join(DEBIAN_LIB_DIR, e, 'bin'));
}

const cache = new Map<string, Promise<string>>();

/** Forget cached look-ups (for tests, or after installing PostgreSQL in-process). */
export function clearPgBinaryCache(): void {
  cache.clear();
  pgConfigBinDir = undefined;
}

async function locate(name: string): Promise<string> {
  const looked: string[] = [];
  const envDir = process.env[PG_BINDIR_ENV];
  if (envDir) {
    looked.push(`${PG_BINDIR_ENV}=${envDir}`);
    const candidate = path.join(envDir, name);
    if (await isExecutableFile(candidate)) return candidate;
  }
  looked.push('PATH');
  const inPath = await searchPath(name);
  if (inPath) return inPath;

  looked.push('pg_config --bindir');
  const cfgDir = await bindirFromPgConfig();
  if (cfgDir) {
    const candidate = path.join(cfgDir, name);
    if (await isExecutableFile(candidate)) return candidate;
  }

  looked.push(`${DEBIAN_LIB_DIR}/*/bin`);
  for (const dir of await debianBinDirs()) {
    const candidate = path.join(dir, name);
    if (await isExecutableFile(candidate)) return candidate;
  }
  throw new PgBinaryNotFoundError(name, looked);
}

/**
 * Absolute path of a PostgreSQL program. Successful look-ups are cached (per name, PATH and
 * $PGRUNBOOK_PG_BINDIR); failures are not, so installing PostgreSQL later is noticed.
 * Throws PgBinaryNotFoundError, whose message says what to install.
 */
export async function findPgBinary(name: string): Promise<string> {
  if (!name || name.includes('/')) {
    throw new Error(`findPgBinary: expected a program name such as "initdb", got "${name}"`);
  }
  const key = `${name}\0${process.env[PG_BINDIR_ENV] ?? ''}\0${process.env.PATH ?? ''}`;
  let found = cache.get(key);
  if (!found) {
    found = locate(name);
    cache.set(key, found);
    found.catch(() => cache.delete(key));
  }
  return found;
}

export interface PgBinaryVersion {
  /** Major version: 15 for "15.4"; for pre-10 releases, e.g. 9.6. */
  major: number;
  /** Full version number as printed, e.g. "15.4". */
  full: string;
  /** The program the version was read from. */
  path: string;
}

const versionCache = new Map<string, Promise<PgBinaryVersion>>();

/** Parse "initdb (PostgreSQL) 15.4 (Debian 15.4-1)" into {major: 15, full: "15.4"}. */
export function parsePgVersionOutput(output: string): { major: number; full: string } | undefined {
  const m = /\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?(?:\.(\d+))?([a-z0-9]*)/i.exec(output);
  if (!m) return undefined;
  const first = Number(m[1]);
  const major = first >= 10 ? first : Number(`${m[1]}.${m[2] ?? 0}`);
  const full = [m[1], m[2], m[3]].filter((x) => x !== undefined).join('.') + (m[4] ?? '');
  return { major, full };
}

/** Version of a PostgreSQL program (`NAME --version`), found with findPgBinary unless a path is given. */
export async function pgBinaryVersion(name: string): Promise<PgBinaryVersion> {
  const bin = name.includes('/') ? name : await findPgBinary(name);
  let v = versionCache.get(bin);
  if (!v) {
    v = (async () => {
      const r = await runQuick(bin, ['--version']);
      const out = `${r.stdout ?? ''}\n${r.stderr ?? ''}`;
      const parsed = parsePgVersionOutput(out);
      if (r.exitCode !== 0 || !parsed) {
        throw new Error(
          `could not read the version of ${bin} (\`${bin} --version\` ` +
            `${r.exitCode === 0 ? `printed "${out.trim()}"` : `failed: ${(r.stderr || r.message || '').toString().trim()}`}).`,
        );
      }
      return { ...parsed, path: bin };
    })();
    versionCache.set(bin, v);
    v.catch(() => versionCache.delete(bin));
  }
  return v;
}

/** A short program's output (10 s at most); a failure is a result: exitCode undefined or non-zero, with the message. */
function runQuick(file: string, args: string[]): Promise<{ exitCode?: number; stdout: string; stderr: string; message?: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 10_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = (err as NodeJS.ErrnoException & { code?: unknown } | null)?.code;
      resolve({ exitCode: err ? (typeof code === 'number' ? code : undefined) : 0, stdout, stderr, message: err?.message });
    });
  });
}
