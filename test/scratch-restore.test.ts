// table-restore --at on a real archiving cluster with a pgbench load writing another table the
// whole time: a bad DELETE undone in replace mode (the table's ordered rows' md5 as before, the
// other table's later rows kept), a dropped table back as a new table; production never
// restarted; the scratch cluster gone after success and after an injected failure.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonLines, runCli, tempDir } from './helpers/cli.js';
import { archivingCluster, type ArchivingCluster } from './helpers/archiving-cluster.js';
import { momentNow, scratchLeft, startNoise, tableMd5 } from './helpers/scratch-load.js';

describe('table-restore --at (scratch recovery)', () => {
  let a: ArchivingCluster;
  let noise: { stop: () => Promise<void> };
  let startedAt: string;
  const scratchDir = tempDir('pgrunbook-scratchdir-');
  fs.chmodSync(scratchDir, 0o755);
  const restore = (args: string[], env: Record<string, string> = {}) =>
    runCli(['--procedure', 'table-restore', ...a.conn, '--repo', a.repoUrl, '--database', 'app', '--scratch-dir', scratchDir, '--json', ...args], { ...a.env, ...env });

  beforeAll(async () => {
    a = await archivingCluster('scratch-restore');
    await a.cluster.query('CREATE DATABASE app');
    await a.cluster.query(
      `CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL, qty int);
       INSERT INTO orders SELECT g, md5(g::text), g % 7 FROM generate_series(1, 2000) g;
       CREATE TABLE notes (id int PRIMARY KEY, body text);
       INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 300) g;
       CREATE TABLE noise (id serial PRIMARY KEY, pad text)`,
      [],
      'app',
    );
    await a.backup();
    noise = startNoise(a.cluster, 'app');
    startedAt = await a.postmasterStart();
  }, 120_000);

  afterAll(async () => {
    await noise?.stop();
    await a?.cluster.remove();
  });

  it('a bad DELETE of 500 rows: replace mode at a moment before it brings the rows back; the other table keeps its later rows', async () => {
    await a.cluster.query(`UPDATE orders SET qty = qty + 1 WHERE id % 10 = 0`, [], 'app');
    const before = await tableMd5(a.cluster, 'app', 'orders');
    const t = await momentNow(a.cluster);
    await a.cluster.query('DELETE FROM orders WHERE id BETWEEN 701 AND 1200', [], 'app');
    const [{ n: noiseAtDelete }] = await a.cluster.query<{ n: number }>('SELECT max(id) AS n FROM noise', [], 'app');
    expect(await tableMd5(a.cluster, 'app', 'orders')).not.toBe(before);

    const r = await restore(['--table', 'orders', '--at', t, '--mode', 'replace', '--confirm', 'app.public.orders']);
    expect(r.exitCode, r.stdout.slice(-4000) + r.stderr).toBe(0);
    expect(await tableMd5(a.cluster, 'app', 'orders')).toBe(before);
    // Rows pgbench wrote to the other table after the DELETE are still there.
    const [{ kept, later }] = await a.cluster.query<{ kept: number; later: number }>(
      `SELECT count(*) FILTER (WHERE id <= $1)::int AS kept, count(*) FILTER (WHERE id > $1)::int AS later FROM noise`,
      [noiseAtDelete],
      'app',
    );
    expect(kept).toBe(noiseAtDelete);
    expect(later).toBeGreaterThan(0);
    const checks = jsonLines(r.stdout).filter((e) => e.type === 'check');
    expect(checks.find((c) => c.name === 'recovery stopped where planned')?.ok).toBe(true);
    expect(checks.find((c) => c.name === 'scratch cluster removed')?.ok).toBe(true);
    expect(scratchLeft(scratchDir)).toEqual([]);
    expect(await a.postmasterStart()).toBe(startedAt);
  }, 240_000);

  it('a dropped table comes back as a new table from a moment before the DROP', async () => {
    const before = await tableMd5(a.cluster, 'app', 'notes');
    const t = await momentNow(a.cluster);
    await a.cluster.query('DROP TABLE notes', [], 'app');
    const r = await restore(['--table', 'notes', '--at', t, '--new-table', 'notes_back']);
    expect(r.exitCode, r.stdout.slice(-4000) + r.stderr).toBe(0);
    expect(await tableMd5(a.cluster, 'app', 'notes_back')).toBe(before);
    expect(scratchLeft(scratchDir)).toEqual([]);
    expect(await a.postmasterStart()).toBe(startedAt);
  }, 240_000);

  it('an injected failure during the copy: nothing changed, the scratch cluster is gone', async () => {
    const before = await tableMd5(a.cluster, 'app', 'orders');
    const t = await momentNow(a.cluster);
    await a.cluster.query('DELETE FROM orders WHERE id <= 100', [], 'app');
    const damaged = await tableMd5(a.cluster, 'app', 'orders');
    const r = await restore(['--table', 'orders', '--at', t, '--mode', 'replace', '--confirm', 'app.public.orders'], { PGRUNBOOK_FAULT: 'table-restore:copy' });
    expect(r.exitCode, r.stdout.slice(-3000) + r.stderr).toBe(1);
    expect(r.stdout + r.stderr).toMatch(/injected fault/);
    expect(await tableMd5(a.cluster, 'app', 'orders')).toBe(damaged);
    expect(scratchLeft(scratchDir)).toEqual([]);
    expect(before).not.toBe(damaged);
    expect(await a.postmasterStart()).toBe(startedAt);
  }, 240_000);
});
