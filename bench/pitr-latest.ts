// Benchmark: point-in-time recovery to `latest` of a running pgbench cluster, the whole way (stop,
// restore, replay, promote, verify). pgrunbook's `--procedure pitr --target latest --target-action
// promote` (the whole CLI run) against `pg_ctl stop -m fast && pgbackrest restore --delta
// --type=default && pg_ctl start`, timed until `pg_is_in_recovery()` is false. Interleaved, minimum
// and median of N rounds. Not part of `npm test`; see bench/README.md.
//
//   npm run build && node --import tsx bench/pitr-latest.ts [--scale 100] [--rounds 5] [--markdown FILE]
//
// Outline: a pgbench cluster archives into both repositories at once (archive_command runs
// pgrunbook wal-push, then pgbackrest archive-push), one full backup by each tool, a few seconds
// of pgbench on top, the last segment archived. The cluster is then stopped and its data
// directory and both repositories are copied (untimed). Before every timed run all three are put
// back from those copies and the cluster is started: each run starts from the same running
// cluster on timeline 1 with archives that hold no timeline an earlier round made. After each
// run the promoted server is checked: pgbench_history must hold what it held when the copy was
// taken, on timeline 2.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { killSandboxClustersSync, type SandboxCluster } from '../src/postgres/sandbox.js';
import { runCommand } from '../src/postgres/osuser.js';
import { defaultServerEnvFile, defaultSpoolDir, walCommandLine } from '../src/procedures/pgrunbook-command.js';
import { lockAlive, readLock } from '../src/wal/spool.js';
import { CLI, MIB, STANZA, cleanEnv, du, emit, log, machine, mkdirFor, parseBenchOptions, pgbackrestStanza, pgbenchCluster, postgresIds, q, requireBuild, syncDisk, table, timed, workDir, type Row } from './physical-common.js';

const USAGE = `usage: node --import tsx bench/pitr-latest.ts [--scale N] [--rounds N] [--markdown FILE] [--keep]
  --scale N        pgbench -i scale (default 100, about 1.5 GB)
  --rounds N       interleaved rounds after one warm-up round; the table shows minimum and median (default 5)
  --markdown FILE  append the table section to FILE
  --keep           keep the work directory (cluster copies, repositories)
Run \`npm run build\` first: the benchmark runs dist/.`;

const PGBENCH_SECONDS = 5;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const sec = (ms: number) => (ms / 1000).toFixed(2);

type EndState = { rows: string; timeline: string; lsn: string; inRecovery: boolean };

async function endState(c: SandboxCluster): Promise<EndState> {
  const [r] = await c.query<{ rows: string; tli: string; lsn: string; rec: boolean }>(
    'SELECT (SELECT count(*) || \' rows, sum(delta) \' || coalesce(sum(delta), 0) FROM pgbench_history) AS rows, substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) AS tli, pg_current_wal_lsn()::text AS lsn, pg_is_in_recovery() AS rec',
  );
  return { rows: r.rows, timeline: String(Number.parseInt(r.tli, 16)), lsn: r.lsn, inRecovery: r.rec };
}

