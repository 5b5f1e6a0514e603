// Connection strings in the forms applications use, before and after a restore: a URI, a conninfo
// string and the environment. Never a password.
import type { ConnectionSettings } from '../../config/connection.js';

function uriHost(host: string | undefined): string {
  if (!host) return '';
  if (host.startsWith('/')) return encodeURIComponent(host);
  return host.includes(':') ? `[${host}]` : host;
}

export function connectionUri(conn: ConnectionSettings, database: string): string {
  const user = conn.user ? `${encodeURIComponent(conn.user)}@` : '';
  const port = conn.port ? `:${conn.port}` : '';
  return `postgresql://${user}${uriHost(conn.host)}${port}/${encodeURIComponent(database)}`;
}

function conninfoValue(v: string): string {
  return /^[^\s'\\]+$/.test(v) && v !== '' ? v : `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

export function connectionConninfo(conn: ConnectionSettings, database: string): string {
  const parts: string[] = [];
  if (conn.host) parts.push(`host=${conninfoValue(conn.host)}`);
  if (conn.port) parts.push(`port=${conn.port}`);
  if (conn.user) parts.push(`user=${conninfoValue(conn.user)}`);
  parts.push(`dbname=${conninfoValue(database)}`);
  return parts.join(' ');
}

/** Log lines "old -> new" for each form, and the same as data for JSON consumers. */
export function connectionChanges(conn: ConnectionSettings, oldDb: string, newDb: string): { form: string; from: string; to: string }[] {
  return [
    { form: 'URI', from: connectionUri(conn, oldDb), to: connectionUri(conn, newDb) },
    { form: 'conninfo', from: connectionConninfo(conn, oldDb), to: connectionConninfo(conn, newDb) },
    { form: 'environment', from: `PGDATABASE=${oldDb}`, to: `PGDATABASE=${newDb}` },
  ];
}

