// libpq's conventions, so operators and automation bring what they already have:
// PGHOST/PGPORT/PGUSER/PGDATABASE/PGPASSWORD, a password file (PGPASSFILE or ~/.pgpass),
// connection services (PGSERVICE, service=, PGSERVICEFILE or ~/.pg_service.conf, then
// PGSYSCONFDIR/pg_service.conf), sslmode/sslrootcert/sslcert/sslkey, connect_timeout and
// application_name, a conninfo string (`host=db port=5433 dbname=app`) or a URI as --dbname.
import fs from 'node:fs';
import os from 'node:os';
import { lookupService, ServiceFileError } from './libpq-files.js';

export interface ConnectionSettings {
  host?: string;
  port?: number;
  user?: string;
  database?: string;
  password?: string;
  connectTimeoutSec?: number;
  /** disable, allow, prefer (the default), require, verify-ca or verify-full, as in libpq. */
  sslmode?: string;
  /** File of trusted root certificates (default ~/.postgresql/root.crt), or "system". */
  sslrootcert?: string;
  /** Client certificate and key (default ~/.postgresql/postgresql.crt and .key, when present). */
  sslcert?: string;
  sslkey?: string;
  /** Password file (default PGPASSFILE, then ~/.pgpass). */
  passfile?: string;
  /** Default "pgrunbook". */
  applicationName?: string;
  /** The connection service the settings came from (already applied; not passed on). */
  service?: string;
}

export const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;

function sslMode(value: string, source: string): string {
  if (!(SSL_MODES as readonly string[]).includes(value)) {
    throw new ConnectionStringError(`${source}: invalid sslmode "${value}"; use one of ${SSL_MODES.join(', ')}`);
  }
  return value;
}

export class ConnectionStringError extends Error {}

/** Parse a conninfo string or a postgres:// / postgresql:// URI. */
export function parseConnectionString(text: string): ConnectionSettings {
  const trimmed = text.trim();
  if (/^postgres(ql)?:\/\//i.test(trimmed)) return parseUri(trimmed);
  if (trimmed.includes('=')) return parseConninfo(trimmed);
  // A bare word is a database name, as with psql -d.
  return { database: trimmed };
}

function parseUri(text: string): ConnectionSettings {
  let url: URL;
  try {
    // URL cannot parse an empty host with a percent-encoded socket path reliably; swap the scheme.
    url = new URL(text.replace(/^postgres(ql)?:/i, 'http:'));
  } catch {
    throw new ConnectionStringError(`not a valid connection URI (expected postgresql://user@host:port/dbname)`);
  }
  const out: ConnectionSettings = {};
  const host = decodeURIComponent(url.hostname);
  if (host) out.host = host;
  if (url.port) out.port = Number(url.port);
  if (url.username) out.user = decodeURIComponent(url.username);
  if (url.password) out.password = decodeURIComponent(url.password);
  const db = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (db) out.database = db;
  for (const [key, value] of url.searchParams) applyKey(out, key, value);
  return out;
}

function parseConninfo(text: string): ConnectionSettings {
  const out: ConnectionSettings = {};
  const re = /\s*([A-Za-z_]+)\s*=\s*('((?:[^'\\]|\\.)*)'|[^\s']+)/y;
  let pos = 0;
  while (pos < text.length) {
    if (/^\s*$/.test(text.slice(pos))) break;
    re.lastIndex = pos;
    const m = re.exec(text);
    if (!m) throw new ConnectionStringError(`cannot parse the connection string near "${text.slice(pos, pos + 20).replace(/password\s*=.*/i, 'password=***')}": expected key=value pairs`);
    const value = m[3] !== undefined ? m[3].replace(/\\(.)/g, '$1') : m[2];
    applyKey(out, m[1], value);
    pos = re.lastIndex;
  }
  return out;
}

function applyKey(out: ConnectionSettings, key: string, value: string): void {
  switch (key.toLowerCase()) {
    case 'host':
    case 'hostaddr':
      out.host = value;
      break;
    case 'port': {
      const n = Number(value);
      if (!Number.isInteger(n) || n <= 0 || n > 65535) throw new ConnectionStringError(`port must be a number between 1 and 65535, got "${value}"`);
      out.port = n;
      break;
    }
    case 'user':
      out.user = value;
      break;
    case 'dbname':
      out.database = value;
      break;
    case 'password':
      out.password = value;
      break;
    case 'connect_timeout':
      out.connectTimeoutSec = timeoutSeconds(value, 'connect_timeout');
      break;
    case 'sslmode':
      out.sslmode = sslMode(value, 'sslmode');
      break;
    case 'sslrootcert':
      out.sslrootcert = value;
      break;
    case 'sslcert':
      out.sslcert = value;
      break;
    case 'sslkey':
      out.sslkey = value;
      break;
    case 'passfile':
      out.passfile = value;
      break;
    case 'application_name':
      out.applicationName = value;
      break;
    case 'service':
      out.service = value;
      break;
    default:
      // options, keepalives and the like: not needed for our connections.
      break;
  }
}

