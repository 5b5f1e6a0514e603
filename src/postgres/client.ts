// Thin wrapper over `pg`: connect with libpq-style defaults and turn connection failures into
// messages an operator can act on. Passwords never appear in messages.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ConnectionOptions } from 'node:tls';
import pg from 'pg';
import type { ConnectionSettings } from '../config/connection.js';
import { lookupPassword } from '../config/libpq-files.js';

/**
 * The connection settings, each defaulting like libpq: host (a name, an address, or a unix socket
 * directory starting with '/') to PGHOST or localhost; port to PGPORT or 5432; user to PGUSER or
 * the OS user name; database to PGDATABASE or the user name; password to PGPASSWORD, then
 * ~/.pgpass (read by pg); connectTimeoutSec to 10.
 */
export interface PgConnection extends Omit<ConnectionSettings, 'sslmode'> {
  /** Default "pgrunbook". */
  applicationName?: string;
  /** libpq's sslmode (default PGSSLMODE, then prefer): disable, allow, prefer, require, verify-ca, verify-full. */
  sslmode?: string;
  /** Default PGSSLROOTCERT, then ~/.postgresql/root.crt; "system" trusts the system's CAs. */
  sslrootcert?: string;
  /** Default PGSSLCERT / PGSSLKEY, then ~/.postgresql/postgresql.crt and .key when they exist. */
  sslcert?: string;
  sslkey?: string;
  /** Default PGPASSFILE, then ~/.pgpass. */
  passfile?: string;
}

export interface ResolvedPgConnection {
  host: string;
  port: number;
  user: string;
  database: string;
}

export type PgConnectionFailure =
  | 'refused'
  | 'no-socket'
  | 'timeout'
  | 'unreachable'
  | 'unknown-host'
  | 'auth'
  | 'no-password'
  | 'no-database'
  | 'starting-up'
  | 'too-many-connections'
  | 'closed'
  | 'ssl'
  | 'other';

export class PgConnectionError extends Error {
  readonly reason: PgConnectionFailure;
  /** "127.0.0.1:5432" or "socket /run/postgresql/.s.PGSQL.5432". */
  readonly endpoint: string;
  /** Error code from Node (ECONNREFUSED, ...) or the server (SQLSTATE), if any. */
  readonly code?: string;
  constructor(message: string, reason: PgConnectionFailure, endpoint: string, code?: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'PgConnectionError';
    this.reason = reason;
    this.endpoint = endpoint;
    this.code = code;
  }
}

function envPort(): number | undefined {
  const p = Number(process.env.PGPORT);
  return Number.isInteger(p) && p > 0 ? p : undefined;
}

function osUserName(): string {
  try {
    return os.userInfo().username;
  } catch {
    return process.env.USER ?? 'postgres';
  }
}

/** Fill in libpq's defaults (PGHOST, PGPORT, PGUSER, PGDATABASE) the way pg does. */
export function resolveConnection(conn: PgConnection): ResolvedPgConnection {
  const host = conn.host || process.env.PGHOST || 'localhost';
  const port = conn.port ?? envPort() ?? 5432;
  const user = conn.user || process.env.PGUSER || osUserName();
  const database = conn.database || process.env.PGDATABASE || user;
  return { host, port, user, database };
}

function isSocketDir(host: string): boolean {
  return host.startsWith('/');
}

/** Where we connect: "127.0.0.1:5432", "[::1]:5432" or "socket /dir/.s.PGSQL.5432". */
export function describeEndpoint(conn: PgConnection): string {
  const r = resolveConnection(conn);
  if (isSocketDir(r.host)) return `socket ${r.host.replace(/\/+$/, '')}/.s.PGSQL.${r.port}`;
  return r.host.includes(':') ? `[${r.host}]:${r.port}` : `${r.host}:${r.port}`;
}

/** Human description of a target, without the password: `127.0.0.1:5432 (database "app", user "postgres")`. */
export function describeTarget(conn: PgConnection): string {
  const r = resolveConnection(conn);
  return `${describeEndpoint(conn)} (database "${r.database}", user "${r.user}")`;
}

function scrub(text: string, password: string | undefined): string {
  if (!password) return text;
  return text.split(password).join('********');
}

function errCode(e: unknown): string | undefined {
  const err = e as { code?: unknown; errors?: Array<{ code?: unknown }> };
  if (typeof err?.code === 'string') return err.code;
  const inner = err?.errors?.find((x) => typeof x?.code === 'string');
  return inner ? String(inner.code) : undefined;
}

