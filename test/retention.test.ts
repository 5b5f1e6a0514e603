// Retention: the planner on real repositories (timelines, the "no complete backup, keep all WAL"
// rule, debris, unreadable metadata), then the procedure through the real CLI against a sandbox
// cluster archiving real WAL into a file:// and an S3 (s3rver) repository at once.
import fs from 'node:fs';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, jsonLines, runCli, tempDir, serverWritableDir, serverOwnedRepoDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { startS3rver, type StorageServer } from './helpers/storage-servers.js';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { isRoot, lookupUser } from '../src/postgres/osuser.js';
import { withPg } from '../src/postgres/client.js';
import { openRepository, type Repository } from '../src/repo/repository.js';
import { readCatalog, type BaseBackupMeta, type Catalog } from '../src/repo/catalog.js';
import { walKey } from '../src/repo/walarchive.js';
import { formatLsn, lsnOfSegno, parseLsn, parseWalFileName, segmentName, segnoOfLsn } from '../src/repo/walnames.js';
import { WalCoverage, WalTally, narrowPlan, planRetention, type RetentionPolicy } from '../src/repo/retention.js';
import { validateProfile } from '../src/config/profile.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const policy = (p: Partial<RetentionPolicy> = {}): RetentionPolicy => ({ keepBaseBackups: 7, keepDumpDays: 7, incompleteGraceHours: 24, ...p });
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function walTally(repo: Repository, catalog: Catalog, plan: ReturnType<typeof planRetention>) {
  const tally = new WalTally(plan.wal.rule, catalog.segmentSize);
  for await (const e of repo.store.list('wal/')) tally.add(e);
  return tally.summary();
}

async function walKeys(repo: Repository): Promise<string[]> {
  const out: string[] = [];
  for await (const e of repo.store.list('wal/')) out.push(e.key);
  return out;
}

async function listing(repo: Repository): Promise<string[]> {
  const out: string[] = [];
  for await (const e of repo.store.list('')) out.push(`${e.key} ${e.size}`);
  return out;
}

