// What a scratch recovery asks production (read-only): the role initdb made, which owns
// everything and exists on the scratch copy too.
import type { ConnectionSettings } from '../config/connection.js';
import { withPg } from './client.js';

/** The bootstrap superuser's name (the role with oid 10). */
export async function bootstrapSuperuser(conn: ConnectionSettings): Promise<string> {
  return withPg({ ...conn, connectTimeoutSec: 10 }, async (c) => {
    const r = await c.query<{ name: string }>('SELECT rolname AS name FROM pg_roles WHERE oid = 10');
    return r.rows[0].name;
  });
}
