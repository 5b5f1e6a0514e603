// Benchmark: a full base backup of a pgbench cluster with `pgrunbook --procedure backup-base`
// (file:// repository), `pg_basebackup --compress=server-zstd:level=1` (tar into a directory) and
// pgBackRest (`backup --type=full`, zst level 1, process-max 2), interleaved, the minimum of N
// rounds. Not part of `npm test`; see bench/README.md.
//
//   npm run build && node --import tsx bench/base-backup.ts [--scale 100] [--rounds 5] [--markdown FILE]
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { killSandboxClustersSync, type SandboxCluster } from '../src/postgres/sandbox.js';
import { CLI, STANZA, du, emit, log, machine, mkdirFor, parseBenchOptions, pgbackrestStanza, pgbenchCluster, postgresIds, q, requireBuild, syncDisk, table, timed, workDir, type Row } from './physical-common.js';

const USAGE = `usage: node --import tsx bench/base-backup.ts [--scale N] [--rounds N] [--markdown FILE] [--keep]
  --scale N        pgbench -i scale (default 100, about 1.5 GB)
  --rounds N       interleaved rounds; the table shows the minimum (default 5)
  --markdown FILE  append the table section to FILE
Run \`npm run build\` first: the benchmark runs dist/cli.js.`;

async function main(): Promise<void> {
  const opts = parseBenchOptions(process.argv.slice(2), USAGE);
  requireBuild();
  const ids = await postgresIds();
  const work = await workDir('pgrunbook-bench-bb-', ids);
  let cluster: SandboxCluster | undefined;
  process.once('SIGINT', () => {
    killSandboxClustersSync();
    process.exit(130);
  });
  try {
    cluster = await pgbenchCluster('bench-bb', opts.scale);
    const c = cluster;
    const conn = `--host ${q(c.host)} --port ${c.port} --user postgres`;
    const variants: { label: string; prepare: (dir: string) => Promise<string>; stored: (dir: string) => number }[] = [
      {
        label: 'pgrunbook backup-base',
        prepare: async (dir) => {
          await mkdirFor(dir, undefined);
          return `node ${q(CLI)} --procedure backup-base ${conn} --repo file://${dir}/repo --checkpoint fast --json > ${q(dir)}.out`;
        },
        stored: (dir) => du(path.join(dir, 'repo', 'basebackups')),
      },
      {
        label: 'pg_basebackup server-zstd:level=1',
        prepare: async (dir) => {
          await mkdirFor(path.dirname(dir), ids);
          return `pg_basebackup -h ${q(c.host)} -p ${c.port} -U postgres -D ${q(dir)} -Ft -X fetch --checkpoint=fast --compress=server-zstd:level=1 --no-sync`;
        },
        stored: (dir) => du(dir),
      },
      {
        label: 'pgBackRest zst-1 process-max 2',
        prepare: async (dir) => {
          const conf = await pgbackrestStanza(dir, c, ids);
          return `pgbackrest --config=${q(conf)} --stanza=${STANZA} backup --type=full`;
        },
        stored: (dir) => du(path.join(dir, 'repo', 'backup')),
      },
    ];
    const rows: Row[] = variants.map((v) => ({ label: v.label, ms: [], rssKiB: [] }));
    // pg_basebackup and pgBackRest run as postgres; pgrunbook as whoever runs the bench (root is fine: it connects as postgres).
    for (let round = 0; round < opts.rounds + 1; round++) {
      const order = variants.map((_, i) => (i + round) % variants.length);
      for (const i of order) {
        const v = variants[i];
        const dir = path.join(work, `r${round}-${i}`);
        const cmd = await v.prepare(dir);
        syncDisk();
        const r = await timed(cmd, i === 0 ? undefined : ids);
        if (r.code !== 0) throw new Error(`${v.label} failed (exit ${r.code}): ${r.stderr.trim().slice(-800)}`);
        if (round === 0) {
          log(`${v.label}: warm-up ${(r.ms / 1000).toFixed(2)} s`);
        } else {
          rows[i].ms.push(r.ms);
          rows[i].rssKiB.push(r.rssKiB);
          rows[i].bytes = v.stored(dir);
          log(`round ${round}: ${v.label} ${(r.ms / 1000).toFixed(2)} s, ${(r.rssKiB / 1024).toFixed(0)} MiB RSS, ${((rows[i].bytes ?? 0) / 1024 / 1024).toFixed(1)} MiB stored`);
        }
        await rm(dir, { recursive: true, force: true });
        await rm(`${dir}.out`, { force: true });
      }
    }
    const [{ size }] = await c.query<{ size: string }>('SELECT sum(pg_database_size(oid))::bigint AS size FROM pg_database');
    emit(
      table(`Full base backup, pgbench -s ${opts.scale} (${(Number(size) / 1024 / 1024).toFixed(0)} MiB), minimum of ${opts.rounds} interleaved rounds`, rows, 'pgrunbook backup-base', [
        machine(),
        '',
        'Ratio: pgrunbook\'s time ÷ the peer\'s (above 1 is slower). Goals (issue 14): ≤ 0.7x pgBackRest, ≤ 1.3x pg_basebackup server-zstd, stored ≤ 1.1x pgBackRest\'s, peak RSS < 200 MiB.',
      ]),
      opts.markdown,
    );
  } finally {
    await cluster?.remove();
    if (!opts.keep) await rm(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(`bench/base-backup: ${(err as Error).message}`);
  killSandboxClustersSync();
  process.exit(1);
});
