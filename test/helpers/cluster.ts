// Test helpers for PostgreSQL: the run's shared cluster (from test/global-setup.ts) and
// temporary clusters for tests that need their own (restores, crashes, config changes).
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, inject } from 'vitest';
import type pg from 'pg';
import { withPg, type PgConnection } from '../../src/postgres/client.js';
import { createSandboxCluster, type SandboxCluster, type SandboxOptions } from '../../src/postgres/sandbox.js';
import type { SharedClusterInfo } from '../global-setup.js';

export interface SharedCluster extends SharedClusterInfo {
  /** Via the unix socket, user postgres; default database "postgres". */
  connection(database?: string): PgConnection;
  /** Via TCP 127.0.0.1:port. */
  tcpConnection(database?: string): PgConnection;
  query<T = any>(sql: string, params?: unknown[], database?: string): Promise<T[]>;
  withClient<T>(fn: (c: pg.Client) => Promise<T>, database?: string): Promise<T>;
  /**
   * Create a database with a unique name (test files run in parallel against this cluster) and
   * return its name. It lives until the run ends; drop it yourself if it is big.
   */
  createDatabase(prefix?: string): Promise<string>;
}

/** The shared cluster started by test/global-setup.ts. Do not stop it or change its settings. */
export function sharedCluster(): SharedCluster {
  const info = inject('sharedCluster');
  const connection = (database = 'postgres'): PgConnection => ({
    host: info.host,
    port: info.port,
    user: info.user,
    database,
    applicationName: 'pgrunbook-test',
  });
  const tcpConnection = (database = 'postgres'): PgConnection => ({
    ...connection(database),
    host: '127.0.0.1',
  });
  const withClient = <T>(fn: (c: pg.Client) => Promise<T>, database?: string) => withPg(connection(database), fn);
  return {
    ...info,
    connection,
    tcpConnection,
    withClient,
    query: async <T = any>(sql: string, params?: unknown[], database?: string) =>
      withClient(async (c) => (await c.query(sql, params)).rows as T[], database),
    createDatabase: async (prefix = 'test') => {
      const name = `${prefix.toLowerCase().replace(/[^a-z0-9_]/g, '_')}_${randomBytes(4).toString('hex')}`;
      await withClient((c) => c.query(`CREATE DATABASE "${name}"`));
      return name;
    },
  };
}

/** Run `fn` with its own sandbox cluster, removed afterwards whether `fn` succeeds or throws. */
export async function withTemporaryCluster<T>(
  fn: (cluster: SandboxCluster) => Promise<T>,
  opts: SandboxOptions = {},
): Promise<T> {
  const cluster = await createSandboxCluster(opts);
  try {
    return await fn(cluster);
  } finally {
    await cluster.remove();
  }
}

/**
 * A sandbox cluster for the current describe block / file: created in beforeAll, removed in
 * afterAll. Call the returned function inside tests to get it.
 */
export function useTemporaryCluster(opts: SandboxOptions = {}): () => SandboxCluster {
  let cluster: SandboxCluster | undefined;
  beforeAll(async () => {
    cluster = await createSandboxCluster(opts);
  });
  afterAll(async () => {
    await cluster?.remove();
  });
  return () => {
    if (!cluster) throw new Error('useTemporaryCluster: the cluster is only available inside tests (after beforeAll)');
    return cluster;
  };
}
