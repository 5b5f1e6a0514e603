// libpq's conventions, so operators and automation bring what they already have:
// PGHOST/PGPORT/PGUSER/PGDATABASE/PGPASSWORD, ~/.pgpass (read by node-postgres when no
// password is given), a conninfo string (`host=db port=5433 dbname=app`) or a URI as --dbname.
import fs from 'node:fs';
import os from 'node:os';

export interface ConnectionSettings {
  host?: string;
  port?: number;
  user?: string;
  database?: string;
  password?: string;
  connectTimeoutSec?: number;
  sslmode?: string;
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
      out.connectTimeoutSec = Number(value);
      break;
    case 'sslmode':
      out.sslmode = value;
      break;
    default:
      // application_name, options and the like: not needed for our connections.
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
    connectTimeoutSec: env.PGCONNECT_TIMEOUT ? Number(env.PGCONNECT_TIMEOUT) : undefined,
    sslmode: env.PGSSLMODE || undefined,
  });
  const fromDbname = flags.dbname ? parseConnectionString(flags.dbname) : {};
  const fromFlags: ConnectionSettings = stripUndefined({
    host: flags.host,
    port: flags.port !== undefined ? portNumber(String(flags.port), '--port') : undefined,
    user: flags.user,
  });
  const merged: ConnectionSettings = { ...fromProfile, ...fromEnv, ...stripUndefined(fromDbname), ...fromFlags };
  if (!merged.host) merged.host = defaultHost();
  if (!merged.port) merged.port = 5432;
  if (!merged.user) merged.user = osUser();
  if (!merged.database) merged.database = merged.user;
  return merged;
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
