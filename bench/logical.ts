// Logical backup and restore against pg_dump / pg_restore on the same database in the same run.
//
//   npm run build && node --import tsx bench/logical.ts [--scale 100] [--rounds 5] [--jobs 2] [--markdown FILE]
//
// A sandbox cluster (own port and socket; as root it runs as `postgres`) gets `pgbench -i -s
// SCALE` in database "bench". Then, interleaved round by round, each timed as a whole process:
//   backup:  pgrunbook --procedure backup-logical into a file:// repository (preflight, dump,
//            read-back included)  vs  pg_dump -Fc -f FILE  (same format, one job)
//   restore: pgrunbook --procedure logical-restore --jobs N --new-database X (download,
//            pg_restore, row counts checked)  vs  createdb X && pg_restore -j N -d X FILE
// The table prints the minimum wall time of each, the ratio (pgrunbook / peer; above 1 is slower),
// the stored size and pgrunbook's peak RSS (its largest process, from /usr/bin/time).
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createSandboxCluster, killSandboxClustersSync, type SandboxCluster } from '../src/postgres/sandbox.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');

const { values } = parseArgs({
  options: { scale: { type: 'string' }, rounds: { type: 'string' }, jobs: { type: 'string' }, markdown: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
});
if (values.help) {
  console.log('usage: node --import tsx bench/logical.ts [--scale 100] [--rounds 5] [--jobs 2] [--markdown FILE]');
  process.exit(0);
}
const scale = Number(values.scale ?? 100);
const rounds = Number(values.rounds ?? 5);
const jobs = Number(values.jobs ?? 2);
if (!existsSync(CLI)) {
  console.error('bench: dist/cli.js is missing: run npm run build first');
  process.exit(2);
}

const log = (m: string) => process.stderr.write(`[bench] ${m}\n`);
const asPostgres = (cmd: string[]): string[] => (process.getuid?.() === 0 ? ['runuser', '-u', 'postgres', '--', ...cmd] : cmd);

/** Runs `cmd` under /usr/bin/time; wall seconds and the peak RSS of its largest process (KiB). */
function timed(cmd: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ wall: number; rssKiB: number }> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn('/usr/bin/time', ['-f', 'RSS %M', ...cmd], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-4000);
    });
    child.on('close', (code) => {
      const wall = Number(process.hrtime.bigint() - started) / 1e9;
      if (code !== 0) return reject(new Error(`${cmd.join(' ')} exited ${code}: ${err}`));
      resolve({ wall, rssKiB: Number(/RSS (\d+)/.exec(err)?.[1] ?? 0) });
    });
  });
}

function run(cmd: string[], env: NodeJS.ProcessEnv = process.env): void {
  const r = spawnSync(cmd[0], cmd.slice(1), { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd.join(' ')} exited ${r.status}: ${r.stderr}`);
}

let cluster: SandboxCluster | undefined;
const work = mkdtempSync(path.join(os.tmpdir(), 'pgrunbook-bench-logical-'));
process.on('exit', () => {
  killSandboxClustersSync();
  rmSync(work, { recursive: true, force: true });
});

try {
  cluster = await createSandboxCluster({ settings: { max_wal_size: '4GB', shared_buffers: '256MB', checkpoint_timeout: '30min' } });
  const pg = ['-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres'];
  const bin = (p: string) => path.join(cluster!.binDir, p);
  log(`pgbench -i -s ${scale} (database bench)`);
  run(asPostgres([bin('createdb'), ...pg, 'bench']));
  run(asPostgres([bin('pgbench'), ...pg, '-i', '-q', '-s', String(scale), 'bench']));
  run(asPostgres([bin('vacuumdb'), ...pg, '--analyze', 'bench']));
  spawnSync('chown', ['postgres', work]);
  const repo = path.join(work, 'repo');
  spawnSync('install', ['-d', '-o', 'postgres', repo]);
  const peerFile = path.join(work, 'peer.dump');
  const state = { ...process.env, PGRUNBOOK_STATE_DIR: path.join(work, 'state') };
  const cliConn = ['--host', cluster.host, '--port', String(cluster.port), '--user', 'postgres'];

  const ours = { backup: [] as number[], restore: [] as number[], rss: 0 };
  const peer = { backup: [] as number[], restore: [] as number[] };
  for (let r = 0; r < rounds; r++) {
    log(`round ${r + 1}/${rounds}`);
    const pair: Array<() => Promise<void>> = [
      async () => {
        const t = await timed(['node', CLI, '--procedure', 'backup-logical', '--repo', `file://${repo}`, ...cliConn, '--databases', 'bench'], state);
        ours.backup.push(t.wall);
        ours.rss = Math.max(ours.rss, t.rssKiB);
      },
      async () => {
        rmSync(peerFile, { force: true });
        peer.backup.push((await timed(asPostgres([bin('pg_dump'), ...pg, '-Fc', '-f', peerFile, 'bench']))).wall);
      },
    ];
    for (const step of r % 2 ? pair.reverse() : pair) await step();
    const restorePair: Array<() => Promise<void>> = [
      async () => {
        const t = await timed(['node', CLI, '--procedure', 'logical-restore', '--repo', `file://${repo}`, ...cliConn, '--database', 'bench', '--new-database', 'ours_r', '--jobs', String(jobs), '--work-dir', work], state);
        ours.restore.push(t.wall);
        ours.rss = Math.max(ours.rss, t.rssKiB);
        run(asPostgres([bin('dropdb'), ...pg, 'ours_r']));
      },
      async () => {
        const t = await timed(['sh', '-c', `${asPostgres([bin('createdb'), ...pg, 'peer_r']).join(' ')} && ${asPostgres([bin('pg_restore'), ...pg, '-j', String(jobs), '-d', 'peer_r', peerFile]).join(' ')}`]);
        peer.restore.push(t.wall);
        run(asPostgres([bin('dropdb'), ...pg, 'peer_r']));
      },
    ];
    for (const step of r % 2 ? restorePair.reverse() : restorePair) await step();
  }
  const min = (xs: number[]) => Math.min(...xs);
  const metas = spawnSync('sh', ['-c', `ls -1 ${repo}/dumps/bench/*/dump.json | tail -1`], { encoding: 'utf8' }).stdout.trim();
  const oneDump = (JSON.parse(readFileSync(metas, 'utf8')) as { size: number }).size;
  const rows = [
    `| logical backup | ${min(ours.backup).toFixed(2)} s (${(oneDump / 2 ** 20).toFixed(1)} MiB) | \`pg_dump -Fc\` ${min(peer.backup).toFixed(2)} s (${(statSync(peerFile).size / 2 ** 20).toFixed(1)} MiB) | **${(min(ours.backup) / min(peer.backup)).toFixed(2)}x** |`,
    `| logical restore (--jobs ${jobs}) | ${min(ours.restore).toFixed(2)} s | \`createdb\` + \`pg_restore -j ${jobs}\` ${min(peer.restore).toFixed(2)} s | **${(min(ours.restore) / min(peer.restore)).toFixed(2)}x** |`,
  ];
  const table = [
    `### Logical backup and restore (pgbench -s ${scale}, minimum of ${rounds} interleaved rounds; pgrunbook's peak RSS ${(ours.rss / 1024).toFixed(0)} MiB)`,
    '',
    '| work | pgrunbook | peer | ratio |',
    '|---|---|---|---|',
    ...rows,
    '',
  ].join('\n');
  console.log(table);
  if (values.markdown) appendFileSync(values.markdown, `${table}\n`);
} finally {
  await cluster?.remove().catch(() => {});
}
