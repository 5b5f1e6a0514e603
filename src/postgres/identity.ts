// Which cluster a running server is: its system identifier, cluster_name and data directory.
import type { ConnectionSettings } from '../config/connection.js';
import { withPg } from './client.js';

export type RunningServerIdentity = {
  systemIdentifier: string;
  clusterName?: string;
  /** Only when the role may read it (pg_read_all_settings). */
  dataDirectory?: string;
};

export async function runningServerIdentity(conn: ConnectionSettings): Promise<RunningServerIdentity> {
  return withPg(conn, async (c) => {
    const r = await c.query<{ sysid: string; cluster_name: string; data_directory: string | null }>(
      `SELECT (SELECT system_identifier::text FROM pg_control_system()) AS sysid, current_setting('cluster_name') AS cluster_name,
              CASE WHEN pg_has_role('pg_read_all_settings', 'member') THEN current_setting('data_directory') END AS data_directory`,
    );
    const row = r.rows[0];
    return { systemIdentifier: row.sysid, clusterName: row.cluster_name || undefined, dataDirectory: row.data_directory ?? undefined };
  });
}
