// A sandbox cluster archiving through wal-push into a file repository, with base backups taken
// by the backup-base procedure: what the scratch-recovery tests (and restore-test) start from.
import path from 'node:path';
import { expect } from 'vitest';
import { createSandboxCluster, type SandboxCluster } from '../../src/postgres/sandbox.js';
import { walCommandLine } from '../../src/procedures/pgrunbook-command.js';
import { runCli, serverOwnedRepoDir, serverWritableDir, tempDir } from './cli.js';
import { waitFor } from './wait.js';

export type ArchivingCluster = {
  cluster: SandboxCluster;
  repoUrl: string;
  env: Record<string, string>;
  /** --host/--port/--user of the cluster, for runCli. */
  conn: string[];
  backup(): Promise<void>;
  switchAndArchive(): Promise<void>;
  postmasterStart(): Promise<string>;
};

export async function archivingCluster(name: string, opts: { initdbArgs?: string[] } = {}): Promise<ArchivingCluster> {
  const work = await serverWritableDir(`pgrunbook-${name}-`);
  const repoDir = await serverOwnedRepoDir(work);
  const repoUrl = `file://${repoDir}`;
  const cluster = await createSandboxCluster({
    name,
    initdbArgs: opts.initdbArgs,
    settings: { archive_mode: 'on', archive_command: walCommandLine('wal-push', repoUrl, {}).command, wal_keep_size: '256MB' },
  });
  const conn = ['--host', cluster.host, '--port', String(cluster.port), '--user', 'postgres'];
  const env = { PGRUNBOOK_STATE_DIR: path.join(tempDir(), 'state') };
  return {
    cluster,
    repoUrl,
    env,
    conn,
    async backup() {
      const r = await runCli(['--procedure', 'backup-base', ...conn, '--repo', repoUrl, '--checkpoint', 'fast', '--json'], env);
      expect(r.exitCode, r.stdout.slice(-3000) + r.stderr).toBe(0);
    },
    async switchAndArchive() {
      const [{ name: seg }] = await cluster.query<{ name: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS name`);
      await waitFor(`${seg} archived`, async () => {
        const [s] = await cluster.query<{ last: string | null }>(`SELECT last_archived_wal AS last FROM pg_stat_archiver`);
        return s.last !== null && s.last >= seg;
      }, 60_000);
    },
    async postmasterStart() {
      const [{ t }] = await cluster.query<{ t: string }>(`SELECT pg_postmaster_start_time()::text AS t`);
      return t;
    },
  };
}
