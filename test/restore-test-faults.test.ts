// restore-test finds what is wrong with real backups: a byte flipped in a WAL segment the
// restore needs (exit 3 naming it, a failed record, status critical, nothing left behind) and a
// page of a table damaged in the source before its base backup (checksums valid, content not:
// exit 3 naming the relation). Also SIGINT mid-replay: exit 130, nothing left, --resume passes.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCommand } from '../src/postgres/osuser.js';
import { jsonLines, runCli } from './helpers/cli.js';
import { startNoise } from './helpers/scratch-load.js';
import { checksOf, expectNothingLeft, restoreTestSource, type RestoreTestSource } from './helpers/restore-test-setup.js';

describe('restore-test finds damage', () => {
  let s: RestoreTestSource;

  beforeAll(async () => {
    s = await restoreTestSource('restore-test-faults');
    await s.backup();
    await s.backupLogical();
  }, 180_000);

  afterAll(async () => {
    await s?.noise.stop();
    await s?.cluster.remove();
  });

  it('SIGINT mid-replay: exit 130, no scratch server or files left; --resume then passes', async () => {
    // WAL for the scratch cluster to replay after the base backup.
    await s.cluster.query('INSERT INTO notes SELECT g, repeat(md5(g::text), 20) FROM generate_series(1001, 60000) g', [], 'app');
    await s.switchAndArchive();
    const child = s.startRestoreTest();
    let out = '';
    let runId: string | undefined;
    const replaying = new Promise<void>((resolve) => {
      child.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
        for (const e of jsonLines(out.slice(0, out.lastIndexOf('\n') + 1))) {
          runId ??= e.runId;
          if (e.type === 'progress' && e.replay) resolve();
        }
      });
    });
    await Promise.race([replaying, child]);
    child.kill('SIGINT');
    const r = await child;
    expect(r.exitCode, out.slice(-3000) + String(r.stderr)).toBe(130);
    expect(out).toMatch(/"replay"/);
    expectNothingLeft(s);
    expect(runId).toBeTruthy();
    expect(s.records()).toEqual([]); // an interruption is not a result

    const resumed = await runCli(['--resume', runId!, '--json'], s.env);
    expect(resumed.exitCode, resumed.stdout.slice(-4000) + resumed.stderr).toBe(0);
    expectNothingLeft(s);
    expect(s.records().at(-1)).toMatchObject({ ok: true, runId });
  }, 240_000);

  it('a byte flipped in a WAL segment the restore needs: exit 3 naming it, the record says failed, status critical, nothing left', async () => {
    await s.cluster.query('INSERT INTO orders SELECT g, md5(g::text), 2 FROM generate_series(5001, 5100) g', [], 'app');
    await s.switchAndArchive();
    const walDir = path.join(s.repoDir, 'wal');
    const segments = fs.readdirSync(walDir).filter((f) => /^[0-9A-F]{24}(\.gz|\.zst)?$/.test(f)).sort();
    const victim = segments.at(-1)!;
    const file = path.join(walDir, victim);
    const original = fs.readFileSync(file);
    const damaged = Buffer.from(original);
    damaged[Math.floor(damaged.length / 2)] ^= 0xff;
    fs.writeFileSync(file, damaged);
    try {
      const r = await s.restoreTest();
      expect(r.exitCode, r.stdout.slice(-4000) + r.stderr).toBe(3);
      expect(r.stdout + r.stderr).toContain(victim.replace(/\.(gz|zst)$/, ''));
      expectNothingLeft(s);
      const rec = s.records().at(-1)!;
      expect(rec.ok).toBe(false);
      expect(rec.failure).toContain(victim.replace(/\.(gz|zst)$/, ''));
      const { exitCode, report } = await s.statusJson();
      expect(report.checks.find((c: any) => c.id === 'last_restore_test')).toMatchObject({ status: 'critical' });
      expect(exitCode).toBe(2);
    } finally {
      fs.writeFileSync(file, original);
    }
  }, 240_000);

  it('a page damaged in a source table before its base backup (checksums on): exit 3 naming that relation', async () => {
    await s.cluster.query('CREATE TABLE victim (id int, body text) WITH (autovacuum_enabled = off); INSERT INTO victim SELECT g, md5(g::text) FROM generate_series(1, 200) g', [], 'app');
    await s.cluster.query('CHECKPOINT');
    const [{ path: rel }] = await s.cluster.query<{ path: string }>(`SELECT pg_relation_filepath('victim') AS path`, [], 'app');
    const owner = await ownerOf(s.cluster.dataDir);
    const checksums = path.join(s.cluster.binDir, 'pg_checksums');
    await s.noise.stop();
    await s.cluster.stop();
    try {
      await expectRun(checksums, ['--disable', '-D', s.cluster.dataDir], owner);
      // Line pointers 1..8 of page 0 (after the 24-byte page header) become garbage: lp_off
      // far beyond the page, lp_len huge. The page's checksum is then made valid again.
      const f = path.join(s.cluster.dataDir, rel);
      const fd = fs.openSync(f, 'r+');
      fs.writeSync(fd, Buffer.alloc(32, 0xee), 0, 32, 24);
      fs.closeSync(fd);
      await expectRun(checksums, ['--enable', '-D', s.cluster.dataDir], owner);
    } finally {
      await s.cluster.start();
    }
    s.noise = startNoise(s.cluster, 'app');
    await s.backup();
    const r = await s.restoreTest();
    expect(r.exitCode, r.stdout.slice(-4000) + r.stderr).toBe(3);
    const am = checksOf(r.stdout).find((c) => c.name === 'pg_amcheck');
    expect(am, r.stdout.slice(-3000)).toMatchObject({ ok: false });
    expect(am?.detail).toContain('app.public.victim');
    expect(s.records().at(-1)).toMatchObject({ ok: false, failure: expect.stringContaining('app.public.victim') });
    expectNothingLeft(s);
  }, 240_000);
});

async function ownerOf(dir: string): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const st = fs.statSync(dir);
  return { uid: st.uid, gid: st.gid };
}

async function expectRun(bin: string, args: string[], as: { uid: number; gid: number } | undefined): Promise<void> {
  const r = await runCommand(bin, args, { as, env: { PATH: process.env.PATH }, extendEnv: false });
  expect(r.exitCode, `${r.command}: ${r.stderr}`).toBe(0);
}
