// What the CLI and TUI hand to procedures: the resolved connection, the profile, and
// paths. Procedures build their own adapters (pg, storage) from these.
import path from 'node:path';
import { parseConnectionString, resolveConnection, type ConnectionSettings } from '../config/connection.js';
import type { RawFlags } from '../engine/params.js';
import type { Profile } from '../config/profile.js';
import { UsageError, type Params, type Procedure, type RunContext } from '../engine/types.js';

export interface ProcedureServices {
  connection: ConnectionSettings;
  profile: Profile;
  profileName?: string;
  pgdata?: string;
  repo?: string;
  env: NodeJS.ProcessEnv;
}


/** Profile settings that double as procedure params (databases, server log), as defaults. */
export function profileDefaults(procedure: Procedure, profile: Profile | undefined): Params {
  const out: Params = {};
  if (!profile) return out;
  const has = (n: string) => procedure.params.some((p) => p.name === n);
  if (has('databases') && profile.databases?.length) out.databases = profile.databases;
  if (has('serverLog') && profile.serverLog) out.serverLog = profile.serverLog;
  return out;
}

/** The run being resumed: its id, procedure and the context its journal recorded. */
export interface ResumeTarget {
  runId: string;
  procedure: string;
  context: RunContext;
}

/**
 * Connection, data directory and repository: flags over environment variables over the profile.
 * When resuming, the journaled run's host, port, data directory and repository are used, and a
 * flag or environment variable naming a different one is refused (UsageError): a resume must
 * continue against what the run started on.
 */
export function buildServices(flags: RawFlags, env: NodeJS.ProcessEnv, profile: Profile, profileName?: string, resume?: ResumeTarget): ProcedureServices {
  const str = (k: string) => (flags[k] === undefined ? undefined : String(Array.isArray(flags[k]) ? (flags[k] as string[]).at(-1) : flags[k]));
  const given = { host: str('host'), port: str('port'), user: str('user'), dbname: str('dbname') };
  if (!resume) {
    const connection = resolveConnection(given, env, profile.connection);
    const pgdata = str('pgdata') ?? (env.PGDATA || undefined) ?? profile.pgdata;
    const repo = str('repo') ?? (env.PGRUNBOOK_REPO || undefined) ?? profile.repo;
    return { connection, profile, profileName, pgdata, repo, env: withKeyFile(str, env, profile) };
  }

  const j = resume.context;
  const conflicts = resumeConflicts(str, env, resume);
  if (conflicts.length) {
    throw new UsageError(
      `${conflicts.join('\n')}\nA resume continues run ${resume.runId} where it stopped, against the same server, data directory and repository: drop the flag (or unset the variable), or start a new run with: pgrunbook --procedure ${resume.procedure} ...`,
    );
  }
  const jc = j.connection ?? {};
  const fromJournal: ConnectionSettings = {};
  if (jc.host !== undefined) fromJournal.host = jc.host;
  if (jc.port !== undefined) fromJournal.port = jc.port;
  if (jc.user !== undefined) fromJournal.user = jc.user;
  if (jc.dbname !== undefined) fromJournal.database = jc.dbname;
  if (jc.sslmode !== undefined) fromJournal.sslmode = jc.sslmode;
  // The journal stands where the profile would: flags and PG* variables given now still win
  // for the user and database (host and port were checked above to be the journal's).
  const connection = resolveConnection(given, env, { ...profile.connection, ...fromJournal });
  const pgdata = str('pgdata') ?? (env.PGDATA || undefined) ?? j.pgdata ?? profile.pgdata;
  const explicitRepo = str('repo') ?? (env.PGRUNBOOK_REPO || undefined);
  let repo = explicitRepo ?? profile.repo;
  if (!explicitRepo && j.repo !== undefined) {
    // The journal's URL lost its credentials; the profile's copy of the same URL still has them.
    repo = profile.repo !== undefined && repoWithoutCredentials(profile.repo).url === j.repo ? profile.repo : j.repo;
  }
  return { connection, profile, profileName, pgdata, repo, env: withKeyFile(str, env, profile) };
}

/**
 * --repo-key-file, else PGRUNBOOK_REPO_KEY_FILE, else the profile's: handed to the repository code
 * (src/repo/encryption.ts) as PGRUNBOOK_REPO_KEY_FILE in the run's environment, absolute. Only the
 * path travels; the passphrase is read where a repository is opened.
 */
