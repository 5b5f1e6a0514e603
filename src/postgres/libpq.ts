// Child programs (pg_dump, pg_restore, pg_basebackup, psql) take the connection through
// libpq's environment variables, so no password ever appears in a command line (ps shows those).
import type { ConnectionSettings } from '../config/connection.js';

export function libpqEnv(conn: ConnectionSettings, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base };
  for (const k of ['PGHOST', 'PGHOSTADDR', 'PGPORT', 'PGUSER', 'PGDATABASE', 'PGPASSWORD', 'PGSERVICE', 'PGOPTIONS']) delete env[k];
  if (conn.host) env.PGHOST = conn.host;
  if (conn.port) env.PGPORT = String(conn.port);
  if (conn.user) env.PGUSER = conn.user;
  if (conn.database) env.PGDATABASE = conn.database;
  if (conn.password) env.PGPASSWORD = conn.password;
  if (conn.sslmode) env.PGSSLMODE = conn.sslmode;
  if (conn.connectTimeoutSec) env.PGCONNECT_TIMEOUT = String(conn.connectTimeoutSec);
  return env;
}