/** Turn an error from pg's connect() into a PgConnectionError with an operator message. */
export function translateConnectError(e: unknown, conn: PgConnection, timedOut = false): PgConnectionError {
  const r = resolveConnection(conn);
  const endpoint = describeEndpoint(conn);
  const socket = isSocketDir(r.host);
  const code = errCode(e);
  const raw = scrub(e instanceof Error ? e.message : String(e), conn.password ?? process.env.PGPASSWORD);
  const where = `could not connect to PostgreSQL at ${endpoint}`;
  const checkHostPort = 'Check --host/--port or PGHOST/PGPORT.';
  const make = (reason: PgConnectionFailure, text: string) =>
    new PgConnectionError(scrub(text, conn.password ?? process.env.PGPASSWORD), reason, endpoint, code, e);

  const mode = conn.sslmode ?? process.env.PGSSLMODE ?? 'prefer';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return make(
      'ssl',
      `${where}: host name mismatch: the server's certificate does not name "${r.host}" (sslmode=${mode} checks the host name against the certificate): ${raw}. ` +
        'Connect using a host name the certificate names, or use sslmode=verify-ca to verify only the certificate chain.',
    );
  }
  if (code && TLS_VERIFY_CODES.has(code)) {
    return make(
      'ssl',
      `${where}: the server's certificate could not be verified with the root certificate ${sslRootCert(conn)} (sslmode=${mode}): ${raw}. ` +
        'Give the CA that signed the server certificate with sslrootcert or PGSSLROOTCERT, or use sslmode=require to encrypt without verifying.',
    );
  }
  if (/does not support SSL connections/i.test(raw)) {
    return make(
      'ssl',
      `${where}: the server does not accept SSL connections, and sslmode=${mode} requires them. Turn ssl on in the server's configuration, or use sslmode=prefer.`,
    );
  }
  switch (code) {
    case 'ECONNREFUSED':
      return make(
        'refused',
        `${where}: connection refused. Is the server running and listening there? ${checkHostPort}`,
      );
    case 'ENOENT':
      return make(
        'no-socket',
        `${where}: no such socket. Is the server running, with ${r.host} in unix_socket_directories and port ${r.port}? ${checkHostPort}`,
      );
    case 'EACCES':
    case 'EPERM':
      return make('refused', `${where}: permission denied on the socket. Run as a user allowed to use ${r.host}, or connect over TCP. ${checkHostPort}`);
    case 'ETIMEDOUT':
      return make('timeout', `${where}: timed out. Is the host reachable, and does a firewall allow port ${r.port}? ${checkHostPort}`);
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EHOSTDOWN':
      return make('unreachable', `${where}: host unreachable (${code}). Check the network route and the host name. ${checkHostPort}`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return make('unknown-host', `${where}: host name "${r.host}" could not be resolved (${code}). Check --host or PGHOST.`);
    case 'ECONNRESET':
    case 'EPIPE':
      return make('closed', `${where}: the server closed the connection (${code}). Check its log, and the SSL settings (PGSSLMODE).`);
    case '28P01':
    case '28000':
      return make(
        'auth',
        `${where}: authentication failed for user "${r.user}": ${raw}. ` +
          'Check the user name, the password (PGPASSWORD or ~/.pgpass) and the server\'s pg_hba.conf.',
      );
    case '3D000':
      return make(
        'no-database',
        `${where}: database "${r.database}" does not exist. Check --dbname or PGDATABASE (list them with: psql -l).`,
      );
    case '57P03':
      return make(
        'starting-up',
        `${where}: the server is not accepting connections yet (${raw}). Wait for it to finish starting or recovery, and check its log.`,
      );
    case '53300':
      return make('too-many-connections', `${where}: too many connections (${raw}). Close idle sessions or raise max_connections.`);
  }
  if (timedOut || /timeout/i.test(raw)) {
    const secs = conn.connectTimeoutSec ?? 10;
    return make(
      'timeout',
      `${where}: no answer within ${secs} s. Is the host reachable, is a firewall dropping port ${r.port}, or is the server overloaded? ${checkHostPort}`,
    );
  }
  if (/password must be a string|no password|password authentication/i.test(raw)) {
    return make(
      'no-password',
      `${where}: the server asks for a password for user "${r.user}" and none was given. Add an entry to a password file (~/.pgpass, or the file PGPASSFILE names; mode 0600), or set PGPASSWORD.`,
    );
  }
  if (/terminated unexpectedly|Connection terminated/i.test(raw)) {
    return make('closed', `${where}: the server closed the connection (${raw}). Check its log, and the SSL settings (PGSSLMODE).`);
  }
  return make('other', `${where}: ${raw}${socket ? '' : `. ${checkHostPort}`}`);
}

const TLS_VERIFY_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
]);

