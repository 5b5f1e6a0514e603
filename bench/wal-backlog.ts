// Benchmark: draining an archive backlog through the archive_command that `wal-archiving` sets
// (asynchronous: the pusher pushes ahead, the shell fast path acknowledges) against pgBackRest's
// archive-push with archive-async (lz4, process-max 2), and the acknowledgement latency of a
// segment already pushed ahead.
//
//   npm run build && node --import tsx bench/wal-backlog.ts [--scale 1] [--rounds 1] [--markdown FILE]
//
// Outline, per round and per tool (order alternating between rounds):
//   1. archive_command = '' (archiving paused): PostgreSQL keeps the segments .ready;
//   2. a bulk load writes WAL until 32 x scale segments are .ready (the backlog);
//   3. archive_command = the tool's, reload, and time until no .ready is left and
//      pg_stat_archiver counted them all: the drain rate in segments per second.
// Then the ack latency: the exact archive_command, run as PostgreSQL runs it (/bin/sh -c, as the
// postgres OS user, in the data directory) for a segment whose ok file is present.
// Timings on a shared machine are noisy: compare ratios from the same run.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { chown, mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { isRoot, lookupUser, type OsIds } from '../src/postgres/osuser.js';
import { walCommandLine } from '../src/procedures/pgrunbook-command.js';
import { lockAlive, readLock } from '../src/wal/spool.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const STANZA = 'bench';
const q = (s: string): string => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
const log = (m: string) => process.stderr.write(`[wal-backlog] ${m}\n`);
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2 : Number.NaN;
};
const p90 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.9))];

const { values } = parseArgs({
  options: { scale: { type: 'string' }, rounds: { type: 'string' }, markdown: { type: 'string' }, 'no-pgbackrest': { type: 'boolean' }, 'pusher-log': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
});
if (values.help) {
  console.log('usage: node --import tsx bench/wal-backlog.ts [--scale N (32 x N segments, default 1)] [--rounds N (default 1)] [--markdown FILE] [--no-pgbackrest]');
  process.exit(0);
}
const scale = Number(values.scale ?? 1);
const rounds = Number(values.rounds ?? 1);
const segments = Math.max(30, Math.round(32 * scale));
const PGBACKREST = '/usr/bin/pgbackrest';

function sh(command: string, ids: OsIds | undefined, cwd: string): Promise<{ ms: number; code: number | null; err: string }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    let err = '';
    const child = spawn('/bin/sh', ['-c', command], { cwd, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, stdio: ['ignore', 'ignore', 'pipe'], ...(ids ? { uid: ids.uid, gid: ids.gid } : {}) });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ ms: Number(process.hrtime.bigint() - t0) / 1e6, code, err }));
  });
}