async function main(): Promise<void> {
  const opts = parseBenchOptions(process.argv.slice(2), USAGE);
  requireBuild();
  const ids = await postgresIds();
  const work = await workDir('pgrunbook-bench-pitr-', ids);
  let cluster: SandboxCluster | undefined;
  process.once('SIGINT', () => {
    killSandboxClustersSync();
    process.exit(130);
  });
  try {
    // Archiving is off (a no-op command) during pgbench -i: what the backups need comes after.
    cluster = await pgbenchCluster('bench-pitr', opts.scale, { archive_mode: 'on', archive_command: '/bin/true', wal_keep_size: '0' });
    const c = cluster;
    const bin = c.binDir;
    const repo = await mkdirFor(path.join(work, 'pgrunbook-repo'), ids);
    const repoUrl = `file://${repo}`;
    const conf = await pgbackrestStanza(path.join(work, 'pgbackrest'), c, ids);
    const brRepo = path.join(work, 'pgbackrest', 'repo');
    const archiveCommand = `${walCommandLine('wal-push', repoUrl, {}).command} && pgbackrest --config=${q(conf)} --stanza=${STANZA} archive-push %p`;
    await c.query(`ALTER SYSTEM SET archive_command = '${archiveCommand.replace(/'/g, "''")}'`);
    await c.query('SELECT pg_reload_conf()');

    log('pgrunbook backup-base');
    const bb = await timed(`node ${q(CLI)} --procedure backup-base --host ${q(c.host)} --port ${c.port} --user postgres --repo ${q(repoUrl)} --checkpoint fast --json`, undefined);
    if (bb.code !== 0) throw new Error(`pgrunbook backup-base failed: ${bb.stdout.slice(-1500)}`);
    log('pgbackrest backup --type=full');
    const pb = await timed(`pgbackrest --config=${q(conf)} --stanza=${STANZA} backup --type=full`, ids);
    if (pb.code !== 0) throw new Error(`pgbackrest backup failed: ${pb.stderr}`);

    log(`pgbench -T ${PGBENCH_SECONDS}: WAL after both backups`);
    const bench = await runCommand(path.join(bin, 'pgbench'), ['-T', String(PGBENCH_SECONDS), '-c', '2', '-n', '-h', c.host, '-p', String(c.port), '-U', 'postgres', 'postgres'], { as: ids, env: { LC_ALL: 'C' } });
    if (bench.failed) throw new Error(`pgbench -T failed: ${bench.failure}`);
    const [{ seg }] = await c.query<{ seg: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS seg');
    for (let i = 0; ; i++) {
      const [a] = await c.query<{ w: string | null }>('SELECT last_archived_wal AS w FROM pg_stat_archiver');
      if (a.w && a.w >= seg) break;
      if (i > 6000) throw new Error(`${seg} was not archived within 300 s (see ${c.logFile})`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const expected = await endState(c);
    const [{ size }] = await c.query<{ size: string }>('SELECT sum(pg_database_size(oid))::bigint AS size FROM pg_database');
    // A fast stop archives the segment it ends (the shutdown checkpoint goes into the next one).
    await c.stop('fast');
    for (const [name, dir] of [
      ['pgrunbook', repo],
      ['pgBackRest', brRepo],
    ] as const) {
      const found = spawnSync('find', [dir, '-name', `${seg}*`], { encoding: 'utf8' }).stdout.trim();
      if (!found) throw new Error(`${seg} is not in ${name}'s repository ${dir}`);
    }
    log(`archived through ${seg} in both repositories; expected after recovery: ${expected.rows}, timeline 2`);

    // The starting point of every run, restored untimed before it.
    const saved = { data: path.join(work, 'saved-data'), repo: path.join(work, 'saved-pgrunbook-repo'), brRepo: path.join(work, 'saved-pgbackrest-repo') };
    const cpA = (from: string, to: string) => {
      const r = spawnSync('cp', ['-a', from, to], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`cp -a ${from} ${to}: ${r.stderr}`);
    };
    cpA(c.dataDir, saved.data);
    cpA(repo, saved.repo);
    cpA(brRepo, saved.brRepo);
    const stored = { pgrunbook: du(repo), pgBackRest: du(brRepo) };

    const spool = defaultSpoolDir(c.dataDir);
    const stateDir = await mkdirFor(path.join(work, 'state'), undefined, 0o700);
    const reset = async () => {
      // fast, not immediate: the archiver finishes its command before the repositories are replaced.
      if (existsSync(path.join(c.dataDir, 'postmaster.pid'))) await c.stop('fast');
      // The prefetcher a pgrunbook replay started idles out after a minute: stop it first.
      const owner = readLock(path.join(spool, 'fetch', 'prefetcher.pid'));
      if (owner && lockAlive(owner)) process.kill(owner.pid, 'SIGTERM');
      for (let i = 0; i < 200 && owner && lockAlive(owner); i++) await new Promise((r) => setTimeout(r, 25));
      // pgrunbook moved the data directory aside (never deletes it): those go, untimed.
      const base = path.dirname(c.dataDir);
      for (const e of await readdir(base)) if (e.startsWith(`${path.basename(c.dataDir)}.pgrunbook-`)) await rm(path.join(base, e), { recursive: true, force: true });
      for (const d of [c.dataDir, spool, defaultServerEnvFile(c.dataDir), repo, brRepo]) await rm(d, { recursive: true, force: true, maxRetries: 5 });
      cpA(saved.data, c.dataDir);
      cpA(saved.repo, repo);
      cpA(saved.brRepo, brRepo);
      await c.start();
      syncDisk();
    };

    const psql = `${q(path.join(bin, 'psql'))} -h ${q(c.host)} -p ${c.port} -U postgres -XAtqc 'SELECT pg_is_in_recovery()' postgres`;
    const mark = (what: string) => `echo "MARK ${what} $(date +%s%N)" >&2`;
    const pgbackrestCommand = [
      mark('start'),
      `${q(path.join(bin, 'pg_ctl'))} -D ${q(c.dataDir)} -m fast -w -t 600 stop >/dev/null`,
      mark('stopped'),
      `pgbackrest --config=${q(conf)} --stanza=${STANZA} restore --delta --type=default`,
      mark('restored'),
      `${q(path.join(bin, 'pg_ctl'))} -D ${q(c.dataDir)} -l ${q(c.logFile)} -w -t 600 start >/dev/null`,
      mark('started'),
      `n=0; until [ "$(${psql} 2>/dev/null)" = f ]; do n=$((n+1)); [ $n -gt 30000 ] && exit 9; sleep 0.02; done`,
      mark('promoted'),
    ].join(' && ');
    const pgrunbookCommand = `node ${q(CLI)} --procedure pitr --host ${q(c.host)} --port ${c.port} --user postgres --pgdata ${q(c.dataDir)} --repo ${q(repoUrl)} --target latest --target-action promote --replay-timeout 600 --confirm ${q(path.basename(c.dataDir))} --yes --json`;

    const PGRUNBOOK = 'pgrunbook pitr --target latest';
    const variants = [
      { label: PGRUNBOOK, short: 'pgrunbook', command: pgrunbookCommand, as: undefined, env: { ...cleanEnv(undefined), PGRUNBOOK_STATE_DIR: stateDir } },
      { label: 'pgBackRest stop + restore --delta + start', short: 'pgBackRest', command: pgbackrestCommand, as: ids, env: cleanEnv(ids) },
    ];
    const rows: Row[] = variants.map((v) => ({ label: v.label, ms: [], rssKiB: [] }));
    rows[0].bytes = stored.pgrunbook;
    rows[1].bytes = stored.pgBackRest;
    const steps = new Map<string, number[]>(); // pgrunbook's step timings, per step id
    const phases = new Map<string, number[]>(); // pgBackRest's, from the shell's marks
    const ends: string[] = [];
    for (let round = 0; round < opts.rounds + 1; round++) {
      const order = variants.map((_, i) => (i + round) % variants.length);
      for (const i of order) {
        const v = variants[i];
        await reset();
        const spawnedAt = Date.now();
        const r = await timed(v.command, v.as, v.env);
        const what = round === 0 ? 'warm-up' : `round ${round}`;
        if (i === 0) {
          // Its events, with their times, stay in the work directory (--keep) for a closer look.
          await writeFile(path.join(work, `pitr-${round}.jsonl`), r.stdout);
          const events = r.stdout
            .split('\n')
            .filter((l) => l.startsWith('{'))
            .map((l) => JSON.parse(l) as { type: string; time: string; stepId?: string; durationMs?: number; status?: string; summary?: { error?: string; hint?: string; status?: string } });
          const end = events.find((e) => e.type === 'run-end');
          if (r.code !== 0) {
            const failed = events.filter((e) => e.type === 'step-end' && e.status !== 'done').map((e) => `${e.stepId}: ${e.status}`);
            throw new Error(`pgrunbook pitr exited ${r.code} (${what}): ${JSON.stringify(end?.summary ?? {}).slice(0, 3000)}; steps not done: ${failed.join(', ') || 'none'}; stderr: ${r.stderr.trim().slice(-1500)}`);
          }
          if (round > 0) {
            const start = events.find((e) => e.type === 'run-start');
            const add = (k: string, ms: number) => steps.set(k, [...(steps.get(k) ?? []), ms]);
            if (start) add('(process start to run-start)', Date.parse(start.time) - spawnedAt);
            for (const e of events) if (e.type === 'step-end' && e.stepId) add(e.stepId, e.durationMs ?? 0);
            if (end) add('(run-end to exit)', spawnedAt + r.ms - Date.parse(end.time));
          }
        } else {
          if (r.code !== 0) throw new Error(`${v.label} failed (exit ${r.code}, ${what}): ${(r.stderr || r.stdout).trim().slice(-1500)}`);
          if (round > 0) {
            const marks = [...r.stderr.matchAll(/MARK (\w+) (\d+)/g)].map((m) => ({ at: Number(m[2]) / 1e6, what: m[1] }));
            for (let k = 1; k < marks.length; k++) phases.set(marks[k].what, [...(phases.get(marks[k].what) ?? []), marks[k].at - marks[k - 1].at]);
          }
        }
        const got = await endState(c);
        ends.push(`${what} ${v.short}: ${got.rows}, timeline ${got.timeline}, ${got.lsn}`);
        if (got.inRecovery || got.rows !== expected.rows || got.timeline !== '2') {
          throw new Error(`${v.label} (${what}) did not end where expected: ${got.inRecovery ? 'still in recovery, ' : ''}${got.rows} on timeline ${got.timeline} at ${got.lsn}, expected ${expected.rows} on timeline 2`);
        }
        log(`${what}: ${v.label} ${sec(r.ms)} s, ${(r.rssKiB / 1024).toFixed(0)} MiB RSS; ${got.rows}, timeline ${got.timeline}, ${got.lsn}`);
        if (round > 0) {
          rows[i].ms.push(r.ms);
          rows[i].rssKiB.push(r.rssKiB);
        }
      }
    }
    await c.stop('immediate').catch(() => undefined);

    const [ours, peer] = rows;
    const ratioMin = Math.min(...ours.ms) / Math.min(...peer.ms);
    const ratioMed = median(ours.ms) / median(peer.ms);
    const md = [
      table(`PITR to latest of a running cluster, pgbench -s ${opts.scale} (${(Number(size) / MIB).toFixed(0)} MiB; data directory with pg_wal ${(du(saved.data) / MIB).toFixed(0)} MiB), ${opts.rounds} interleaved rounds`, rows, PGRUNBOOK, [
        machine(),
        '',
        `Each run starts from the same running cluster (data directory and both repositories put back from copies, untimed) holding one full backup by each tool and ${PGBENCH_SECONDS} s of pgbench after it; timed from spawn to exit (pgrunbook: stop, stage, replay, verify, promote, report) and from \`pg_ctl stop\` to \`pg_is_in_recovery()\` = false (pgBackRest). Every run was checked to end on timeline 2 with pgbench_history as it was (${expected.rows}). Stored MiB: the repository with its WAL.`,
      ]).trimEnd(),
      '',
      `Ratio pgrunbook ÷ pgBackRest: **${ratioMin.toFixed(2)}x** (minimum), ${ratioMed.toFixed(2)}x (median). Goal (issue 14): at most 1.0x: **${ratioMin <= 1 ? 'MET' : 'NOT MET'}**.`,
      '',
      `pgrunbook's steps (median s): ${[...steps].map(([k, xs]) => `${k} ${sec(median(xs))}`).join(', ')}.`,
      `pgBackRest's phases (median s): ${[...phases].map(([k, xs]) => `to ${k} ${sec(median(xs))}`).join(', ')}.`,
      '',
    ].join('\n');
    log(`where each run ended:\n  ${ends.join('\n  ')}`);
    emit(md, opts.markdown);
  } finally {
    // With --keep, the server's log (both tools' recoveries) goes with the run's events.
    if (opts.keep && cluster && existsSync(cluster.logFile)) await copyFile(cluster.logFile, path.join(work, 'server.log')).catch(() => undefined);
    await cluster?.remove();
    if (!opts.keep) await rm(work, { recursive: true, force: true });
    else log(`kept ${work}`);
  }
}

main().catch((err) => {
  console.error(`bench/pitr-latest: ${(err as Error).message}`);
  killSandboxClustersSync();
  process.exit(1);
});
