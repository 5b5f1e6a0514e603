// The command lines PostgreSQL itself runs (archive_command, restore_command): this
// installation's pgrunbook, by absolute path because the server's PATH is not ours. The server
// starts with a clean environment (src/postgres/server-env.ts), so what these commands need for
// the repository (its credentials) is written to a 0600 file owned by the server's OS user and
// named on the command line: `pgrunbook wal-push --env-file FILE --repo URL %p`.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { shellQuote } from '../engine/runner.js';
import { formatEnvFile, parseEnvFile } from '../wal/env-file.js';

export function pgrunbookOnPath(env: NodeJS.ProcessEnv): string | undefined {
  for (const dir of (env.PATH ?? '').split(path.delimiter).filter(Boolean)) {
    const candidate = path.join(dir, 'pgrunbook');
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // next
    }
  }
  return undefined;
}

/** dist/cli.js of this installation (this module is dist/procedures/pgrunbook-command.js). */
export function cliScriptPath(): string {
  const here = fileURLToPath(import.meta.url);
  const sibling = path.resolve(path.dirname(here), '..', 'cli.js');
  if (fs.existsSync(sibling)) return sibling;
  // Running from the TypeScript sources (tests, tsx): the built CLI of the same checkout.
  return path.resolve(path.dirname(here), '..', '..', 'dist', 'cli.js');
}

/**
 * While a pusher runs (its pid file exists), archive_command waits in the shell for the segment's
 * ok file, 1 s at most, before starting node: in a backlog the archiver asks for the segment the
 * pusher is pushing right now, and a node start (~100 ms of CPU) per segment took the CPU the
 * pusher needed (bench/wal-backlog.ts). A stale pid file (a killed pusher) costs that second once;
 * then wal-push starts a new pusher.
 */
const PUSH_WAIT_STEPS = Array.from({ length: 20 }, (_, i) => i + 1).join(' ');
const PUSH_WAIT_STEP_SEC = '0.05';
/**
 * restore_command, the same for a segment the prefetcher is fetching right now (a marker file in
 * SPOOL/fetch/inflight/ while it does): up to 2 s, ending as soon as the marker goes. Segments
 * nobody fetches (the end of the archive, timeline history probes) never wait.
 */
const FETCH_WAIT_STEPS = Array.from({ length: 40 }, (_, i) => i + 1).join(' ');

/** PostgreSQL expands %p, %f and %% in archive_command and restore_command: a literal % must be doubled. */
export function percentEscape(text: string): string {
  return text.replace(/%/g, '%%');
}

/**
 * `pgrunbook wal-push [--env-file FILE] --repo URL %p` or `pgrunbook wal-fetch [--env-file FILE]
 * --repo URL %f %p`, with the absolute path of a `pgrunbook` on PATH, else this installation's
 * node and dist/cli.js. The command line carries only the env file's path, never its contents.
 *
 * With a spool (asynchronous mode) a shell fast path comes first, because archive_command and
 * restore_command run under /bin/sh and a node start costs tens of milliseconds:
 *   archive_command: `test SPOOL/push/ok/%f -nt %p || { test -e SPOOL/push/pusher.pid && for i in
 *     1 .. 20; do sleep 0.05; test SPOOL/push/ok/%f -nt %p && exit 0; done; exec pgrunbook wal-push
 *     --spool SPOOL ... %p; }` (the ok file appears by rename only after the store said durable,
 *     and is newer than the segment it vouches for; an older one, e.g. left from another server,
 *     sends it the slow way, which checks the checksum inside)
 *   restore_command: `mv SPOOL/fetch/%f %p 2>/dev/null || { test -e SPOOL/fetch/inflight/%f && for
 *     i in 1 .. 40; do sleep 0.05; mv SPOOL/fetch/%f %p 2>/dev/null && exit 0; test -e
 *     SPOOL/fetch/inflight/%f || break; done; exec pgrunbook wal-fetch --spool SPOOL ... %f %p; }`
 *     (a file enters SPOOL/fetch/ only by rename after it was verified)
 */