function withKeyFile(str: (k: string) => string | undefined, env: NodeJS.ProcessEnv, profile: Profile): NodeJS.ProcessEnv {
  const file = str('repo-key-file') ?? (env.PGRUNBOOK_REPO_KEY_FILE || undefined) ?? (env.PGRUNBOOK_REPO_KEY ? undefined : profile.repoKeyFile);
  if (!file) return env;
  const abs = path.resolve(file);
  return abs === env.PGRUNBOOK_REPO_KEY_FILE ? env : { ...env, PGRUNBOOK_REPO_KEY_FILE: abs };
}

/** Flags or environment variables that name another host, port, data directory or repository than the run used. */
function resumeConflicts(str: (k: string) => string | undefined, env: NodeJS.ProcessEnv, resume: ResumeTarget): string[] {
  const j = resume.context;
  const out: string[] = [];
  let fromDbname: ConnectionSettings = {};
  const dbname = str('dbname');
  if (dbname) {
    try {
      fromDbname = parseConnectionString(dbname);
    } catch {
      // resolveConnection reports a bad connection string with its own message.
    }
  }
  const explain = (source: string, value: string, what: string, journaled: string) =>
    `${source}${source.startsWith('-') ? ' ' : '='}${value} differs from the ${what} run ${resume.runId} used, ${journaled}.`;

  const host: [string, string] | undefined = str('host') !== undefined ? ['--host', str('host')!] : fromDbname.host ? ['--dbname host', fromDbname.host] : env.PGHOST ? ['PGHOST', env.PGHOST] : undefined;
  if (host && j.connection?.host !== undefined && host[1] !== j.connection.host) out.push(explain(host[0], host[1], 'server host', j.connection.host));

  const port: [string, string] | undefined = str('port') !== undefined ? ['--port', str('port')!] : fromDbname.port ? ['--dbname port', String(fromDbname.port)] : env.PGPORT ? ['PGPORT', env.PGPORT] : undefined;
  if (port && j.connection?.port !== undefined && Number(port[1]) !== j.connection.port) out.push(explain(port[0], port[1], 'server port', String(j.connection.port)));

  const pgdata: [string, string] | undefined = str('pgdata') !== undefined ? ['--pgdata', str('pgdata')!] : env.PGDATA ? ['PGDATA', env.PGDATA] : undefined;
  if (pgdata && j.pgdata !== undefined && path.resolve(pgdata[1]) !== j.pgdata) out.push(explain(pgdata[0], pgdata[1], 'data directory', j.pgdata));

  const repo: [string, string] | undefined = str('repo') !== undefined ? ['--repo', str('repo')!] : env.PGRUNBOOK_REPO ? ['PGRUNBOOK_REPO', env.PGRUNBOOK_REPO] : undefined;
  if (repo && j.repo !== undefined) {
    const bare = repoWithoutCredentials(repo[1]).url;
    if (bare !== j.repo) out.push(explain(repo[0], bare, 'repository', j.repo));
  }
  return out;
}

// Query parameters of a repository URL that carry credentials (src/storage/url.ts): never journaled.
const REPO_CREDENTIAL_PARAMS = new Set(['accesskeyid', 'secretaccesskey', 'sessiontoken', 'accountkey', 'sas', 'sig', 'token', 'password', 'secret']);

/** The repository URL without credentials in its query, and whether any were dropped. */
export function repoWithoutCredentials(repo: string): { url: string; dropped: boolean } {
  const q = repo.indexOf('?');
  if (q < 0) return { url: repo, dropped: false };
  const kept: string[] = [];
  let dropped = false;
  for (const part of repo.slice(q + 1).split('&')) {
    if (!part) continue;
    let name = part.split('=')[0];
    try {
      name = decodeURIComponent(name);
    } catch {
      /* keep it as written */
    }
    if (REPO_CREDENTIAL_PARAMS.has(name.toLowerCase())) dropped = true;
    else kept.push(part);
  }
  return { url: kept.length ? `${repo.slice(0, q)}?${kept.join('&')}` : repo.slice(0, q), dropped };
}

/** What a run journals about where it acts, so `--resume RUN_ID` alone can continue it. No secrets. */
export function runContextOf(svc: ProcedureServices, answers: { yes?: boolean; confirm?: string[] } = {}): RunContext {
  const c = svc.connection;
  const repo = svc.repo !== undefined ? repoWithoutCredentials(svc.repo) : undefined;
  const context: RunContext = {
    connection: { host: c.host, port: c.port, user: c.user, dbname: c.database, sslmode: c.sslmode },
    pgdata: svc.pgdata !== undefined ? path.resolve(svc.pgdata) : undefined,
    repo: repo?.url,
    repoCredentialsDropped: repo?.dropped || undefined,
    profile: svc.profileName,
    yes: answers.yes || undefined,
    confirm: answers.confirm?.length ? answers.confirm : undefined,
  };
  return context;
}
