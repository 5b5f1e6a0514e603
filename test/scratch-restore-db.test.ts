// logical-restore --at brings back a dropped database; table-restore --at interrupted by SIGINT
// while its scratch cluster replays leaves nothing behind, and --resume finishes it. A pgbench
// load writes another database the whole time; production is never restarted.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonLines, runCli, startCli, tempDir } from './helpers/cli.js';
import { archivingCluster, type ArchivingCluster } from './helpers/archiving-cluster.js';
import { momentNow, scratchLeft, startNoise, tableMd5 } from './helpers/scratch-load.js';
import { waitFor } from './helpers/wait.js';

describe('logical-restore --at and an interrupted table-restore --at', () => {
  let a: ArchivingCluster;
  let noise: { stop: () => Promise<void> };
  let startedAt: string;
  const scratchDir = tempDir('pgrunbook-scratchdir-');
  fs.chmodSync(scratchDir, 0o755);

  beforeAll(async () => {
    a = await archivingCluster('scratch-db');
    await a.cluster.query('CREATE DATABASE shop');
    await a.cluster.query('CREATE DATABASE busy');
    await a.cluster.query(
      `CREATE TABLE customers (id int PRIMARY KEY, name text);
       INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 400) g;
       CREATE TABLE orders (id int PRIMARY KEY, customer int REFERENCES customers, total numeric);
       INSERT INTO orders SELECT g, 1 + g % 400, g * 1.5 FROM generate_series(1, 3000) g`,
      [],
      'shop',
    );
    await a.cluster.query('CREATE TABLE noise (id serial PRIMARY KEY, pad text)', [], 'busy');
    await a.backup();
    noise = startNoise(a.cluster, 'busy');
    startedAt = await a.postmasterStart();
  }, 120_000);

  afterAll(async () => {
    await noise?.stop();
    await a?.cluster.remove();
  });

  it('a dropped database comes back through logical-restore --at a moment before the DROP', async () => {
    await a.cluster.query('UPDATE orders SET total = total + 1 WHERE id % 3 = 0', [], 'shop');
    const before = { customers: await tableMd5(a.cluster, 'shop', 'customers'), orders: await tableMd5(a.cluster, 'shop', 'orders') };
    const t = await momentNow(a.cluster);
    await a.cluster.query('DROP DATABASE shop');
    const r = await runCli(
      ['--procedure', 'logical-restore', ...a.conn, '--repo', a.repoUrl, '--database', 'shop', '--at', t, '--scratch-dir', scratchDir, '--jobs', '2', '--swap', '--confirm', 'shop', '--json'],
      a.env,
    );
    expect(r.exitCode, r.stdout.slice(-4000) + r.stderr).toBe(0);
    expect(await tableMd5(a.cluster, 'shop', 'customers')).toBe(before.customers);
    expect(await tableMd5(a.cluster, 'shop', 'orders')).toBe(before.orders);
    const checks = jsonLines(r.stdout).filter((e) => e.type === 'check');
    expect(checks.find((c) => c.name === 'rows public.orders')).toMatchObject({ ok: true });
    expect(checks.find((c) => c.name === 'scratch cluster removed')).toMatchObject({ ok: true });
    expect(scratchLeft(scratchDir)).toEqual([]);
    expect(await a.postmasterStart()).toBe(startedAt);
  }, 240_000);

  it('SIGINT while the scratch cluster replays: it is removed; --resume recovers again, restores, removes it', async () => {
    const before = await tableMd5(a.cluster, 'shop', 'customers');
    const t = await momentNow(a.cluster);
    await a.cluster.query('UPDATE customers SET name = upper(name) WHERE id <= 200', [], 'shop');
    const child = startCli(
      ['--procedure', 'table-restore', ...a.conn, '--repo', a.repoUrl, '--database', 'shop', '--table', 'customers', '--at', t, '--mode', 'replace', '--confirm', 'shop.public.customers', '--scratch-dir', scratchDir, '--json'],
      a.env,
    );
    // Interrupt once the scratch server runs (its postmaster.pid exists).
    const dataDir = await waitFor(
      'the scratch server running',
      () => {
        const [d] = scratchLeft(scratchDir);
        const data = d && path.join(scratchDir, d, 'data');
        return data && fs.existsSync(path.join(data, 'postmaster.pid')) ? data : undefined;
      },
      120_000,
      50,
    );
    const runId = path.basename(path.dirname(dataDir)).replace(/^pgrunbook-scratch-/, '');
    child.kill('SIGINT');
    const r = await child;
    expect(r.exitCode, String(r.stdout).slice(-3000) + String(r.stderr)).toBe(130);
    expect(scratchLeft(scratchDir)).toEqual([]);

    const resumed = await runCli(['--resume', runId, '--json'], a.env);
    expect(resumed.exitCode, resumed.stdout.slice(-4000) + resumed.stderr).toBe(0);
    expect(await tableMd5(a.cluster, 'shop', 'customers')).toBe(before);
    expect(scratchLeft(scratchDir)).toEqual([]);
    expect(await a.postmasterStart()).toBe(startedAt);
  }, 240_000);
});