export function walCommandLine(
  sub: 'wal-push' | 'wal-fetch',
  repo: string,
  env: NodeJS.ProcessEnv,
  opts: { envFile?: string; spool?: string } = {},
): { command: string; program: { node?: string; script: string } } {
  const arg = (v: string) => percentEscape(shellQuote(v));
  const tail = sub === 'wal-push' ? '%p' : '%f %p';
  const envFile = (opts.envFile ? ` --env-file ${arg(path.resolve(opts.envFile))}` : '') + repoKeyFileArg(env, arg);
  const spool = opts.spool ? path.resolve(opts.spool) : undefined;
  const spoolArg = spool ? ` --spool ${arg(spool)}` : '';
  const ok = spool ? `${arg(path.join(spool, 'push', 'ok'))}/%f` : '';
  const fetched = spool ? `${arg(path.join(spool, 'fetch'))}/%f` : '';
  const fast = !spool
    ? ''
    : sub === 'wal-push'
      ? `test ${ok} -nt %p || { test -e ${arg(path.join(spool, 'push', 'pusher.pid'))} && for i in ${PUSH_WAIT_STEPS}; do sleep ${PUSH_WAIT_STEP_SEC}; test ${ok} -nt %p && exit 0; done; exec `
      : `mv ${fetched} %p 2>/dev/null || { test -e ${arg(path.join(spool, 'fetch', 'inflight'))}/%f && for i in ${FETCH_WAIT_STEPS}; do sleep ${PUSH_WAIT_STEP_SEC}; mv ${fetched} %p 2>/dev/null && exit 0; test -e ${arg(path.join(spool, 'fetch', 'inflight'))}/%f || break; done; exec `;
  const close = spool ? '; }' : '';
  const onPath = pgrunbookOnPath(env);
  if (onPath) return { command: `${fast}${arg(onPath)} ${sub}${envFile}${spoolArg} --repo ${arg(repo)} ${tail}${close}`, program: { script: onPath } };
  const script = cliScriptPath();
  return {
    command: `${fast}${arg(process.execPath)} ${arg(script)} ${sub}${envFile}${spoolArg} --repo ${arg(repo)} ${tail}${close}`,
    program: { node: process.execPath, script },
  };
}

/**
 * ` --repo-key-file FILE` for an encrypted repository's key, '' without one. The server runs these
 * commands, and a setting is visible to anyone who can read the configuration: only the file's path
 * goes there, never the passphrase. A passphrase given only as PGRUNBOOK_REPO_KEY is refused.
 */
function repoKeyFileArg(env: NodeJS.ProcessEnv, arg: (v: string) => string): string {
  const file = env.PGRUNBOOK_REPO_KEY_FILE;
  if (file) return ` --repo-key-file ${arg(path.resolve(file))}`;
  if (env.PGRUNBOOK_REPO_KEY) {
    throw Object.assign(
      new Error('the repository key is given as PGRUNBOOK_REPO_KEY, which PostgreSQL\'s archive_command/restore_command must never carry; nothing was changed'),
      {
        hint: 'put the passphrase in a file owned by the server\'s OS user (e.g. postgres), mode 0600, and pass --repo-key-file FILE instead of PGRUNBOOK_REPO_KEY',
        procedureExitCode: 2,
      },
    );
  }
  return '';
}

/**
 * Where wal-archiving and pitr put the spool of asynchronous archiving by default: next to the
 * data directory (the server's OS user owns that parent), never inside it:
 * <parent>/pgrunbook-<cluster>.spool.
 */
export function defaultSpoolDir(pgdata: string, clusterName?: string): string {
  return defaultServerEnvFile(pgdata, clusterName).replace(/\.env$/, '.spool');
}

/** What the repository URL names: file (a local directory), s3 or azure. */
export function repoKind(repoUrl: string): 'file' | 's3' | 'azure' {
  if (/^s3:/i.test(repoUrl.trim())) return 's3';
  if (/^azure:/i.test(repoUrl.trim())) return 'azure';
  return 'file';
}

/**
 * The variables archive_command / restore_command need for this repository, from `env`: AWS_*
 * for s3://, AZURE_STORAGE_* for azure://, plus PGRUNBOOK_WAL_COMPRESS* when set. Undefined for
 * file:// and when `env` holds none of the repository kind's variables (the server then finds
 * credentials on its own, e.g. an instance role).
 */
