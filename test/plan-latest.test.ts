// pitr's plan for `latest` finds the last archived record whatever the number of segments after
// the backup: the walker reads pg_waldump in batches of 8, and an archive ending exactly on a
// batch (8, 16, ... segments) once lost its last record, so replay waited for an end it could not
// recognise until --replay-timeout.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, serverOwnedRepoDir, serverWritableDir, tempDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { walCommandLine } from '../src/procedures/pgrunbook-command.js';
import { openStore } from '../src/storage/url.js';
import { readCatalog } from '../src/repo/catalog.js';
import { walKey } from '../src/repo/walarchive.js';
import { parseLsn, parseWalFileName, segnoOfLsn } from '../src/repo/walnames.js';
import { planRecovery } from '../src/restore/plan.js';
import type { ObjectStore } from '../src/storage/types.js';

describe('the plan for latest', () => {
  let cluster: SandboxCluster;
  let repoDir: string;
  let store: ObjectStore;

  beforeAll(async () => {
    const work = await serverWritableDir('pgrunbook-planlatest-');
    repoDir = await serverOwnedRepoDir(work);
    const repoUrl = `file://${repoDir}`;
    cluster = await createSandboxCluster({
      name: 'planlatest',
      settings: { archive_mode: 'on', archive_command: walCommandLine('wal-push', repoUrl, {}).command, wal_keep_size: '512MB' },
    });
    const conn = ['--host', cluster.host, '--port', String(cluster.port), '--user', 'postgres'];
    const r = await runCli(['--procedure', 'backup-base', ...conn, '--repo', repoUrl, '--checkpoint', 'fast', '--json'], { PGRUNBOOK_STATE_DIR: path.join(tempDir(), 'state') });
    expect(r.exitCode, r.stdout.slice(-3000) + r.stderr).toBe(0);
    store = await openStore(repoUrl, process.env);
    // backup-base returns before the archiver has the backup's own WAL: one switch, archived,
    // means everything before it is in the repository, and each switch below adds one segment.
    await switchAndArchive();
  });

  const switchAndArchive = async () => {
    await cluster.query('CREATE TABLE IF NOT EXISTS t (x int); INSERT INTO t VALUES (1)');
    const [{ name }] = await cluster.query<{ name: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS name');
    await waitFor(`${name} archived`, () => fs.existsSync(path.join(repoDir, walKey(name, 'zstd'))), 60_000);
  };

  afterAll(async () => {
    await store?.close();
    await cluster?.remove();
  });

  it('names the last archived record with 7, 8, 9, 16 and 17 segments after the backup, so replay has an end to reach', async () => {
    const seen: number[] = [];
    for (;;) {
      const catalog = await readCatalog(store);
      const backup = catalog.baseBackups.find((b) => b.complete)!.meta!;
      const ss = catalog.segmentSize;
      const last = parseWalFileName(catalog.wal.timelines.find((t) => t.timeline === 1)!.last, ss)!;
      const segments = Number(last.segno! - segnoOfLsn(parseLsn(backup.startLsn), ss)) + 1;
      if (segments > 17) break;
      if ([7, 8, 9, 16, 17].includes(segments)) {
        const plan = await planRecovery({ store, catalog, target: { kind: 'latest' }, log: () => undefined, progress: () => undefined, readBackup: async () => undefined });
        expect(plan.targetDetail, `${segments} segments`).not.toContain('?');
        expect(plan.expect.replayedPast, `${segments} segments`).toBeDefined();
        expect(parseLsn(plan.replayEndLsn), `${segments} segments`).toBeGreaterThan(parseLsn(backup.stopLsn));
        seen.push(segments);
      }
      await switchAndArchive();
    }
    // The counts that end on a batch were among those planned.
    expect(seen).toEqual([7, 8, 9, 16, 17]);
  }, 240_000);
});
