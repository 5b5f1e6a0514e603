// OS users and running programs as them. PostgreSQL refuses to run as root, so when pgrunbook
// runs as root, server programs run as the owner of the data directory (usually `postgres`).
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { loadExeca } from './programs/execa-lazy.js';

export interface OsUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

export interface OsIds {
  uid: number;
  gid: number;
  /** Home directory, used for $HOME when known. */
  home?: string;
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

async function readPasswd(): Promise<OsUser[]> {
  let text: string;
  try {
    text = await readFile('/etc/passwd', 'utf8');
  } catch (e) {
    throw new Error(`could not read /etc/passwd to look up OS users: ${(e as Error).message}`);
  }
  const users: OsUser[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const f = line.split(':');
    if (f.length < 7) continue;
    const uid = Number(f[2]);
    const gid = Number(f[3]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid)) continue;
    users.push({ name: f[0], uid, gid, home: f[5] || '/' });
  }
  return users;
}

/** Look an OS user up in /etc/passwd. Throws a clear error when the user does not exist. */
export async function lookupUser(name: string): Promise<{ uid: number; gid: number; home: string }> {
  const u = (await readPasswd()).find((x) => x.name === name);
  if (!u) {
    throw new Error(
      `OS user "${name}" not found in /etc/passwd. ` +
        (name === 'postgres'
          ? 'Installing the PostgreSQL server package creates it (apt-get install -y postgresql), ' +
            'or create it: useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres.'
          : `Create it, or use an existing user.`),
    );
  }
  return { uid: u.uid, gid: u.gid, home: u.home };
}

/** Name of the user with this uid, if /etc/passwd knows it. */
export async function userNameOf(uid: number): Promise<string | undefined> {
  try {
    return (await readPasswd()).find((x) => x.uid === uid)?.name;
  } catch {
    return undefined;
  }
}

export async function ownerOf(p: string): Promise<{ uid: number; gid: number }> {
  const st = await stat(p);
  return { uid: st.uid, gid: st.gid };
}

/**
 * Whether `user` can traverse (search) every ancestor of `dir` and `dir` itself, judged from mode
 * bits (root only; supplementary groups are ignored, as when we run a program as that user).
 * Returns the first directory that blocks, or undefined.
 */
export async function firstUntraversableDir(dir: string, user: { uid: number; gid: number }): Promise<string | undefined> {
  const abs = path.resolve(dir);
  const chain: string[] = [];
  for (let d = abs; ; d = path.dirname(d)) {
    chain.unshift(d);
    if (path.dirname(d) === d) break;
  }
  for (const d of chain) {
    let st;
    try {
      st = await stat(d);
    } catch {
      return undefined; // does not exist (yet): the caller's mkdir/initdb will say so
    }
    const mode = st.mode;
    const ok =
      user.uid === 0 ||
      (st.uid === user.uid ? (mode & 0o100) !== 0 : st.gid === user.gid ? (mode & 0o010) !== 0 : (mode & 0o001) !== 0);
    if (!ok) return d;
  }
  return undefined;
}

export interface RunOptions {
  /** Run as this user (uid/gid) when we are root; ignored (runs as ourselves) otherwise. */
  as?: OsIds;
  /** Extra environment variables (the current environment is inherited unless `extendEnv` is false). */
  env?: Record<string, string | undefined>;
  /**
   * Inherit this process's environment (default true). False: the program gets only `env` (plus
   * HOME of the user it runs as) — how PostgreSQL servers are started (see serverEnvironment).
   */
  extendEnv?: boolean;
  /** Working directory. Default: the current one, or "/" when running as another user. */
  cwd?: string;
  /** Aborting kills the program (SIGTERM, then SIGKILL after 5 s). */
  signal?: AbortSignal;
  /** Kill the program after this many milliseconds. */
  timeoutMs?: number;
  /** Written to the program's stdin. */
  input?: string;
  /** Throw a CommandError when the program fails (non-zero exit, signal, spawn error). Default false. */
  reject?: boolean;
}

export interface RunResult {
  /** The command line, for messages (arguments are shown as given: do not pass secrets as arguments). */
  command: string;
  stdout: string;
  stderr: string;
  /** Exit code; undefined when the program was killed or could not start. */
  exitCode: number | undefined;
  /** Signal that terminated the program, if any. */
  signal: string | undefined;
  failed: boolean;
  timedOut: boolean;
  canceled: boolean;
  /** Why the program failed, one line, including stderr's last lines (empty when it did not fail). */
  failure: string;
}

