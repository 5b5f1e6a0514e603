// WAL archiving for real: a sandbox cluster whose archive_command is `pgrunbook wal-push`,
// into each storage driver; wal-fetch gives the segments back byte for byte; the catalog
// computes the recovery window and sees a gap when a segment disappears.
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, cleanEnv, ROOT, tempDir, serverWritableDir, serverOwnedRepoDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { startAzurite, startS3rver, type StorageServer } from './helpers/storage-servers.js';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { isRoot, lookupUser } from '../src/postgres/osuser.js';
import { withPg } from '../src/postgres/client.js';
import { openStore } from '../src/storage/url.js';
import { readCatalog, BASEBACKUP_PREFIX } from '../src/repo/catalog.js';
import { walKey } from '../src/repo/walarchive.js';
import type { ObjectStore } from '../src/storage/types.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function wal(args: string[], env: Record<string, string>) {
  const r = await execa('node', [CLI, ...args], { reject: false, extendEnv: false, env: cleanEnv(env), stdin: 'ignore' });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

describe.each(['file', 's3', 'azure'] as const)('WAL archiving into %s', (kind) => {
  let server: StorageServer | undefined;
  let repoUrl: string;
  let repoEnv: Record<string, string> = {};
  let cluster: SandboxCluster;
  let store: ObjectStore;
  let work: string;

  beforeAll(async () => {
    work = await serverWritableDir('pgrunbook-wal-');
    if (kind === 'file') {
      const repoDir = await serverOwnedRepoDir(work);
      repoUrl = `file://${repoDir}`;
    } else {
      server = kind === 's3' ? await startS3rver({ prefix: 'wal-test' }) : await startAzurite({ prefix: 'wal-test' });
      repoUrl = server.url;
      repoEnv = server.env;
    }
    // archive_command runs as the server's OS user with the server's environment: a wrapper
    // carries the credentials, as an operator's would.
    const wrapper = path.join(work, 'archive.sh');
    const exports = Object.entries(repoEnv).map(([k, v]) => `export ${k}='${v}'`).join('\n');
    fs.writeFileSync(wrapper, `#!/bin/sh\n${exports}\nexec '${process.execPath}' '${CLI}' wal-push --repo '${repoUrl}' "$1"\n`, { mode: 0o700 });
    if (isRoot()) {
      const pg = await lookupUser('postgres');
      fs.chownSync(wrapper, pg.uid, pg.gid);
    }
    cluster = await createSandboxCluster({
      name: `wal-${kind}`,
      settings: { archive_mode: 'on', archive_command: `${wrapper} %p`, wal_keep_size: '512MB' },
    });
    store = await openStore(repoUrl, { ...process.env, ...repoEnv });
  });

  afterAll(async () => {
    await store?.close();
    await cluster?.remove();
    await server?.stop();
  });

  async function switchAndWaitArchived(): Promise<string> {
    await cluster.query(`CREATE TABLE IF NOT EXISTS t (id serial, v text); INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 1000) g`);
    const [{ name }] = await cluster.query<{ name: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS name`);
    await waitFor(`${name} archived (pg_stat_archiver)`, async () => {
      const [s] = await cluster.query<{ last_archived_wal: string | null; failed_count: string; last_failed_wal: string | null }>(
        `SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver`,
      );
      if (s.last_failed_wal === name) throw new Error(`archiving ${name} failed; server log: ${fs.readFileSync(cluster.logFile, 'utf8').slice(-2000)}`);
      return s.last_archived_wal !== null && s.last_archived_wal >= name;
    }, 60_000);
    return name;
  }

  it('archives through archive_command, and wal-fetch returns byte-identical segments', async () => {
    const name = await switchAndWaitArchived();
    const info = await store.head(walKey(name, 'zstd'));
    expect(info, `wal/${name}.zst in the repository`).toBeDefined();
    expect(info!.metadata.compression).toBe('zstd');

    const original = fs.readFileSync(path.join(cluster.dataDir, 'pg_wal', name));
    const dest = path.join(tempDir(), 'RECOVERYXLOG');
    const r = await wal(['wal-fetch', '--repo', repoUrl, name, dest], repoEnv);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(sha(fs.readFileSync(dest))).toBe(sha(original));
  });

  it('a second push of the same segment succeeds; different bytes under the same name fail', async () => {
    const name = await switchAndWaitArchived();
    const segment = path.join(cluster.dataDir, 'pg_wal', name);
    const again = await wal(['wal-push', '--repo', repoUrl, segment], repoEnv);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(again.stderr).toContain('already archived with the same contents');

    const forged = path.join(tempDir(), name);
    const bytes = fs.readFileSync(segment);
    bytes[4096] ^= 0xff;
    fs.writeFileSync(forged, bytes);
    const conflict = await wal(['wal-push', '--repo', repoUrl, forged], repoEnv);
    expect(conflict.exitCode).not.toBe(0);
    expect(conflict.stderr).toContain('DIFFERENT contents');
    // The archived copy is still the original.
    const dest = path.join(tempDir(), 'check');
    expect((await wal(['wal-fetch', '--repo', repoUrl, name, dest], repoEnv)).exitCode).toBe(0);
    expect(sha(fs.readFileSync(dest))).toBe(sha(fs.readFileSync(segment)));
  });

  it('wal-fetch of a file not in the archive exits non-zero quietly; a corrupt copy loudly', async () => {
    const dest = path.join(tempDir(), 'RECOVERYXLOG');
    const missing = await wal(['wal-fetch', '--repo', repoUrl, '00000099.history', dest], repoEnv);
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toBe('');
    expect(fs.existsSync(dest)).toBe(false);

    // Corrupt one archived object while keeping its recorded checksums, as bit rot would.
    const name = await switchAndWaitArchived();
    const key = walKey(name, 'zstd');
    const head = (await store.head(key))!;
    const { body } = await store.get(key);
    const chunks: Buffer[] = [];
    for await (const c of body) chunks.push(c as Buffer);
    const stored = Buffer.concat(chunks);
    stored[Math.floor(stored.length / 2)] ^= 0x01;
    await store.put(key, stored, { metadata: head.metadata });
    const corrupt = await wal(['wal-fetch', '--repo', repoUrl, name, dest], repoEnv);
    expect(corrupt.exitCode).toBe(1);
    expect(corrupt.stderr).toMatch(/corrupt/);
    expect(fs.existsSync(dest)).toBe(false);
  });

  it('the catalog reports the recovery window, and the gap after one segment is deleted', async () => {
    // A base backup's bounds, taken with the low-level backup API; its data does not matter here.
    const [start] = await withPg(cluster.connection(), async (c) => {
      await c.query(`CREATE TABLE IF NOT EXISTS t (id serial, v text)`);
      const s = await c.query<{ lsn: string; tli: number; time: Date }>(
        `SELECT pg_backup_start('catalog-test', true)::text AS lsn, (SELECT timeline_id FROM pg_control_checkpoint()) AS tli, now() AS time`,
      );
      await c.query(`INSERT INTO t (v) VALUES ('during backup')`);
      const stop = await c.query<{ lsn: string }>(`SELECT lsn::text AS lsn FROM pg_backup_stop(true)`);
      return [{ ...s.rows[0], stopLsn: stop.rows[0].lsn }];
    });
    const id = `catalog-${Date.now()}`;
    await store.put(
      `${BASEBACKUP_PREFIX}${id}/backup.json`,
      Buffer.from(JSON.stringify({ id, startLsn: start.lsn, stopLsn: start.stopLsn, startTime: start.time.toISOString(), stopTime: new Date().toISOString(), timeline: start.tli })),
    );
    const names: string[] = [];
    for (let i = 0; i < 4; i++) names.push(await switchAndWaitArchived());

    const catalog = await readCatalog(store);
    const window = catalog.windows.find((w) => w.backupId === id)!;
    expect(window, JSON.stringify(catalog.windows)).toBeDefined();
    expect(window.unusable).toBeUndefined();
    expect(window.fromLsn).toBe(start.stopLsn);
    const last = names[names.length - 1];
    // The window reaches the end of the last archived segment.
    expect(catalog.wal.timelines[0].last).toBe(last);
    const [{ end }] = await cluster.query<{ end: string }>(`SELECT (('${window.toLsn}'::pg_lsn) - 1)::text AS end`);
    const [{ file }] = await cluster.query<{ file: string }>(`SELECT pg_walfile_name('${end}'::pg_lsn) AS file`);
    expect(file).toBe(last);
    expect(catalog.gaps).toEqual([]);
    expect(window.endedByGap).toBeUndefined();

    await store.delete(walKey(names[1], 'zstd'));
    const gapped = await readCatalog(store);
    expect(gapped.gaps).toEqual([{ timeline: start.tli, from: names[1], to: names[1], missing: 1 }]);
    const w2 = gapped.windows.find((w) => w.backupId === id)!;
    expect(w2.endedByGap).toMatchObject({ from: names[1] });
    const [{ shorter }] = await cluster.query<{ shorter: boolean }>(`SELECT '${w2.toLsn}'::pg_lsn < '${window.toLsn}'::pg_lsn AS shorter`);
    expect(shorter).toBe(true);

    // And the CLI shows it to an operator.
    const shown = await wal(['catalog', '--repo', repoUrl, '--json'], repoEnv);
    expect(shown.exitCode, shown.stderr).toBe(0);
    expect(JSON.parse(shown.stdout).gaps).toHaveLength(1);
  });
});

describe('upload_to_storage', () => {
  it('wraps wal-push as the seed archive_command expects (%p %f)', async () => {
    const dir = tempDir();
    const seg = path.join(dir, '000000010000000000000042');
    fs.writeFileSync(seg, Buffer.alloc(1024 * 1024, 7));
    const script = path.join(ROOT, 'scripts', 'disaster-recovery', 'upload_to_storage');
    const env = cleanEnv({ PGRUNBOOK_REPO: `file://${dir}/repo` });
    const ok = await execa('bash', [script, seg, '000000010000000000000042'], { reject: false, env, extendEnv: false });
    expect(ok.exitCode, String(ok.stderr)).toBe(0);
    expect(fs.existsSync(path.join(dir, 'repo', 'wal', '000000010000000000000042.zst'))).toBe(true);
    const mismatch = await execa('bash', [script, seg, '000000010000000000000043'], { reject: false, env, extendEnv: false });
    expect(mismatch.exitCode).toBe(2);
  });
});
