// The scratch recovery module on its own (the API table-restore --at, logical-restore --at and
// restore-test build on): recovered to the latest, read, torn down; refused on a small file
// system before anything is downloaded, with the numbers.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withPg } from '../src/postgres/client.js';
import { planScratch, recoverScratch, scratchConnection, scratchGone, ScratchSpaceError, teardownScratch, type ScratchOptions, type ScratchState } from '../src/restore/scratch.js';
import { archivingCluster, type ArchivingCluster } from './helpers/archiving-cluster.js';
import { tempDir } from './helpers/cli.js';

describe('scratch recovery (API)', () => {
  let a: ArchivingCluster;
  const logs: string[] = [];
  const report = { log: (m: string) => logs.push(m), check: (n: string, ok: boolean, d?: string) => logs.push(`${ok ? 'ok' : 'FAIL'} ${n}: ${d ?? ''}`), progress: () => undefined };
  const opts = (extra: Partial<ScratchOptions> = {}): ScratchOptions => ({
    repo: a.repoUrl,
    env: { ...process.env },
    target: 'latest',
    runId: `scratch-api-${Date.now()}`,
    production: { host: a.cluster.host, port: a.cluster.port, user: 'postgres', database: 'postgres' },
    signal: new AbortController().signal,
    report,
    ...extra,
  });

  beforeAll(async () => {
    a = await archivingCluster('scratch-api');
    await a.cluster.query('CREATE DATABASE app');
    await a.cluster.query('CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)', [], 'app');
    await a.backup();
    await a.cluster.query('INSERT INTO t SELECT generate_series(101, 150)', [], 'app');
  }, 120_000);

  afterAll(async () => {
    await a?.cluster.remove();
  });

  it('latest: replays to the end of the archive, reads from a socket-only server, tears down', async () => {
    const started = await a.postmasterStart();
    const o = opts();
    let state: ScratchState | undefined;
    try {
      state = await planScratch(o);
      await recoverScratch(state, o);
      const conn = scratchConnection(state, 'app');
      const n = await withPg(conn, async (c) => (await c.query<{ n: number }>('SELECT count(*)::int AS n FROM t')).rows[0].n);
      expect(n).toBe(150);
      const settings = await withPg(conn, async (c) => (await c.query<{ l: string; a: string; r: boolean }>(`SELECT current_setting('listen_addresses') AS l, current_setting('archive_mode') AS a, pg_is_in_recovery() AS r`)).rows[0]);
      expect(settings).toEqual({ l: '', a: 'off', r: true });
      expect(fs.existsSync(state.base)).toBe(true);
    } finally {
      if (state) await teardownScratch(state);
    }
    expect(await scratchGone(state!)).toMatchObject({ gone: true });
    expect(await a.postmasterStart()).toBe(started);
  }, 180_000);

  it('not enough space: refused before anything is downloaded, with the numbers', async () => {
    const small = tempDir('pgrunbook-scratch-small-');
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', small]);
    try {
      const o = opts({ scratchDir: small });
      logs.length = 0;
      const err = await planScratch(o).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ScratchSpaceError);
      const e = err as ScratchSpaceError;
      expect(e.freeBytes).toBeLessThanOrEqual(2 * 1024 * 1024);
      expect(e.needBytes).toBeGreaterThan(e.freeBytes);
      expect(e.message).toContain(`${e.needBytes} bytes`);
      expect(e.message).toContain(`${e.freeBytes} bytes`);
      // Nothing was read: the plan's backup checksum read logs before it starts.
      expect(logs.some((l) => /reading base backup/.test(l))).toBe(false);
      expect(fs.readdirSync(small)).toEqual([]);
    } finally {
      await execa('umount', [small]);
    }
    expect(path.isAbsolute(small)).toBe(true);
  }, 60_000);
});