export function serverEnvFileVars(repoUrl: string, env: NodeJS.ProcessEnv): Record<string, string> | undefined {
  const kind = repoKind(repoUrl);
  if (kind === 'file') return undefined;
  const prefix = kind === 's3' ? 'AWS_' : 'AZURE_STORAGE_';
  const out: Record<string, string> = {};
  let credentials = 0;
  for (const k of Object.keys(env).sort()) {
    const v = env[k];
    if (!v) continue;
    if (k.startsWith(prefix)) {
      out[k] = v;
      credentials++;
    } else if (k.startsWith('PGRUNBOOK_WAL_COMPRESS')) out[k] = v;
  }
  return credentials ? out : undefined;
}

/** Values among these variables that are secrets (to mask in output and journals). */
export function secretValues(vars: Record<string, string> | undefined): string[] {
  if (!vars) return [];
  return Object.entries(vars)
    .filter(([k]) => /SECRET|KEY|TOKEN|PASSWORD|CONNECTION_STRING|SAS/.test(k))
    .map(([, v]) => v)
    .filter((v) => v.length >= 4);
}

/**
 * Where wal-archiving puts the server's env file by default: next to the data directory, not in it
 * (base backups copy the data directory into the repository): <parent>/pgrunbook-<cluster>.env,
 * with the cluster_name (or the data directory's name) made file-name safe.
 */
export function defaultServerEnvFile(pgdata: string, clusterName?: string): string {
  const abs = path.resolve(pgdata);
  const name = (clusterName || path.basename(abs)).replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[-.]+|-+$/g, '') || 'cluster';
  return path.join(path.dirname(abs), `pgrunbook-${name}.env`);
}

function envFileText(repoUrl: string, vars: Record<string, string>): string {
  return formatEnvFile(
    vars,
    `Credentials for pgrunbook wal-push / wal-fetch --env-file (repository ${repoUrl.replace(/\?.*$/, '')}).\n` +
      'Written by pgrunbook --procedure wal-archiving; keep it mode 0600, owned by the server\'s OS user.',
  );
}

/**
 * Whether the env file already holds exactly what writeServerEnvFile would write, with mode 0600
 * and the given owner: 'not-needed' (the repository needs no file), 'missing', 'stale' or 'current'.
 */
export async function serverEnvFileStatus(
  file: string,
  repoUrl: string,
  env: NodeJS.ProcessEnv,
  owner?: { uid: number; gid: number },
): Promise<'not-needed' | 'missing' | 'stale' | 'current'> {
  const vars = serverEnvFileVars(repoUrl, env);
  if (!vars) return 'not-needed';
  let st: fs.Stats;
  let text: string;
  try {
    st = await fsp.stat(file);
    text = await fsp.readFile(file, 'utf8');
  } catch {
    return 'missing';
  }
  if ((st.mode & 0o777) !== 0o600 || (owner && (st.uid !== owner.uid || st.gid !== owner.gid))) return 'stale';
  let current: Record<string, string>;
  try {
    current = parseEnvFile(text, file);
  } catch {
    return 'stale';
  }
  const same = Object.keys(current).length === Object.keys(vars).length && Object.entries(vars).every(([k, v]) => current[k] === v);
  return same ? 'current' : 'stale';
}

/**
 * Write the variables the repository needs (serverEnvFileVars) to `file`: mode 0600, owned by
 * `owner` (the server's OS user; needs root unless that is us), replaced atomically. Returns the
 * file's absolute path, or undefined (nothing written) when the repository needs no credentials.
 */
export async function writeServerEnvFile(
  file: string,
  repoUrl: string,
  env: NodeJS.ProcessEnv,
  owner?: { uid: number; gid: number },
): Promise<string | undefined> {
  const vars = serverEnvFileVars(repoUrl, env);
  if (!vars) return undefined;
  const abs = path.resolve(file);
  const text = envFileText(repoUrl, vars);
  const tmp = path.join(path.dirname(abs), `.${path.basename(abs)}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await fsp.open(tmp, 'wx', 0o600);
  try {
    try {
      await fh.chmod(0o600);
      if (owner && (owner.uid !== process.getuid?.() || owner.gid !== process.getgid?.())) await fh.chown(owner.uid, owner.gid);
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, abs);
  } catch (e) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw new Error(`could not write the server's env file ${abs}: ${(e as Error).message}`);
  }
  return abs;
}