export class CommandError extends Error {
  readonly result: RunResult;
  readonly stderr: string;
  readonly exitCode: number | undefined;
  constructor(result: RunResult) {
    super(result.failure);
    this.name = 'CommandError';
    this.result = result;
    this.stderr = result.stderr;
    this.exitCode = result.exitCode;
  }
}

function tailLines(text: string, n: number): string {
  const lines = text.trimEnd().split('\n');
  return lines.slice(-n).join('\n');
}

/**
 * Run a program (no shell) and collect its output. When we are root and `as` is given, the
 * program runs with that uid/gid (and $HOME), else as the current user. Never throws on failure
 * unless `reject: true`; the result's `failure` explains what went wrong, with stderr.
 */
export async function runCommand(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const switchUser = isRoot() && opts.as !== undefined && opts.as.uid !== 0;
  const env: Record<string, string | undefined> = { ...opts.env };
  if (switchUser && opts.as?.home && env.HOME === undefined) env.HOME = opts.as.home;
  else if (!switchUser && opts.extendEnv === false && env.HOME === undefined && process.env.HOME) env.HOME = process.env.HOME;
  const cwd = opts.cwd ?? (switchUser ? '/' : undefined);
  const command = [file, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');

  const { execa } = await loadExeca();
  const r = await execa(file, [...args], {
    reject: false,
    env,
    extendEnv: opts.extendEnv ?? true,
    cwd,
    ...(switchUser ? { uid: opts.as!.uid, gid: opts.as!.gid } : {}),
    ...(opts.signal ? { cancelSignal: opts.signal } : {}),
    ...(opts.timeoutMs ? { timeout: opts.timeoutMs } : {}),
    ...(opts.input !== undefined ? { input: opts.input } : { stdin: 'ignore' as const }),
    stripFinalNewline: true,
  });
  const stdout = typeof r.stdout === 'string' ? r.stdout : '';
  const stderr = typeof r.stderr === 'string' ? r.stderr : '';
  const res: RunResult = {
    command,
    stdout,
    stderr,
    exitCode: r.exitCode,
    signal: r.signal ?? undefined,
    failed: r.failed,
    timedOut: r.timedOut,
    canceled: r.isCanceled,
    failure: '',
  };
  if (r.failed) {
    const name = path.basename(file);
    let why: string;
    const code = (r as unknown as { code?: string }).code;
    if (r.isCanceled) why = 'was cancelled';
    else if (r.timedOut) why = `timed out after ${opts.timeoutMs} ms`;
    else if (code === 'ENOENT' && r.exitCode === undefined) why = `could not be started: ${file} does not exist`;
    else if (code === 'EACCES' && r.exitCode === undefined) why = `could not be started: permission denied on ${file}`;
    else if (r.exitCode !== undefined) why = `exited with code ${r.exitCode}`;
    else if (r.signal) why = `was killed by ${r.signal}`;
    else why = `failed: ${r.shortMessage ?? r.message}`;
    const detail = tailLines(stderr || stdout, 15);
    res.failure = `${name} ${why}${detail ? `: ${detail}` : ''} (command: ${command})`;
  }
  if (res.failed && opts.reject) throw new CommandError(res);
  return res;
}

/**
 * Run a program as the owner of `ownedPath` when we are root (PostgreSQL programs must not run as
 * root), or as ourselves otherwise. Throws a clear error when root owns the path.
 */
export async function runAsOwnerOf(
  ownedPath: string,
  file: string,
  args: readonly string[],
  opts: Omit<RunOptions, 'as'> = {},
): Promise<RunResult> {
  return runCommand(file, args, { ...opts, as: await runIdsFor(ownedPath) });
}

/**
 * The uid/gid (and home) to run PostgreSQL programs as for a data directory: its owner when we
 * are root, undefined (ourselves) otherwise. Throws a clear error when root owns it.
 */
export async function runIdsFor(ownedPath: string): Promise<OsIds | undefined> {
  if (!isRoot()) return undefined;
  let owner;
  try {
    owner = await ownerOf(ownedPath);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(
      code === 'ENOENT'
        ? `${ownedPath} does not exist.`
        : `could not inspect ${ownedPath}: ${(e as Error).message}`,
    );
  }
  if (owner.uid === 0) {
    throw new Error(
      `${ownedPath} is owned by root, and PostgreSQL refuses to run as root. ` +
        `Give it to the PostgreSQL OS user: chown -R postgres:postgres ${ownedPath}`,
    );
  }
  let home: string | undefined;
  const name = await userNameOf(owner.uid);
  if (name) home = (await lookupUser(name)).home;
  return { uid: owner.uid, gid: owner.gid, home };
}