async function setArchiveCommand(c: SandboxCluster, command: string): Promise<void> {
  await c.psql(`ALTER SYSTEM SET archive_command = '${command.replace(/'/g, "''")}'`);
  await c.psql('SELECT pg_reload_conf()');
  for (let i = 0; i < 200; i++) {
    if ((await c.query<{ archive_command: string }>('SHOW archive_command'))[0].archive_command === command) return;
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function ready(c: SandboxCluster): Promise<number> {
  return (await readdir(path.join(c.dataDir, 'pg_wal', 'archive_status'))).filter((n) => n.endsWith('.ready')).length;
}

async function archived(c: SandboxCluster): Promise<number> {
  return Number((await c.query<{ n: string }>('SELECT archived_count::text AS n FROM pg_stat_archiver'))[0].n);
}

/** Pause archiving and write WAL (a bulk load of compressible rows) until `n` segments are .ready. */
async function makeBacklog(c: SandboxCluster, n: number): Promise<void> {
  await setArchiveCommand(c, '');
  await c.psql('DROP TABLE IF EXISTS load; CREATE TABLE load (id int, v text)');
  while ((await ready(c)) < n) await c.psql(`INSERT INTO load SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 60000) g`);
}

async function drain(c: SandboxCluster, command: string): Promise<{ seconds: number; count: number }> {
  const count = await ready(c);
  const before = await archived(c);
  const t0 = Date.now();
  await setArchiveCommand(c, command);
  for (;;) {
    if ((await ready(c)) === 0 && (await archived(c)) >= before + count) break;
    if (Date.now() - t0 > 600_000) throw new Error(`the backlog did not drain in 600 s with: ${command}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return { seconds: (Date.now() - t0) / 1000, count };
}

/** Largest resident set the pushers reached (VmHWM, read just before each is stopped), KiB. */
let pusherPeakKiB = 0;

async function stopPusher(spool: string): Promise<void> {
  const owner = readLock(path.join(spool, 'push', 'pusher.pid'));
  if (!owner || !lockAlive(owner)) return;
  try {
    const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${owner.pid}/status`, 'utf8'));
    if (hwm) pusherPeakKiB = Math.max(pusherPeakKiB, Number(hwm[1]));
  } catch {
    // gone meanwhile
  }
  process.kill(owner.pid, 'SIGTERM');
  for (let i = 0; i < 500 && lockAlive(readLock(path.join(spool, 'push', 'pusher.pid'))); i++) await new Promise((r) => setTimeout(r, 20));
}

async function main(): Promise<void> {
  if (!existsSync(path.join(ROOT, 'dist', 'cli.js'))) throw new Error('dist/cli.js is missing: run `npm run build` first');
  const ids = isRoot() ? await lookupUser('postgres') : undefined;
  const cluster = await createSandboxCluster({ name: 'wal-backlog', settings: { archive_mode: 'on', archive_command: '', wal_keep_size: '4GB', max_wal_size: '4GB', checkpoint_timeout: '30min' } });
  try {
    const own = async (d: string) => {
      await mkdir(d, { recursive: true, mode: 0o700 });
      if (ids) await chown(d, ids.uid, ids.gid);
      return d;
    };
    const repo = await own(path.join(cluster.baseDir, 'repo'));
    const spool = path.join(cluster.baseDir, 'pgrunbook-data.spool');
    const ours = walCommandLine('wal-push', `file://${repo}`, process.env, { spool }).command;
    const tools: { label: string; command: string }[] = [{ label: 'pgrunbook (async, as wal-archiving sets it)', command: ours }];
    if (!values['no-pgbackrest'] && existsSync(PGBACKREST)) {
      const side = await own(path.join(cluster.baseDir, 'pgbackrest'));
      for (const d of ['repo', 'spool', 'log', 'lock']) await own(path.join(side, d));
      const conf = path.join(side, 'pgbackrest.conf');
      await writeFile(
        conf,
        [
          '[global]',
          `repo1-path=${side}/repo`,
          'compress-type=lz4',
          'archive-async=y',
          'process-max=2',
          `spool-path=${side}/spool`,
          `log-path=${side}/log`,
          `lock-path=${side}/lock`,
          'log-level-console=warn',
          'log-level-file=off',
          `[${STANZA}]`,
          `pg1-path=${cluster.dataDir}`,
          `pg1-socket-path=${cluster.host}`,
          `pg1-port=${cluster.port}`,
          '',
        ].join('\n'),
      );
      if (ids) await chown(conf, ids.uid, ids.gid);
      const r = await sh(`${PGBACKREST} --config=${q(conf)} --stanza=${STANZA} stanza-create`, ids, cluster.dataDir);
      if (r.code !== 0) throw new Error(`pgbackrest stanza-create failed: ${r.err}`);
      tools.push({ label: 'pgBackRest archive-push async (lz4, process-max 2)', command: `${PGBACKREST} --config=${q(conf)} --stanza=${STANZA} archive-push %p` });
    } else log('pgBackRest skipped (--no-pgbackrest, or /usr/bin/pgbackrest missing)');

    const rates = new Map<string, number[]>(tools.map((t) => [t.label, []]));
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 ? [...tools].reverse() : tools;
      for (const t of order) {
        // A pusher left from the previous round would push the new backlog ahead while it is made
        // (it watches archive_status even with archive_command empty): every round starts cold.
        await stopPusher(spool);
        await makeBacklog(cluster, segments);
        const d = await drain(cluster, t.command);
        log(`round ${round + 1}: ${t.label}: ${d.count} segments in ${d.seconds.toFixed(2)} s`);
        if (values['pusher-log'] && t === tools[0]) log(readFileSync(path.join(spool, 'push', 'pusher.log'), 'utf8').trim().split('\n').slice(-d.count - 3).join('\n'));
        rates.get(t.label)!.push(d.count / d.seconds);
      }
    }

    await stopPusher(spool);
    // Ack latency: the archive_command for a segment whose ok file the pusher left (checksum inside).
    await setArchiveCommand(cluster, '');
    await cluster.psql('INSERT INTO load SELECT g, md5(g::text) FROM generate_series(1, 1000) g; SELECT pg_switch_wal()');
    const seg = (await readdir(path.join(cluster.dataDir, 'pg_wal', 'archive_status'))).find((n) => n.endsWith('.ready'))!.slice(0, -6);
    const ok = path.join(spool, 'push', 'ok', seg);
    await writeFile(ok, `${createHash('sha256').update(readFileSync(path.join(cluster.dataDir, 'pg_wal', seg))).digest('hex')}\n`);
    if (ids) await chown(ok, ids.uid, ids.gid);
    const ack: number[] = [];
    const spawnOnly: number[] = [];
    for (let i = 0; i < 30; i++) {
      spawnOnly.push((await sh('true', ids, cluster.dataDir)).ms);
      const r = await sh(ours.replace(/%f/g, seg).replace(/%p/g, `pg_wal/${seg}`), ids, cluster.dataDir);
      if (r.code !== 0) throw new Error(`the fast path failed: ${r.err}`);
      ack.push(r.ms);
    }

    const oursRate = median(rates.get(tools[0].label)!);
    const peer = tools[1] ? median(rates.get(tools[1].label)!) : undefined;
    const lines = [
      `### WAL backlog drain (${segments} segments x ${rounds} round${rounds > 1 ? 's' : ''}, ${new Date().toISOString()})`,
      '',
      '| archive_command | median rate (segments/s) | rounds |',
      '|---|---|---|',
      ...tools.map((t) => `| ${t.label} | ${median(rates.get(t.label)!).toFixed(2)} | ${rates.get(t.label)!.map((r) => r.toFixed(2)).join(', ')} |`),
      '',
      peer ? `Rate ratio pgrunbook / pgBackRest: **${(oursRate / peer).toFixed(2)}x** (goal >= 1.5x)` : 'Rate ratio: no pgBackRest row',
      `Peak RSS of the pusher: ${(pusherPeakKiB / 1024).toFixed(0)} MiB (goal < 200 MiB)`,
      `Ack latency of a segment pushed ahead (shell fast path, /bin/sh as postgres): median ${median(ack).toFixed(1)} ms, p90 ${p90(ack).toFixed(1)} ms (goal < 10 ms); spawning \`/bin/sh -c true\` alone: median ${median(spawnOnly).toFixed(1)} ms`,
      '',
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    if (values.markdown) appendFileSync(values.markdown, `${lines.join('\n')}\n`);
  } finally {
    await cluster.remove();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`wal-backlog: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
