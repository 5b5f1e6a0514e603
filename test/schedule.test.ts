// The cron entry points run the real procedures headless, and never overlap themselves.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { cleanEnv, ROOT, tempDir } from './helpers/cli.js';
import { sharedCluster } from './helpers/cluster.js';
import { waitFor } from './helpers/wait.js';
import { openStore } from '../src/storage/url.js';
import { readCatalog } from '../src/repo/catalog.js';

const script = (name: string) => path.join(ROOT, 'scripts', 'disaster-recovery', name);

describe('scheduled backups', () => {
  it('hourly logical, daily base and retention run headless into the repository; a second run while one holds the lock is skipped', async () => {
    const cluster = sharedCluster();
    const db = await cluster.createDatabase('sched');
    await cluster.query('CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g', [], db);
    const dir = tempDir();
    const repo = `file://${dir}/repo`;
    const env = cleanEnv({ PGRUNBOOK_REPO: repo, PGRUNBOOK_STATE_DIR: path.join(dir, 'state'), PGRUNBOOK_LOCK_DIR: dir, PGHOST: cluster.host, PGPORT: String(cluster.port), PGUSER: cluster.user });
    const run = (name: string, args: string[] = []) => execa('bash', [script(name), ...args], { reject: false, env, extendEnv: false, stdin: 'ignore' });

    const logical = await run('backup-logical-hourly.sh', ['--databases', db]);
    expect(logical.exitCode, String(logical.stderr)).toBe(0);
    const base = await run('backup-base-daily.sh', ['--checkpoint', 'fast']);
    expect(base.exitCode, String(base.stdout).slice(-2000)).toBe(0);
    const retention = await run('retention-daily.sh', ['--keep-base-backups', '1']);
    expect(retention.exitCode, String(retention.stdout).slice(-2000)).toBe(0);

    const store = await openStore(repo);
    const catalog = await readCatalog(store);
    await store.close();
    expect(catalog.dumps.filter((d) => d.complete && d.database === db)).toHaveLength(1);
    expect(catalog.baseBackups.filter((b) => b.complete)).toHaveLength(1);

    // Hold the lock as a running job would, and start the same job again.
    const holder = execa('flock', [path.join(dir, 'pgrunbook-backup-logical.lock'), '-c', `touch ${dir}/held; sleep 30`], { reject: false });
    await waitFor('the lock to be held', () => fs.existsSync(path.join(dir, 'held')));
    const overlapped = await run('backup-logical-hourly.sh', ['--databases', db]);
    holder.kill('SIGKILL');
    expect(overlapped.exitCode).toBe(75);
    expect(String(overlapped.stderr)).toContain('another backup-logical run is still going');
  });
});