function postgresqlDir(): string {
  return path.join(process.env.HOME || os.homedir(), '.postgresql');
}

function sslRootCert(conn: PgConnection): string {
  return conn.sslrootcert || process.env.PGSSLROOTCERT || path.join(postgresqlDir(), 'root.crt');
}

/**
 * node-postgres's `ssl` option for one of libpq's sslmodes, with libpq's meaning: require
 * encrypts without verifying (unless a root certificate file exists, as in libpq), verify-ca
 * checks the chain against sslrootcert but not the host name, verify-full checks both.
 */
export function tlsOptions(conn: PgConnection, mode: string): ConnectionOptions {
  const opts: ConnectionOptions = {};
  const cert = conn.sslcert || process.env.PGSSLCERT || path.join(postgresqlDir(), 'postgresql.crt');
  const key = conn.sslkey || process.env.PGSSLKEY || path.join(postgresqlDir(), 'postgresql.key');
  if (fs.existsSync(cert) && fs.existsSync(key)) {
    opts.cert = fs.readFileSync(cert);
    opts.key = fs.readFileSync(key);
  }
  const rootcert = sslRootCert(conn);
  const verify = mode === 'verify-ca' || mode === 'verify-full' || (mode === 'require' && rootcert !== 'system' && fs.existsSync(rootcert));
  if (!verify) {
    opts.rejectUnauthorized = false;
    return opts;
  }
  if (rootcert !== 'system') {
    if (!fs.existsSync(rootcert)) {
      const endpoint = describeEndpoint(conn);
      throw new PgConnectionError(
        `could not connect to PostgreSQL at ${endpoint}: root certificate file "${rootcert}" does not exist. ` +
          `sslmode=${mode} verifies the server's certificate: give the CA's certificate with sslrootcert or PGSSLROOTCERT, or use sslmode=require to encrypt without verifying.`,
        'ssl',
        endpoint,
      );
    }
    opts.ca = fs.readFileSync(rootcert);
  }
  opts.rejectUnauthorized = true;
  if (mode !== 'verify-full') opts.checkServerIdentity = () => undefined;
  return opts;
}

/** The attempts libpq makes for an sslmode, in order (false: no SSL). Unix sockets never use SSL. */
function sslAttempts(conn: PgConnection, host: string): Array<false | ConnectionOptions> {
  const mode = conn.sslmode || process.env.PGSSLMODE || 'prefer';
  if (isSocketDir(host) || mode === 'disable') return [false];
  if (mode === 'allow') return [false, tlsOptions(conn, mode)];
  if (mode === 'prefer') return [tlsOptions(conn, mode), false];
  return [tlsOptions(conn, mode)];
}

/** prefer falls back to a plain connection, allow to an encrypted one, when the first is refused. */
function worthRetrying(e: unknown, ssl: false | ConnectionOptions): boolean {
  const msg = e instanceof Error ? e.message : String(e);
  if (ssl && /does not support SSL connections/i.test(msg)) return true;
  return errCode(e) === '28000' && /pg_hba\.conf/i.test(msg);
}

/** Connect to PostgreSQL. Rejects with a PgConnectionError carrying an operator message. */
export async function connectPg(conn: PgConnection, extra: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const r = resolveConnection(conn);
  const timeoutMs = Math.round((conn.connectTimeoutSec ?? 10) * 1000);
  const password = conn.password ?? (process.env.PGPASSWORD || undefined) ?? lookupPassword(r, conn.passfile);
  const attempts = sslAttempts(conn, r.host);
  for (let i = 0; ; i++) {
    const client = new pg.Client({
      host: r.host,
      port: r.port,
      user: r.user,
      database: r.database,
      password,
      ssl: attempts[i],
      connectionTimeoutMillis: timeoutMs, // 0: no timeout
      application_name: conn.applicationName ?? 'pgrunbook',
      ...extra,
    });
    // An idle client whose server goes away emits 'error'; without a listener that would crash the
    // process. Queries on it still reject, so this listener only keeps the process alive.
    client.on('error', () => {});
    const started = Date.now();
    try {
      await client.connect();
      return client;
    } catch (e) {
      await client.end().catch(() => {});
      if (i + 1 < attempts.length && worthRetrying(e, attempts[i])) continue;
      // pg reports its own connect timeout as "Connection terminated unexpectedly".
      const timedOut = timeoutMs > 0 && Date.now() - started >= timeoutMs - 20 && errCode(e) === undefined;
      throw translateConnectError(e, { ...conn, password }, timedOut);
    }
  }
}

/** Connect, run `fn`, and always close the connection. */
export async function withPg<T>(conn: PgConnection, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = await connectPg(conn);
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}