export interface ConnectionFlags {
  host?: string;
  port?: string | number;
  user?: string;
  dbname?: string;
}

/**
 * Flags override the environment, which overrides the profile; then libpq's defaults
 * (the local socket directory when it exists, port 5432, the OS user name).
 */
export function resolveConnection(
  flags: ConnectionFlags,
  env: NodeJS.ProcessEnv,
  profile: ConnectionSettings & { conninfo?: string } = {},
): ConnectionSettings {
  const fromProfile: ConnectionSettings = { ...(profile.conninfo ? parseConnectionString(profile.conninfo) : {}), ...stripUndefined(profile) };
  delete (fromProfile as { conninfo?: string }).conninfo;
  const fromEnv: ConnectionSettings = stripUndefined({
    host: env.PGHOST || undefined,
    port: env.PGPORT ? portNumber(env.PGPORT, 'PGPORT') : undefined,
    user: env.PGUSER || undefined,
    database: env.PGDATABASE || undefined,
    password: env.PGPASSWORD || undefined,
    connectTimeoutSec: env.PGCONNECT_TIMEOUT ? timeoutSeconds(env.PGCONNECT_TIMEOUT, 'PGCONNECT_TIMEOUT') : undefined,
    sslmode: env.PGSSLMODE ? sslMode(env.PGSSLMODE, 'PGSSLMODE') : undefined,
    sslrootcert: env.PGSSLROOTCERT || undefined,
    sslcert: env.PGSSLCERT || undefined,
    sslkey: env.PGSSLKEY || undefined,
    passfile: env.PGPASSFILE || undefined,
    applicationName: env.PGAPPNAME || undefined,
  });
  const fromDbname = flags.dbname ? parseConnectionString(flags.dbname) : {};
  if (fromDbname.password) warnPasswordOnCommandLine();
  // libpq: a service's settings fill in what the connection string left open, ahead of PG* variables.
  const service = fromDbname.service ?? (env.PGSERVICE || undefined) ?? fromProfile.service;
  const fromService = service ? serviceSettings(service, env) : {};
  const fromFlags: ConnectionSettings = stripUndefined({
    host: flags.host,
    port: flags.port !== undefined ? portNumber(String(flags.port), '--port') : undefined,
    user: flags.user,
  });
  const merged: ConnectionSettings = { ...fromProfile, ...fromEnv, ...fromService, ...stripUndefined(fromDbname), ...fromFlags };
  if (service) merged.service = service;
  if (!merged.host) merged.host = defaultHost();
  if (!merged.port) merged.port = 5432;
  if (!merged.user) merged.user = osUser();
  if (!merged.database) merged.database = merged.user;
  if (!merged.applicationName) merged.applicationName = 'pgrunbook';
  return merged;
}

function serviceSettings(name: string, env: NodeJS.ProcessEnv): ConnectionSettings {
  let found: { file: string; values: Record<string, string> };
  try {
    found = lookupService(name, env);
  } catch (e) {
    if (e instanceof ServiceFileError) throw new ConnectionStringError(e.message);
    throw e;
  }
  const out: ConnectionSettings = {};
  for (const [k, v] of Object.entries(found.values)) {
    try {
      applyKey(out, k, v);
    } catch (e) {
      throw new ConnectionStringError(`service "${name}" in ${found.file}: ${(e as Error).message}`);
    }
  }
  return out;
}

let warnedPassword = false;

/** A password on the command line is visible to every user (ps): say so once, never showing it. */
function warnPasswordOnCommandLine(): void {
  if (warnedPassword) return;
  warnedPassword = true;
  process.stderr.write(
    'pgrunbook: warning: the connection string given with --dbname holds a password, and command lines are visible to other users (ps). ' +
      'Put the password in a password file instead: ~/.pgpass, or the file PGPASSFILE names (mode 0600).\n',
  );
}

function timeoutSeconds(value: string, source: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new ConnectionStringError(`${source} must be a number of seconds (0 waits forever), got "${value}"`);
  // libpq: 0 means no limit, and anything shorter than 2 s is taken as 2 s.
  return n === 0 ? 0 : Math.max(2, Math.floor(n));
}

function portNumber(value: string, source: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0 || n > 65535) {
    throw new ConnectionStringError(`${source}: port must be a number between 1 and 65535, got "${value}"`);
  }
  return n;
}

function defaultHost(): string {
  for (const dir of ['/var/run/postgresql', '/tmp']) {
    try {
      if (fs.readdirSync(dir).some((f) => f.startsWith('.s.PGSQL.'))) return dir;
    } catch {
      /* not there */
    }
  }
  return 'localhost';
}

function osUser(): string {
  try {
    return os.userInfo().username;
  } catch {
    return 'postgres';
  }
}

function stripUndefined<T extends object>(o: T): T {
  const out = {} as T;
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}

export function describeConnection(c: ConnectionSettings): string {
  const where = c.host?.startsWith('/') ? `socket ${c.host}/.s.PGSQL.${c.port}` : `${c.host}:${c.port}`;
  return `${where} as ${c.user}, database ${c.database}`;
}
