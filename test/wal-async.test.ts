// Asynchronous archiving and prefetching for real: a sandbox cluster whose archive_command is the
// one wal-archiving sets (shell fast path, then `wal-push --spool`), the pusher it starts, and the
// restore_command pitr writes, run through /bin/sh as the server's OS user.
// - a pusher SIGKILLed with 20 segments in flight loses none: every segment PostgreSQL marked
//   .done is in the store with the segment's own checksum, and the next archive_command recovers
//   (it starts a new pusher);
// - an ok file that names other contents is not trusted (the slow path re-checks the checksum);
// - archiving still works with the pusher off (the plain wal-push);
// - the prefetcher never hands over a segment it did not verify: a flipped byte in an archived
//   object ahead of replay never reaches %p nor the spool, and restore_command fails for it.
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, serverOwnedRepoDir, serverWritableDir } from './helpers/cli.js';
import { evaluatePusher } from '../src/monitoring/evaluate-pusher.js';
import type { StatusCheck } from '../src/monitoring/types.js';
import { waitFor } from './helpers/wait.js';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { isRoot, lookupUser } from '../src/postgres/osuser.js';
import { openStore } from '../src/storage/url.js';
import { fetchWal, walKey } from '../src/repo/walarchive.js';
import { walCommandLine } from '../src/procedures/pgrunbook-command.js';
import { lockAlive, readLock, readPusherReport, segmentFingerprint } from '../src/wal/spool.js';
import type { ObjectStore } from '../src/storage/types.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('asynchronous archiving (pusher) and prefetching', () => {
  let cluster: SandboxCluster;
  let work: string;
  let repoUrl: string;
  let store: ObjectStore;
  let spool: string;
  let envFile: string;
  let pg: { uid: number; gid: number } | undefined;
  const statusDir = () => path.join(cluster.dataDir, 'pg_wal', 'archive_status');
  const ready = () => fs.readdirSync(statusDir()).filter((f) => f.endsWith('.ready'));
  const done = () => fs.readdirSync(statusDir()).filter((f) => f.endsWith('.done')).map((f) => f.slice(0, -5));

  async function setArchiveCommand(command: string): Promise<void> {
    await cluster.psql(`ALTER SYSTEM SET archive_command = '${command.replace(/'/g, "''")}'`);
    await cluster.psql('SELECT pg_reload_conf()');
    await waitFor('archive_command reloaded', async () => (await cluster.query<{ archive_command: string }>('SHOW archive_command'))[0].archive_command === command);
  }

  async function makeSegments(n: number): Promise<void> {
    await cluster.psql(`DO $$ BEGIN FOR i IN 1..${n} LOOP INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 2000) g; PERFORM pg_switch_wal(); END LOOP; END $$`);
  }

  /** Stop a spool's pusher (SIGTERM) and wait until it is gone. */
  async function stopPusher(spoolDir: string): Promise<void> {
    const lockFile = path.join(spoolDir, 'push', 'pusher.pid');
    const owner = readLock(lockFile);
    if (owner && lockAlive(owner)) process.kill(owner.pid, 'SIGTERM');
    const zombie = (pid: number) => {
      try {
        return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').startsWith('Z');
      } catch {
        return true;
      }
    };
    await waitFor('the pusher gone', () => {
      const o = readLock(lockFile);
      return !o || !lockAlive(o) || zombie(o.pid);
    }, 15_000);
  }

  /** Run a command line the way PostgreSQL does: /bin/sh -c, as the server's OS user, in the data directory. */
  async function asServer(command: string) {
    const r = await execa('/bin/sh', ['-c', command], { reject: false, cwd: cluster.dataDir, ...(pg ? { uid: pg.uid, gid: pg.gid } : {}), env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, extendEnv: false, stdin: 'ignore' });
    return { exitCode: r.exitCode ?? -1, stderr: String(r.stderr) };
  }

  beforeAll(async () => {
    work = await serverWritableDir('pgrunbook-walasync-');
    repoUrl = `file://${await serverOwnedRepoDir(work)}`;
    cluster = await createSandboxCluster({ name: 'wal-async', settings: { archive_mode: 'on', archive_command: '', wal_keep_size: '2GB' } });
    spool = path.join(cluster.baseDir, 'pgrunbook-data.spool');
    // 20 pushes at once so that 20 are in flight when the pusher is killed; a short idle exit;
    // uncompressed, to spare this shared machine's CPU.
    envFile = path.join(cluster.baseDir, 'pgrunbook-data.env');
    fs.writeFileSync(envFile, 'PGRUNBOOK_WAL_PUSH_PARALLEL=20\nPGRUNBOOK_WAL_IDLE_EXIT_SEC=3\nPGRUNBOOK_WAL_COMPRESS=none\n', { mode: 0o600 });
    if (isRoot()) {
      pg = await lookupUser('postgres');
      fs.chownSync(envFile, pg.uid, pg.gid);
    }
    store = await openStore(repoUrl);
    await cluster.psql('CREATE TABLE t (id int, v text)');
  });

  afterAll(async () => {
    const owner = spool ? readLock(path.join(spool, 'push', 'pusher.pid')) : undefined;
    if (owner && lockAlive(owner)) process.kill(owner.pid, 'SIGTERM');
    await store?.close();
    await cluster?.remove();
  });

  it('a pusher SIGKILLed with 20 segments in flight loses none, and the next archive_command recovers', async () => {
    await makeSegments(24);
    expect(ready().length).toBeGreaterThanOrEqual(24);
    const command = walCommandLine('wal-push', repoUrl, process.env, { envFile, spool }).command;
    expect(command.startsWith(`test ${spool}/push/ok/%f -nt %p || { test -e ${spool}/push/pusher.pid && for i in `)).toBe(true);
    await setArchiveCommand(command);

    // The first archive_command starts the pusher; kill it as soon as it has 20 pushes in flight.
    const state = path.join(spool, 'push', 'state.json');
    const first = await waitFor(
      'the pusher with 20 segments in flight',
      () => {
        try {
          const s = JSON.parse(fs.readFileSync(state, 'utf8')) as { pid: number; inFlight: number };
          return s.inFlight >= 20 ? s : undefined;
        } catch {
          return undefined;
        }
      },
      30_000,
      2,
    );
    process.kill(first.pid, 'SIGKILL');

    // The archiver's next archive_command finds the pusher gone, starts another and pushes itself.
    await waitFor('every segment archived', () => ready().length === 0 && done().length >= 24, 90_000, 50);
    const second = readLock(path.join(spool, 'push', 'pusher.pid'));
    expect(second?.pid).not.toBe(first.pid);
    expect(fs.readFileSync(path.join(spool, 'push', 'pusher.log'), 'utf8')).toContain('started for');

    // Every segment PostgreSQL was told is done is in the store, with the segment's own checksum.
    const segments = done().filter((n) => /^[0-9A-F]{24}$/.test(n));
    expect(segments.length).toBeGreaterThanOrEqual(24);
    for (const name of segments) {
      const info = await store.head(walKey(name, 'none'));
      expect(info, name).toBeDefined();
      const raw = fs.readFileSync(path.join(cluster.dataDir, 'pg_wal', name));
      expect(info!.metadata.rawsha256, name).toBe(sha(raw));
    }
    const [stats] = await cluster.query<{ failed_count: string }>('SELECT failed_count::text FROM pg_stat_archiver');
    expect(Number(stats.failed_count)).toBe(0);

    // Consumed ok files are cleaned once PostgreSQL marked the segments done.
    await waitFor('ok files cleaned', async () => (await readPusherReport(spool)).pushedAhead === 0, 15_000);
    const mode = fs.statSync(spool).mode & 0o777;
    expect(mode).toBe(0o700);
  });

  it('status reports the pusher queue: text, JSON and Prometheus', async () => {
    const conn = ['--repo', repoUrl, '--host', cluster.host, '--port', String(cluster.port), '--user', 'postgres', '--skip', 'base-backup,dump'];
    const json = await runCli(['status', ...conn, '--json']);
    const report = JSON.parse(json.stdout);
    const check = report.checks.find((c: { id: string }) => c.id === 'wal_pusher');
    expect(check, json.stdout).toBeDefined();
    expect(check.status).toBe('ok');
    expect(report.measurements.wal.pusher).toMatchObject({ spool, readySegments: 0, pushedAhead: 0 });
    const prom = await runCli(['status', ...conn, '--prometheus']);
    expect(prom.stdout).toMatch(/^pgrunbook_wal_pusher_up [01]$/m);
    expect(prom.stdout).toMatch(/^pgrunbook_wal_ready_segments 0$/m);
    expect(prom.stdout).toMatch(/^pgrunbook_wal_pushed_ahead_segments 0$/m);
    const text = await runCli(['status', ...conn]);
    expect(text.stdout).toMatch(/WAL pusher.*(running|not running).*0 ready, 0 pushed ahead/);
    // A pusher failing to push right now warns, naming the failure.
    const checks: StatusCheck[] = [];
    const now = Date.now();
    evaluatePusher({ spool, alive: true, pid: 1, pushedAhead: 0, state: { pid: 1, startedAt: '', updatedAt: '', ready: 3, inFlight: 2, pushedAhead: 0, pushedTotal: 5, lastError: '000000010000000000000009: connection refused', lastErrorAt: new Date(now - 5000).toISOString() } }, 3, now, checks);
    expect(checks[0]).toMatchObject({ id: 'wal_pusher', status: 'warning' });
    expect(checks[0].summary).toContain('connection refused');
  });

  it('an ok file that names other contents is not trusted: the slow path checks the checksum and pushes', async () => {
    await setArchiveCommand('');
    // A pusher still alive from the tests before would push the new segment ahead and rewrite the
    // forged ok file with the right checksum: stop it first.
    await stopPusher(spool);
    await makeSegments(1);
    const [name] = ready().map((f) => f.slice(0, -6));
    // A forged ok file, newer than the segment, with a wrong checksum: the shell fast path would
    // take it, so run only the slow path (the command after `||`).
    fs.writeFileSync(path.join(spool, 'push', 'ok', name), `${'0'.repeat(64)}\n`);
    const command = walCommandLine('wal-push', repoUrl, process.env, { envFile, spool }).command;
    const slow = command.slice(command.lastIndexOf('; exec ') + 7).replace(/; }$/, '').replace(/%p/g, `pg_wal/${name}`);
    const r = await asServer(slow);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toContain('names other contents');
    const info = await store.head(walKey(name, 'none'));
    expect(info?.metadata.rawsha256).toBe(sha(fs.readFileSync(path.join(cluster.dataDir, 'pg_wal', name))));
  });

  it('archiving works with the pusher off (the plain wal-push)', async () => {
    const plain = walCommandLine('wal-push', repoUrl, process.env, { envFile }).command;
    expect(plain).not.toContain('--spool');
    await setArchiveCommand(plain);
    const before = done().length;
    await makeSegments(2);
    await waitFor('two more segments archived', () => ready().length === 0 && done().length >= before + 2, 60_000, 50);
  });

  it('the prefetcher never hands over a segment it did not verify: a flipped byte stays out of %p and the spool', async () => {
    const names = done()
      .filter((n) => /^[0-9A-F]{24}$/.test(n))
      .sort();
    const [a, b, c, bad] = names.slice(2, 6);
    // Flip a byte in the stored object of `bad`, ahead of where "replay" starts.
    const key = walKey(bad, 'none');
    const file = path.join(new URL(repoUrl).pathname, key);
    const stored = fs.readFileSync(file);
    const flipped = Buffer.from(stored);
    flipped[Math.floor(flipped.length / 2)] ^= 0xff;
    fs.writeFileSync(file, flipped);
    try {
      const restore = walCommandLine('wal-fetch', repoUrl, process.env, { envFile, spool }).command;
      expect(restore.startsWith(`mv ${spool}/fetch/%f %p 2>/dev/null || { test -e ${spool}/fetch/inflight/%f && for i in `)).toBe(true);
      const fetchDir = path.join(spool, 'fetch');
      const seen = new Set<string>();
      const watch = setInterval(() => {
        for (const f of fs.existsSync(fetchDir) ? fs.readdirSync(fetchDir) : []) seen.add(f);
      }, 2);
      const dest = path.join(cluster.dataDir, 'pg_wal', 'RECOVERYXLOG');
      const run = (name: string) => asServer(restore.replace(/%f/g, name).replace(/%p/g, 'pg_wal/RECOVERYXLOG'));
      try {
        // The first request starts the prefetcher; the next ones come from the spool once it caught up.
        for (const name of [a, b, c]) {
          const r = await run(name);
          expect(r.exitCode, r.stderr).toBe(0);
          expect(sha(fs.readFileSync(dest))).toBe(sha(fs.readFileSync(path.join(cluster.dataDir, 'pg_wal', name))));
          fs.rmSync(dest);
          if (name === a) await waitFor('the prefetcher tried the damaged segment', () => fs.readFileSync(path.join(fetchDir, 'prefetcher.log'), 'utf8').includes(bad), 30_000);
        }
        const r = await run(bad);
        expect(r.exitCode).not.toBe(0);
        expect(r.stderr).toContain('corrupt');
        expect(fs.existsSync(dest)).toBe(false);
      } finally {
        clearInterval(watch);
      }
      expect(seen.has(bad)).toBe(false);
      expect([...seen].some((f) => f === b || f === c)).toBe(true);
    } finally {
      fs.writeFileSync(file, stored);
    }
  });

  it('a zstd backlog: compressed with --fast while it lasts, no raw SHA-256 recorded yet fetched verified, ok files holding the file identity the slow path checks', async () => {
    await setArchiveCommand('');
    await stopPusher(spool);
    const spool2 = path.join(cluster.baseDir, 'pgrunbook-zstd.spool');
    const envFile2 = path.join(cluster.baseDir, 'pgrunbook-zstd.env');
    fs.writeFileSync(envFile2, 'PGRUNBOOK_WAL_IDLE_EXIT_SEC=3\n', { mode: 0o600 });
    if (pg) fs.chownSync(envFile2, pg.uid, pg.gid);
    const before = new Set(done());
    await makeSegments(10);
    const command = walCommandLine('wal-push', repoUrl, process.env, { envFile: envFile2, spool: spool2 }).command;
    await setArchiveCommand(command);
    await waitFor('the backlog archived', () => ready().length === 0 && done().filter((n) => !before.has(n)).length >= 10, 90_000, 50);
    const log = fs.readFileSync(path.join(spool2, 'push', 'pusher.log'), 'utf8');
    expect(log).toContain('compressing with zstd --fast=3');
    const names = done().filter((n) => !before.has(n) && /^[0-9A-F]{24}$/.test(n));
    expect(names.length).toBeGreaterThanOrEqual(10);
    const out = path.join(work, 'zstd-fetched');
    let withoutRawSha = 0;
    for (const name of names) {
      const info = await store.head(walKey(name, 'zstd'));
      expect(info, name).toBeDefined();
      expect(info!.metadata.sha256, name).toMatch(/^[0-9a-f]{64}$/);
      // Pushed ahead: zstd alone read the segment, so no raw SHA-256 (a synchronous push records one).
      if (!info!.metadata.rawsha256) withoutRawSha++;
      const r = await fetchWal(store, name, out);
      expect(r.verified, name).toBe(true);
      expect(sha(fs.readFileSync(out)), name).toBe(sha(fs.readFileSync(path.join(cluster.dataDir, 'pg_wal', name))));
      fs.rmSync(out);
    }
    expect(withoutRawSha).toBeGreaterThanOrEqual(names.length - 1);

    // The slow path: an ok file holding the segment's identity is trusted; one holding another file's is not.
    await setArchiveCommand('');
    await stopPusher(spool2);
    const name = names[names.length - 1];
    const segment = path.join(cluster.dataDir, 'pg_wal', name);
    const slow = command.slice(command.lastIndexOf('; exec ') + 7).replace(/; }$/, '').replace(/%p/g, `pg_wal/${name}`);
    const okPath = path.join(spool2, 'push', 'ok', name);
    fs.writeFileSync(okPath, `${await segmentFingerprint(segment)}\n`);
    const trusted = await asServer(slow);
    expect(trusted.exitCode, trusted.stderr).toBe(0);
    expect(trusted.stderr).not.toContain('names other contents');
    fs.writeFileSync(okPath, `${await segmentFingerprint(path.join(cluster.dataDir, 'pg_wal', names[0]))}\n`);
    const refused = await asServer(slow);
    expect(refused.exitCode, refused.stderr).toBe(0);
    expect(refused.stderr).toContain('names other contents');
    expect(fs.existsSync(okPath)).toBe(false);
  });

  it('after an outage of the store, the segments waiting out their backoff are pushed at once when archive_command gets one through', async () => {
    await setArchiveCommand('');
    await stopPusher(spool);
    const spool3 = path.join(cluster.baseDir, 'pgrunbook-outage.spool');
    const walDir = path.join(repoUrl.slice('file://'.length), 'wal');
    const logFile = path.join(spool3, 'push', 'pusher.log');
    const log = () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '');
    if (!fs.existsSync(walDir)) {
      fs.mkdirSync(walDir, { mode: 0o750 });
      if (pg) fs.chownSync(walDir, pg.uid, pg.gid);
    }
    const mode = fs.statSync(walDir).mode & 0o777;
    let waiting: string[] = [];
    // The outage: the server's OS user can no longer write into the repository.
    fs.chmodSync(walDir, 0o500);
    try {
      await makeSegments(3);
      waiting = ready().map((f) => f.slice(0, -'.ready'.length)).filter((n) => /^[0-9A-F]{24}$/.test(n));
      expect(waiting.length).toBeGreaterThanOrEqual(3);
      await setArchiveCommand(walCommandLine('wal-push', repoUrl, process.env, { envFile, spool: spool3 }).command);
      // Five failed attempts each (1, 2, 4 and 8 s apart): the pusher's next is 16 s away.
      await waitFor('five failed pushes of every waiting segment', () => waiting.every((n) => log().includes(`cannot push ${n} (attempt 5)`)), 60_000, 100);
    } finally {
      fs.chmodSync(walDir, mode);
    }
    // New WAL: the pusher pushes it at once (it never failed), and that success sends the segments
    // waiting out their backoff now rather than in 16 s (the archiver's own archive_command for the
    // oldest waits up to 30 s for a live pusher).
    const restored = Date.now();
    await makeSegments(1);
    await waitFor('the backlog archived', () => waiting.every((n) => done().includes(n)), 60_000, 50);
    const elapsed = Date.now() - restored;
    const after = log();
    expect(after).toMatch(/the store takes writes again; pushing the \d+ segments? that waited for it now/);
    for (const n of waiting.slice(1)) expect(after, `${n} pushed by the pusher after the outage`).toContain(`pushed ${n} (`);
    expect(elapsed).toBeLessThan(15_000);
    for (const name of waiting) {
      const info = await store.head(walKey(name, 'none'));
      expect(info?.metadata.rawsha256, name).toBe(sha(fs.readFileSync(path.join(cluster.dataDir, 'pg_wal', name))));
    }
    await setArchiveCommand('');
    await stopPusher(spool3);
  });
});
