// Child programs (pg_dump, pg_restore, pg_basebackup, psql) take the connection through
// libpq's environment variables, so no password ever appears in a command line (ps shows those).
// The settings are already resolved (service file, flags, profile, PG* variables): every one is
// passed explicitly, and PGSERVICE is not, so the child's libpq cannot apply the service again
// over what flags chose.
import type { ConnectionSettings } from '../config/connection.js';

const CONNECTION_VARS = [
  'PGHOST', 'PGHOSTADDR', 'PGPORT', 'PGUSER', 'PGDATABASE', 'PGPASSWORD', 'PGSERVICE', 'PGSERVICEFILE', 'PGOPTIONS',
  'PGSSLMODE', 'PGSSLROOTCERT', 'PGSSLCERT', 'PGSSLKEY', 'PGCONNECT_TIMEOUT', 'PGAPPNAME',
];

export function libpqEnv(conn: ConnectionSettings, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base };
  for (const k of CONNECTION_VARS) delete env[k];
  if (conn.host) env.PGHOST = conn.host;
  if (conn.port) env.PGPORT = String(conn.port);
  if (conn.user) env.PGUSER = conn.user;
  if (conn.database) env.PGDATABASE = conn.database;
  if (conn.password) env.PGPASSWORD = conn.password;
  if (conn.sslmode) env.PGSSLMODE = conn.sslmode;
  if (conn.sslrootcert) env.PGSSLROOTCERT = conn.sslrootcert;
  if (conn.sslcert) env.PGSSLCERT = conn.sslcert;
  if (conn.sslkey) env.PGSSLKEY = conn.sslkey;
  if (conn.passfile) env.PGPASSFILE = conn.passfile;
  if (conn.connectTimeoutSec) env.PGCONNECT_TIMEOUT = String(conn.connectTimeoutSec);
  env.PGAPPNAME = conn.applicationName || 'pgrunbook';
  return env;
}