describe('retention planner', () => {
  const repos: Repository[] = [];
  afterAll(async () => {
    for (const r of repos) await r.close();
  });

  async function fakeRepository(): Promise<Repository> {
    const repo = await openRepository(`file://${tempDir('pgrunbook-retention-unit-')}`, {});
    repos.push(repo);
    return repo;
  }
  const seg = (tli: number, n: number) => segmentName(tli, BigInt(n));
  const putWal = (repo: Repository, name: string, body = randomBytes(64)) => repo.store.put(walKey(name, 'gzip'), body);
  async function commitBackup(repo: Repository, id: string, tli: number, startSeg: number, stopSeg: number, hoursAgo: number, now: number) {
    await repo.putObject(repo.baseBackupKey(id, 'base.tar.gz'), randomBytes(256));
    const meta: BaseBackupMeta = {
      id,
      startLsn: formatLsn(lsnOfSegno(BigInt(startSeg)) + 0x28n),
      stopLsn: formatLsn(lsnOfSegno(BigInt(stopSeg)) + 0x100n),
      startTime: new Date(now - hoursAgo * HOUR - 60_000).toISOString(),
      stopTime: new Date(now - hoursAgo * HOUR).toISOString(),
      timeline: tli,
    };
    await repo.commitBaseBackup(meta);
  }

  it('follows a newer timeline from its history file: the line is the oldest kept backup, history is always kept', async () => {
    const repo = await fakeRepository();
    const now = Date.now();
    // Timeline 1: segments 1..8; the old primary's partial 7; timeline 2 branched at 0/7000100 and runs 7..12.
    for (let n = 1; n <= 8; n++) await putWal(repo, seg(1, n));
    await putWal(repo, `${seg(1, 7)}.partial`);
    await putWal(repo, `${seg(1, 2)}.00000028.backup`);
    for (let n = 7; n <= 12; n++) await putWal(repo, seg(2, n));
    await repo.store.put('wal/00000002.history', Buffer.from('1\t0/7000100\tno recovery target specified\n'));
    await commitBackup(repo, 'b1', 1, 2, 3, 30, now);
    await commitBackup(repo, 'b2', 1, 5, 5, 20, now);
    await commitBackup(repo, 'b3', 2, 9, 9, 10, now);
    const catalog = await readCatalog(repo.store);
    expect(catalog.windows.find((w) => w.backupId === 'b2')!.timelines).toEqual([1, 2]);

    // Keep 2: b3 (timeline 2) and b2 (timeline 1, start segment 5).
    const keep2 = planRetention(catalog, { policy: policy({ keepBaseBackups: 2 }), now: new Date(now) });
    expect(keep2.expire.baseBackups.map((b) => b.id)).toEqual(['b1']);
    expect(keep2.keep.baseBackups.map((b) => b.id)).toEqual(['b3', 'b2']);
    expect(keep2.wal.rule).toMatchObject({ beforeSegment: seg(1, 5), maxTimeline: 1, oldestKeptBackup: 'b2' });
    const w2 = await walTally(repo, catalog, keep2);
    expect(w2.expired.runs).toEqual([{ timeline: 1, from: seg(1, 1), to: seg(1, 4), files: 5, bytes: expect.any(Number) }]);
    expect(w2.kept.runs.map((r) => [r.from, r.to])).toEqual([
      [seg(1, 5), seg(1, 8)],
      [seg(2, 7), seg(2, 12)],
    ]);
    expect(w2.histories).toEqual(['00000002.history']);

    // Keep 1: only b3 on timeline 2 from segment 9: timeline 1 goes wholly, timeline 2 before 9 too.
    const keep1 = planRetention(catalog, { policy: policy({ keepBaseBackups: 1 }), now: new Date(now) });
    expect(keep1.expire.baseBackups.map((b) => b.id).sort()).toEqual(['b1', 'b2']);
    expect(keep1.wal.rule).toMatchObject({ beforeSegment: seg(2, 9), maxTimeline: 2, oldestKeptBackup: 'b3' });
    const w1 = await walTally(repo, catalog, keep1);
    expect(w1.expired.runs.map((r) => [r.from, r.to, r.files])).toEqual([
      [seg(1, 1), seg(1, 8), 10],
      [seg(2, 7), seg(2, 8), 2],
    ]);
    expect(w1.kept.runs.map((r) => [r.from, r.to])).toEqual([[seg(2, 9), seg(2, 12)]]);

    // Carry it out as the procedure does; b3's window is unchanged and the history file is still there.
    const windowBefore = catalog.windows.find((w) => w.backupId === 'b3');
    for (const b of keep1.expire.baseBackups) await repo.deleteBaseBackup(b.id);
    const expiredKeys = (await walKeys(repo)).filter((k) => {
      const n = parseWalFileName(k.slice(4).replace(/\.(gz|zst)$/, ''));
      return n && n.kind !== 'history' && n.timeline <= 2 && n.segno! < 9n;
    });
    expect(await repo.deleteWalFiles(expiredKeys)).toBe(12);
    await expect(repo.deleteWalFiles(['wal/00000002.history'])).rejects.toThrow(/never deleted/);
    const after = await readCatalog(repo.store);
    expect(after.windows).toEqual([windowBefore]);
    expect(after.wal.histories).toEqual([2]);
    const coverage = new WalCoverage(w1.kept.runs, w1.histories, catalog.segmentSize);
    for (const k of await walKeys(repo)) coverage.add(k);
    expect(coverage.missing()).toEqual({ runs: [], histories: [] });
    await repo.store.delete(walKey(seg(2, 10), 'gzip'));
    const holed = new WalCoverage(w1.kept.runs, w1.histories, catalog.segmentSize);
    for (const k of await walKeys(repo)) holed.add(k);
    expect(holed.missing().runs).toEqual([{ run: w1.kept.runs[0], missing: 1 }]);
  });

  it('keeps all WAL without a complete base backup; removes only debris past the grace period, by the real clock too', async () => {
    const repo = await fakeRepository();
    for (let n = 1; n <= 4; n++) await putWal(repo, seg(1, n));
    await repo.putObject(repo.baseBackupKey('failed', 'base.tar.gz'), randomBytes(100));
    const catalog = await readCatalog(repo.store);
    const now = Date.now();
    const lastWrite = { 'basebackups/failed/': new Date(now - 2 * HOUR).toISOString() };

    const recent = planRetention(catalog, { policy: policy({ keepBaseBackups: 1 }), now: new Date(now), lastWrite });
    expect(recent.wal.rule).toBeUndefined();
    expect(recent.wal.keepAllReason).toMatch(/no complete base backup/);
    expect((await walTally(repo, catalog, recent)).expired.files).toBe(0);
    expect(recent.expire.baseBackups).toEqual([]);
    expect(recent.keep.baseBackups[0].reason).toMatch(/may still be in progress/);

    // An injected "now" two days ahead does not make a backup written 2 hours ago look abandoned.
    const future = planRetention(catalog, { policy: policy(), now: new Date(now + 2 * DAY), clock: new Date(now), lastWrite });
    expect(future.expire.baseBackups).toEqual([]);

    const old = planRetention(catalog, { policy: policy({ incompleteGraceHours: 1 }), now: new Date(now), lastWrite });
    expect(old.expire.baseBackups).toMatchObject([{ id: 'failed', complete: false, reason: expect.stringMatching(/debris of a failed run/) }]);
    expect(old.wal.rule).toBeUndefined();

    // Unknown last write: kept.
    expect(planRetention(catalog, { policy: policy({ incompleteGraceHours: 1 }), now: new Date(now) }).expire.baseBackups).toEqual([]);
  });

  it('an unreadable backup.json is never deleted, and keeps all WAL (what it needs is unknown)', async () => {
    const repo = await fakeRepository();
    const now = Date.now();
    for (let n = 1; n <= 6; n++) await putWal(repo, seg(1, n));
    await commitBackup(repo, 'a', 1, 2, 2, 20, now);
    await commitBackup(repo, 'b', 1, 4, 4, 10, now);
    await repo.store.put('basebackups/c/backup.json', Buffer.from('{ not json'));
    const catalog = await readCatalog(repo.store);
    expect(catalog.baseBackups.find((b) => b.id === 'c')!.problem).toBeDefined();
    const plan = planRetention(catalog, { policy: policy({ keepBaseBackups: 1, incompleteGraceHours: 1 }), now: new Date(now), lastWrite: { 'basebackups/c/': new Date(0).toISOString() } });
    expect(plan.expire.baseBackups.map((b) => b.id)).toEqual(['a']);
    expect(plan.keep.baseBackups.map((b) => b.id)).toEqual(['b', 'c']);
    expect(plan.wal.rule).toBeUndefined();
    expect(plan.wal.keepAllReason).toMatch(/c's metadata cannot be read/);
    expect(plan.warnings.join('\n')).toMatch(/base backup c: backup.json unreadable/);
  });

  it('dumps: older than N days go, the newest of each database stays whatever its age', async () => {
    const repo = await fakeRepository();
    const now = Date.now();
    const dump = async (db: string, id: string, daysAgo: number) => {
      await repo.putObject(repo.dumpKey(db, id, `${db}.dump`), randomBytes(50));
      const t = new Date(now - daysAgo * DAY).toISOString();
      await repo.commitDump({ id, database: db, startTime: t, stopTime: t });
    };
    await dump('app', 'd1', 10);
    await dump('app', 'd2', 8);
    await dump('app', 'd3', 2);
    await dump('old', 'o1', 40);
    await dump('old', 'o2', 30);
    const catalog = await readCatalog(repo.store);
    const plan = planRetention(catalog, { policy: policy(), now: new Date(now) });
    expect(plan.expire.dumps.map((d) => `${d.database}/${d.id}`).sort()).toEqual(['app/d1', 'app/d2', 'old/o1']);
    expect(plan.keep.dumps.map((d) => `${d.database}/${d.id}`).sort()).toEqual(['app/d3', 'old/o2']);
    expect(plan.keep.dumps.find((d) => d.id === 'o2')!.reason).toMatch(/newest complete dump of old/);
    expect(plan.wal.keepAllReason).toMatch(/no complete base backup/);

    // A re-decision after the repository changed: only what both decisions expire goes.
    await repo.deleteDump('app', 'd1');
    const later = planRetention(await readCatalog(repo.store), { policy: policy({ keepDumpDays: 9 }), now: new Date(now) });
    const narrowed = narrowPlan(plan, later);
    expect(narrowed.plan.expire.dumps.map((d) => `${d.database}/${d.id}`)).toEqual(['old/o1']);
    expect(narrowed.dropped).toEqual([expect.stringMatching(/^dump app\/d2: now kept: .*within 9 days/), 'dump app/d1: already gone']);
  });

  it('profiles accept retention settings and reject bad ones', () => {
    expect(validateProfile('p', { retention: { baseBackups: 3, dumpDays: 14 } })).toEqual([]);
    expect(validateProfile('p', { retention: { baseBackups: 0, dumpDays: -1, weeks: 2 } })).toHaveLength(3);
  });
});

// ------------------------------------------------------------------------------------------------
// The procedure, with real WAL.

interface TakenBackup {
  id: string;
  startLsn: string;
  stopLsn: string;
  timeline: number;
  startSegment: string;
}

describe('retention procedure with real WAL (file:// and S3)', () => {
  let s3: StorageServer | undefined;
  let cluster: SandboxCluster | undefined;
  let fileUrl: string;
  let fileRepo: Repository;
  let s3Repo: Repository;
  let work: string;
  let stateDir: string;
  const backups: TakenBackup[] = [];
  const now8d = new Date(Date.now() + 8 * DAY).toISOString();

  const cli = (args: string[], env: Record<string, string> = {}) => runCli(args, { PGRUNBOOK_STATE_DIR: stateDir, ...env });

  async function switchAndWaitArchived(): Promise<string> {
    const c = cluster!;
    await c.query(`CREATE TABLE IF NOT EXISTS t (id serial, v text); INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 500) g`);
    const [{ name }] = await c.query<{ name: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS name`);
    await waitFor(`${name} archived`, async () => {
      const [s] = await c.query<{ last_archived_wal: string | null; last_failed_wal: string | null }>(`SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver`);
      if (s.last_failed_wal === name) throw new Error(`archiving ${name} failed; server log: ${fs.readFileSync(c.logFile, 'utf8').slice(-2000)}`);
      return s.last_archived_wal !== null && s.last_archived_wal >= name;
    }, 60_000);
    return name;
  }

  /** Base backup bounds from the low-level backup API (real LSNs), committed into both repositories. */
  async function takeBackup(i: number): Promise<TakenBackup> {
    const b = await withPg(cluster!.connection(), async (c) => {
      const s = await c.query<{ lsn: string; tli: number; time: Date }>(
        `SELECT pg_backup_start('retention-${i}', true)::text AS lsn, (SELECT timeline_id FROM pg_control_checkpoint()) AS tli, now() AS time`,
      );
      await c.query(`INSERT INTO t (v) VALUES ('during backup ${i}')`);
      // Not waiting for the archive here (PostgreSQL polls it once a second); the caller's switch waits instead.
      const stop = await c.query<{ lsn: string; time: Date }>(`SELECT lsn::text AS lsn, clock_timestamp() AS time FROM pg_backup_stop(false)`);
      return { start: s.rows[0], stop: stop.rows[0] };
    });
    const id = `20260101T00000${i}Z-r${i}`;
    const meta: BaseBackupMeta = {
      id,
      startLsn: b.start.lsn,
      stopLsn: b.stop.lsn,
      startTime: b.start.time.toISOString(),
      stopTime: b.stop.time.toISOString(),
      timeline: b.start.tli,
    };
    for (const repo of [fileRepo, s3Repo]) {
      await repo.putObject(repo.baseBackupKey(id, 'base.tar.gz'), randomBytes(4096));
      await repo.commitBaseBackup(meta);
    }
    const startSegment = segmentName(b.start.tli, segnoOfLsn(parseLsn(b.start.lsn)));
    return { id, startLsn: b.start.lsn, stopLsn: b.stop.lsn, timeline: b.start.tli, startSegment };
  }

  beforeAll(async () => {
    work = await serverWritableDir('pgrunbook-retention-');
    stateDir = tempDir('pgrunbook-retention-state-');
    const repoDir = await serverOwnedRepoDir(work);
    fileUrl = `file://${repoDir}`;
    s3 = await startS3rver({ prefix: 'retention' });
    // archive_command runs as the server's OS user (postgres when we are root).
    const wrapper = path.join(work, 'archive.sh');
    fs.writeFileSync(wrapper, `#!/bin/sh\nexec '${process.execPath}' '${CLI}' wal-push --repo '${fileUrl}' "$1"\n`, { mode: 0o700 });
    if (isRoot()) {
      const pg = await lookupUser('postgres');
      fs.chownSync(wrapper, pg.uid, pg.gid);
    }
    fileRepo = await openRepository(fileUrl, {});
    s3Repo = await openRepository(s3.url, { ...process.env, ...s3.env });
    cluster = await createSandboxCluster({ name: 'retention', settings: { archive_mode: 'on', archive_command: `${wrapper} %p`, wal_keep_size: '512MB' } });

    // Four base backups with WAL switched before, between and after them.
    await switchAndWaitArchived();
    for (let i = 0; i < 4; i++) {
      backups.push(await takeBackup(i));
      await switchAndWaitArchived();
    }
    await switchAndWaitArchived();
    // The S3 repository gets the same archived WAL, object for object (bytes and recorded checksums),
    // rather than a second archive_command push per segment, which would double the setup time.
    for await (const e of fileRepo.store.list('wal/')) {
      const info = (await fileRepo.store.head(e.key))!;
      const { body } = await fileRepo.store.get(e.key, { expectedSha256: info.metadata.sha256 });
      await s3Repo.store.put(e.key, body, { metadata: info.metadata, contentLength: info.size });
    }

    // Dumps (file repository): real times now; the runs measure ages from 8 days ahead.
    for (const [db, id] of [['app', 'd1'], ['app', 'd2'], ['app', 'd3'], ['billing', 'b1']]) {
      await fileRepo.putObject(fileRepo.dumpKey(db, id, `${db}.dump`), randomBytes(1024));
      const t = new Date().toISOString();
      await fileRepo.commitDump({ id, database: db, startTime: t, stopTime: t });
      await new Promise((r) => setTimeout(r, 5)); // distinct stop times, so "newest" is well defined
    }
    // Debris of a failed base backup three days ago, and one that may still be running.
    await fileRepo.putObject(fileRepo.baseBackupKey('debris-old', 'base.tar.gz'), randomBytes(2048));
    const old = new Date(Date.now() - 3 * DAY);
    fs.utimesSync(path.join(repoDir, 'basebackups', 'debris-old', 'base.tar.gz'), old, old);
    await fileRepo.putObject(fileRepo.baseBackupKey('debris-fresh', 'base.tar.gz'), randomBytes(2048));
  });

  afterAll(async () => {
    await fileRepo?.close();
    await s3Repo?.close();
    await cluster?.remove();
    await s3?.stop();
  });

  const segno = (name: string) => parseWalFileName(name)!.segno!;
  const walName = (key: string) => key.slice('wal/'.length).replace(/\.(gz|zst)$/, '');

  it('a dry run lists the plan and deletes nothing; without --confirm it stops with exit 4 and deletes nothing', async () => {
    const before = await listing(fileRepo);
    const dry = await cli(['--procedure', 'retention', '--repo', fileUrl, '--keep-base-backups', '2', '--dry-run', '--json'], { PGRUNBOOK_NOW: now8d });
    expect(dry.exitCode, dry.stderr + dry.stdout).toBe(0);
    const logs = jsonLines(dry.stdout).filter((e) => e.type === 'log').map((e) => e.message as string);
    expect(logs).toContainEqual(expect.stringMatching(new RegExp(`^would: expire base backup ${esc(backups[0].id)} \\(4\\.\\d KiB\\): older than the 2 newest complete base backups kept \\(${esc(backups[3].id)}, ${esc(backups[2].id)}\\)$`)));
    expect(logs).toContain(`would: keep base backup ${backups[3].id}: the newest complete base backup (never deleted)`);
    expect(logs.some((l) => /^would: expire base backup debris-old .*debris of a failed run/.test(l))).toBe(true);
    expect(logs.some((l) => /^would: keep base backup debris-fresh: .*may still be in progress/.test(l))).toBe(true);
    expect(logs.some((l) => l.startsWith('would: keep dump billing/b1: the newest complete dump of billing'))).toBe(true);
    expect(logs.some((l) => l.startsWith(`would: expire WAL `) && l.includes(`before ${backups[2].startSegment}`))).toBe(true);
    const ask = logs.find((l) => l.startsWith('would ask to confirm:'))!;
    expect(ask).toMatch(new RegExp(`^would ask to confirm: delete 3 base backups \\(1 of them incomplete\\), 2 dumps and \\d+ WAL files \\(.+\\) from ${esc(fileUrl)} \\(type "${esc(fileUrl)}"`));
    expect(await listing(fileRepo)).toEqual(before);

    // The profile's retention settings apply when no flag overrides them.
    const configDir = tempDir('pgrunbook-retention-config-');
    fs.writeFileSync(path.join(configDir, 'profiles.json'), JSON.stringify({ profiles: { prod: { repo: fileUrl, retention: { baseBackups: 3, dumpDays: 30 } } } }), { mode: 0o600 });
    const byProfile = await cli(['--procedure', 'retention', '--profile', 'prod', '--dry-run', '--json'], { PGRUNBOOK_NOW: now8d, PGRUNBOOK_CONFIG_DIR: configDir });
    expect(byProfile.exitCode, byProfile.stderr + byProfile.stdout).toBe(0);
    const profileLogs = jsonLines(byProfile.stdout).filter((e) => e.type === 'log').map((e) => e.message as string);
    expect(profileLogs.filter((l) => /^would: expire (base backup|dump) /.test(l)).map((l) => l.split(' ')[4])).toEqual([backups[0].id, 'debris-old']);
    expect(profileLogs).toContainEqual(expect.stringMatching(/^would: keep dump app\/d1: 8\.0 days old, within 30 days$/));
    expect(await listing(fileRepo)).toEqual(before);

    const refused = await cli(['--procedure', 'retention', '--repo', fileUrl, '--keep-base-backups', '2', '--json'], { PGRUNBOOK_NOW: now8d });
    expect(refused.exitCode, refused.stderr + refused.stdout).toBe(4);
    const end = jsonLines(refused.stdout).find((e) => e.type === 'run-end')!.summary;
    expect(`${end.error} ${end.hint}`).toContain(`--confirm ${fileUrl}`);
    expect(await listing(fileRepo)).toEqual(before);
  });

  it('keeping 2: the older backups, old dumps, debris and only the WAL before the oldest kept start segment go', async () => {
    const catalogBefore = await readCatalog(fileRepo.store);
    const walBefore = await walKeys(fileRepo);
    const cutoff = segno(backups[2].startSegment);
    const newest = walBefore.map(walName).filter((n) => parseWalFileName(n)?.kind === 'segment').sort().at(-1)!;

    const r = await cli(['--procedure', 'retention', '--repo', fileUrl, '--keep-base-backups', '2', '--confirm', fileUrl, '--json'], { PGRUNBOOK_NOW: now8d });
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
    const events = jsonLines(r.stdout);
    const checks = events.filter((e) => e.type === 'check');
    expect(checks.filter((c) => !c.ok)).toEqual([]);
    expect(checks.map((c) => c.name)).toEqual(
      expect.arrayContaining(['expired backups removed', `recovery window from ${backups[2].id}`, `recovery window from ${backups[3].id}`, 'WAL of kept backups present', 'expired WAL removed']),
    );
    const progress = events.filter((e) => e.type === 'progress' && e.stepId === 'expire');
    expect(progress.at(-1)).toMatchObject({ unit: 'objects' });
    expect(progress.at(-1)!.done).toBe(progress.at(-1)!.total);

    const after = await readCatalog(fileRepo.store);
    expect(after.baseBackups.map((b) => b.id).sort()).toEqual([backups[2].id, backups[3].id, 'debris-fresh'].sort());
    expect(after.dumps.map((d) => `${d.database}/${d.id}`)).toEqual(['app/d3', 'billing/b1']);
    // The WAL: exactly what lies before the oldest kept backup's start segment is gone.
    const walAfter = await walKeys(fileRepo);
    const expected = walBefore.filter((k) => {
      const n = parseWalFileName(walName(k));
      return !n || n.kind === 'history' || n.segno! >= cutoff;
    });
    expect(walAfter).toEqual(expected);
    expect(walAfter.length).toBeLessThan(walBefore.length);
    // Every segment from the start segment to the newest is there, and wal-fetch gives it back.
    const needed: string[] = [];
    for (let s = cutoff; s <= segno(newest); s++) needed.push(segmentName(backups[2].timeline, s));
    expect(walAfter.filter((k) => parseWalFileName(walName(k))?.kind === 'segment').map(walName)).toEqual(needed);
    const out = tempDir('pgrunbook-retention-fetch-');
    const fetched = await Promise.all(needed.map((n) => runCli(['wal-fetch', '--repo', fileUrl, n, path.join(out, n)])));
    expect(fetched.map((f) => f.exitCode)).toEqual(needed.map(() => 0));
    for (const n of needed) {
      const local = path.join(cluster!.dataDir, 'pg_wal', n);
      if (fs.existsSync(local)) expect(sha(fs.readFileSync(path.join(out, n))), n).toBe(sha(fs.readFileSync(local)));
    }
    const gone = segmentName(backups[2].timeline, cutoff - 1n);
    expect((await runCli(['wal-fetch', '--repo', fileUrl, gone, path.join(out, gone)])).exitCode).toBe(1);
    // The kept backups recover exactly as far as before.
    for (const b of [backups[2], backups[3]]) {
      expect(after.windows.find((w) => w.backupId === b.id)).toEqual(catalogBefore.windows.find((w) => w.backupId === b.id));
    }
    expect(after.gaps).toEqual([]);

    // A second run finds nothing to expire: no confirmation needed.
    const again = await cli(['--procedure', 'retention', '--repo', fileUrl, '--keep-base-backups', '2', '--json'], { PGRUNBOOK_NOW: now8d });
    expect(again.exitCode, again.stderr + again.stdout).toBe(0);
    expect(jsonLines(again.stdout).find((e) => e.type === 'step-end' && e.stepId === 'expire')).toMatchObject({ status: 'skipped' });
  });

  it('runs in full against S3: keeping 3 removes the oldest backup and the WAL before the next one', async () => {
    const catalogBefore = await readCatalog(s3Repo.store);
    const cutoff = segno(backups[1].startSegment);
    const confirm = s3!.url.split('?')[0];
    const r = await cli(['--procedure', 'retention', '--repo', s3!.url, '--keep-base-backups', '3', '--confirm', confirm, '--json'], s3!.env);
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
    const checks = jsonLines(r.stdout).filter((e) => e.type === 'check');
    expect(checks.filter((c) => !c.ok)).toEqual([]);
    const after = await readCatalog(s3Repo.store);
    expect(after.baseBackups.map((b) => b.id)).toEqual(backups.slice(1).map((b) => b.id));
    const segments = (await walKeys(s3Repo)).map(walName).filter((n) => parseWalFileName(n)?.kind === 'segment');
    expect(segments[0]).toBe(backups[1].startSegment);
    expect(segments.every((n) => segno(n) >= cutoff)).toBe(true);
    expect(after.gaps).toEqual([]);
    for (const b of backups.slice(1)) {
      expect(after.windows.find((w) => w.backupId === b.id)).toEqual(catalogBefore.windows.find((w) => w.backupId === b.id));
    }
    const dest = path.join(tempDir(), 'RECOVERYXLOG');
    const fetched = await runCli(['wal-fetch', '--repo', s3!.url, backups[1].startSegment, dest], s3!.env);
    expect(fetched.exitCode, fetched.stderr).toBe(0);
    expect(fs.statSync(dest).size).toBe(16 * 1024 * 1024);
    // Sanity: the LSN arithmetic above agrees with PostgreSQL's.
    expect(segnoOfLsn(parseLsn(backups[1].startLsn))).toBe(cutoff);
  });
});

describe('retention removes what killed runs left behind (temp files, empty directories), never under locks/ nor younger than a day', () => {
  let root: string;
  let url: string;
  let stateDir: string;
  const old = new Date(Date.now() - 2 * DAY);
  const at = (rel: string) => path.join(root, ...rel.split('/'));
  const write = (rel: string, content: string, mtime?: Date) => {
    fs.mkdirSync(path.dirname(at(rel)), { recursive: true });
    fs.writeFileSync(at(rel), content);
    if (mtime) fs.utimesSync(at(rel), mtime, mtime);
  };
  const mkdir = (rel: string, mtime?: Date) => {
    fs.mkdirSync(at(rel), { recursive: true });
    if (mtime) fs.utimesSync(at(rel), mtime, mtime);
  };

  beforeAll(async () => {
    root = path.join(tempDir('pgrunbook-retention-debris-'), 'repo');
    url = `file://${root}`;
    stateDir = tempDir('pgrunbook-retention-debris-state-');
    const repo = await openRepository(url, {});
    try {
      const dump = Buffer.from('a dump');
      await repo.putObject(repo.dumpKey('app', 'd1', 'app.dump'), dump);
      const t = new Date().toISOString();
      await repo.commitDump({ id: 'd1', database: 'app', startTime: t, stopTime: t, object: 'app.dump', size: dump.length, sha256: sha(dump) });
    } finally {
      await repo.close();
    }
    // An upload killed two days ago, and one running now (same naming as the local driver's).
    write('dumps/app/d1/.pgrunbook-tmp-0123456789abcdef', 'x'.repeat(3000), old);
    write('dumps/app/d1/.pgrunbook-tmp-fedcba9876543210', 'being written');
    // A killed backup's directories, emptied: nested, two days old; and a fresh empty one.
    mkdir('basebackups/20261101T000000Z/sub', old);
    fs.utimesSync(at('basebackups/20261101T000000Z'), old, old);
    mkdir('basebackups/20261202T000000Z');
    // Under locks/: never touched, whatever its age.
    write('locks/.pgrunbook-tmp-00000000aaaaaaaa', 'lock being written', old);
    mkdir('locks/empty', old);
    // Not the repository's: a file system's lost+found at the root stays, however empty and old.
    mkdir('lost+found', old);
  });

  const cli = (args: string[]) => runCli(['--procedure', 'retention', '--repo', url, '--json', ...args], { PGRUNBOOK_STATE_DIR: stateDir, PGRUNBOOK_NOW: new Date(Date.now() + 30 * DAY).toISOString() });
  const logs = (stdout: string) => jsonLines(stdout).filter((e) => e.type === 'log').map((e) => e.message as string);

  it('plans them (by the real clock, not --now), removes the old ones on confirmation and keeps the fresh ones and locks/', async () => {
    const dry = await cli(['--dry-run']);
    expect(dry.exitCode, dry.stderr + dry.stdout).toBe(0);
    const plan = logs(dry.stdout);
    expect(plan).toContainEqual(expect.stringMatching(/^would: remove temporary file dumps\/app\/d1\/\.pgrunbook-tmp-0123456789abcdef \(2\.9 KiB, last written .+Z, 2\.0 days ago\): left behind by an upload that was killed$/));
    expect(plan).toContainEqual(expect.stringMatching(/^would: remove empty directory basebackups\/20261101T000000Z\/sub\/ \(last changed .+, 2\.0 days ago\)/));
    expect(plan).toContainEqual(expect.stringMatching(/^would: remove empty directory basebackups\/20261101T000000Z\/ /));
    // Fresh ones are kept even though --now lies 30 days ahead.
    expect(plan).toContain('would: keep 1 temporary file and 1 empty directory younger than a day: an upload may still be writing them');
    expect(plan).toContain('would: nothing expires; 1 temporary file and 2 empty directories to remove');
    expect(plan.join('\n')).not.toMatch(/locks\/|lost\+found/);
    expect(plan.find((l) => l.startsWith('would ask to confirm:'))).toMatch(/^would ask to confirm: delete 0 base backups, 0 dumps and 0 WAL files \(0 B\), and 1 temporary file and 2 empty directories from /);
    expect(fs.existsSync(at('dumps/app/d1/.pgrunbook-tmp-0123456789abcdef'))).toBe(true);

    const r = await cli(['--confirm', url]);
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
    const events = jsonLines(r.stdout);
    expect(events.filter((e) => e.type === 'check' && !e.ok)).toEqual([]);
    expect(events.find((e) => e.type === 'check' && e.name === 'temporary files removed')).toMatchObject({ ok: true, detail: '1 temporary file and 2 empty directories removed; nothing under locks/ touched' });
    const done = logs(r.stdout);
    expect(done).toContain('removed temporary file dumps/app/d1/.pgrunbook-tmp-0123456789abcdef');
    expect(done).toContainEqual(expect.stringMatching(/^expired 0 base backups, 0 dumps and 0 WAL files: 2\.9 KiB freed; removed 1 temporary file and 2 empty directories$/));

    expect(fs.existsSync(at('dumps/app/d1/.pgrunbook-tmp-0123456789abcdef'))).toBe(false);
    expect(fs.existsSync(at('basebackups/20261101T000000Z'))).toBe(false);
    expect(fs.existsSync(at('dumps/app/d1/.pgrunbook-tmp-fedcba9876543210'))).toBe(true);
    expect(fs.existsSync(at('basebackups/20261202T000000Z'))).toBe(true);
    expect(fs.existsSync(at('locks/.pgrunbook-tmp-00000000aaaaaaaa'))).toBe(true);
    expect(fs.existsSync(at('locks/empty'))).toBe(true);
    expect(fs.existsSync(at('lost+found'))).toBe(true);
    expect(fs.readFileSync(at('dumps/app/d1/app.dump'), 'utf8')).toBe('a dump');

    // Nothing left to do: the step is skipped, no confirmation needed.
    const again = await cli([]);
    expect(again.exitCode, again.stderr + again.stdout).toBe(0);
    expect(jsonLines(again.stdout).find((e) => e.type === 'step-end' && e.stepId === 'expire')).toMatchObject({ status: 'skipped' });
  });
});
