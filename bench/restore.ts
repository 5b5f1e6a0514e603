// Benchmark: restoring a full base backup of a pgbench cluster into an empty directory. pgrunbook's
// unpack (what pitr's preflight does to stage the backup: get with SHA-256, zstd -d, tar -x, fsync
// every file) vs `pgbackrest restore` (zst, process-max 2) into a new pg1-path, interleaved, the
// minimum of N rounds. Not part of `npm test`; see bench/README.md.
//
//   npm run build && node --import tsx bench/restore.ts [--scale 100] [--rounds 5] [--markdown FILE]
//
// The pgrunbook row runs bench/restore-unpack.ts in its own node process (its RSS is measured
// alone): the same code pitr runs (src/restore/unpack.ts), without pitr's server steps.
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { killSandboxClustersSync, type SandboxCluster } from '../src/postgres/sandbox.js';
import { CLI, STANZA, emit, log, machine, mkdirFor, parseBenchOptions, pgbackrestStanza, pgbenchCluster, postgresIds, q, requireBuild, syncDisk, table, timed, workDir, type Row } from './physical-common.js';

const USAGE = `usage: node --import tsx bench/restore.ts [--scale N] [--rounds N] [--markdown FILE] [--keep]
  --scale N        pgbench -i scale (default 100, about 1.5 GB)
  --rounds N       interleaved rounds; the table shows the minimum (default 5)
  --markdown FILE  append the table section to FILE
Run \`npm run build\` first: the benchmark runs dist/.`;

const UNPACK = path.join(path.dirname(fileURLToPath(import.meta.url)), 'restore-unpack.mjs');

async function main(): Promise<void> {
  const opts = parseBenchOptions(process.argv.slice(2), USAGE);
  requireBuild();
  const ids = await postgresIds();
  const work = await workDir('pgrunbook-bench-restore-', ids);
  let cluster: SandboxCluster | undefined;
  process.once('SIGINT', () => {
    killSandboxClustersSync();
    process.exit(130);
  });
  try {
    cluster = await pgbenchCluster('bench-restore', opts.scale);
    const c = cluster;
    // One backup with each tool: the input of every round.
    const repo = path.join(work, 'pgrunbook-repo');
    log('pgrunbook backup-base');
    const bb = await timed(`node ${q(CLI)} --procedure backup-base --host ${q(c.host)} --port ${c.port} --user postgres --repo file://${repo} --checkpoint fast --json`, undefined);
    if (bb.code !== 0) throw new Error(`pgrunbook backup-base failed: ${bb.stdout.slice(-1500)}`);
    log('pgbackrest backup');
    const conf = await pgbackrestStanza(path.join(work, 'pgbackrest'), c, ids);
    const pb = await timed(`pgbackrest --config=${q(conf)} --stanza=${STANZA} backup --type=full`, ids);
    if (pb.code !== 0) throw new Error(`pgbackrest backup failed: ${pb.stderr}`);

    const variants: { label: string; command: (dir: string) => string; as?: typeof ids }[] = [
      { label: 'pgrunbook unpack (pitr staging)', command: (dir) => `node ${q(UNPACK)} ${q(`file://${repo}`)} ${q(dir)}` },
      { label: 'pgBackRest restore zst process-max 2', command: (dir) => `pgbackrest --config=${q(conf)} --stanza=${STANZA} --pg1-path=${q(dir)} restore --type=immediate`, as: ids },
    ];
    const rows: Row[] = variants.map((v) => ({ label: v.label, ms: [], rssKiB: [] }));
    for (let round = 0; round < opts.rounds + 1; round++) {
      const order = variants.map((_, i) => (i + round) % variants.length);
      for (const i of order) {
        const v = variants[i];
        const dir = path.join(work, `r${round}-${i}`);
        await mkdirFor(dir, ids, 0o700);
        syncDisk();
        const r = await timed(v.command(dir), v.as);
        if (r.code !== 0) throw new Error(`${v.label} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().slice(-800)}`);
        if (round === 0) log(`${v.label}: warm-up ${(r.ms / 1000).toFixed(2)} s`);
        else {
          rows[i].ms.push(r.ms);
          rows[i].rssKiB.push(r.rssKiB);
          log(`round ${round}: ${v.label} ${(r.ms / 1000).toFixed(2)} s, ${(r.rssKiB / 1024).toFixed(0)} MiB RSS`);
        }
        await rm(dir, { recursive: true, force: true });
      }
    }
    const [{ size }] = await c.query<{ size: string }>('SELECT sum(pg_database_size(oid))::bigint AS size FROM pg_database');
    emit(
      table(`Restore of a full base backup into an empty directory, pgbench -s ${opts.scale} (${(Number(size) / 1024 / 1024).toFixed(0)} MiB), minimum of ${opts.rounds} interleaved rounds`, rows, 'pgrunbook unpack (pitr staging)', [
        machine(),
        '',
        "Ratio: pgrunbook's time ÷ the peer's (above 1 is slower). Goal (issue 14): the unpack ≤ 1.0x pgBackRest restore, peak RSS < 200 MiB. Both fsync what they write.",
      ]),
      opts.markdown,
    );
  } finally {
    await cluster?.remove();
    if (!opts.keep) await rm(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(`bench/restore: ${(err as Error).message}`);
  killSandboxClustersSync();
  process.exit(1);
});
