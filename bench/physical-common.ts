// What bench/base-backup.ts and bench/restore.ts share: options (--scale, --rounds, --markdown),
// a pgbench sandbox cluster, pgBackRest stanzas with their own config files, commands timed with
// /usr/bin/time (wall time and the peak RSS of the largest process), and the markdown table.
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync } from 'node:fs';
import { chown, mkdir, mkdtemp, realpath, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { isRoot, lookupUser, runCommand, type OsIds } from '../src/postgres/osuser.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const CLI = path.join(ROOT, 'dist', 'cli.js');
export const STANZA = 'bench';
export const MIB = 1024 * 1024;

export type BenchOptions = { scale: number; rounds: number; markdown?: string; keep: boolean };

export function parseBenchOptions(argv: string[], usage: string, defaults = { scale: 100, rounds: 5 }): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: { scale: { type: 'string' }, rounds: { type: 'string' }, markdown: { type: 'string' }, keep: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  const int = (name: string, v: string | undefined, d: number) => {
    const n = v === undefined ? d : Number(v);
    if (!Number.isInteger(n) || n < 1) {
      console.error(`--${name} must be a whole number >= 1, got "${v}"\n${usage}`);
      process.exit(2);
    }
    return n;
  };
  return { scale: int('scale', values.scale, defaults.scale), rounds: int('rounds', values.rounds, defaults.rounds), markdown: values.markdown, keep: Boolean(values.keep) };
}

export function log(msg: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

export const q = (s: string): string => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

export function requireBuild(): void {
  if (!existsSync(CLI)) {
    console.error(`${CLI} is missing: run \`npm run build\` first (the benchmark times the built CLI)`);
    process.exit(2);
  }
}

export async function postgresIds(): Promise<OsIds | undefined> {
  if (!isRoot()) return undefined;
  const u = await lookupUser('postgres');
  return { uid: u.uid, gid: u.gid, home: u.home };
}

export async function workDir(prefix: string, ids: OsIds | undefined): Promise<string> {
  const work = await mkdtemp(path.join(await realpath(os.tmpdir()), prefix));
  if (ids) await chown(work, ids.uid, ids.gid);
  return work;
}

export async function mkdirFor(dir: string, ids: OsIds | undefined, mode = 0o750): Promise<string> {
  await mkdir(dir, { recursive: true, mode });
  if (ids) await chown(dir, ids.uid, ids.gid);
  return dir;
}

/** A sandbox cluster with `pgbench -i -s scale` loaded and checkpointed. */
export async function pgbenchCluster(name: string, scale: number, settings: Record<string, string> = {}): Promise<SandboxCluster> {
  const cluster = await createSandboxCluster({ name, settings: { max_wal_senders: '4', wal_level: 'replica', ...settings } });
  const ids = await postgresIds();
  log(`pgbench -i -s ${scale}`);
  const init = await runCommand(path.join(cluster.binDir, 'pgbench'), ['-i', '-s', String(scale), '-q', '-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', 'postgres'], { as: ids, env: { LC_ALL: 'C' } });
  if (init.failed) throw new Error(`pgbench -i failed: ${init.failure}`);
  await cluster.query('CHECKPOINT');
  const [{ size }] = await cluster.query<{ size: string }>('SELECT sum(pg_database_size(oid))::bigint AS size FROM pg_database');
  log(`cluster: ${(Number(size) / MIB).toFixed(0)} MiB in ${cluster.dataDir}`);
  return cluster;
}

/** A pgBackRest config file (own repository, zst, process-max 2), and its stanza created. */
export async function pgbackrestStanza(dir: string, cluster: SandboxCluster, ids: OsIds | undefined, extra: string[] = []): Promise<string> {
  await mkdirFor(dir, ids);
  for (const d of ['repo', 'log', 'lock', 'spool']) await mkdirFor(path.join(dir, d), ids);
  const conf = path.join(dir, 'pgbackrest.conf');
  await writeFile(
    conf,
    [
      '[global]',
      `repo1-path=${dir}/repo`,
      'compress-type=zst',
      'compress-level=1',
      'process-max=2',
      'start-fast=y',
      'archive-check=n',
      `log-path=${dir}/log`,
      `lock-path=${dir}/lock`,
      `spool-path=${dir}/spool`,
      'log-level-console=warn',
      'log-level-stderr=warn',
      'log-level-file=off',
      ...extra,
      '',
      `[${STANZA}]`,
      `pg1-path=${cluster.dataDir}`,
      `pg1-socket-path=${cluster.host}`,
      `pg1-port=${cluster.port}`,
      'pg1-user=postgres',
      '',
    ].join('\n'),
  );
  if (ids) await chown(conf, ids.uid, ids.gid);
  const r = await timed(`pgbackrest --config=${q(conf)} --stanza=${STANZA} stanza-create`, ids);
  if (r.code !== 0) throw new Error(`pgbackrest stanza-create failed: ${r.stderr.trim()}`);
  return conf;
}

export type Timed = { ms: number; rssKiB: number; code: number | null; stdout: string; stderr: string };

/**
 * `command` through /bin/sh under /usr/bin/time: wall time from spawn to exit, and the peak RSS of
 * the largest single process it ran (GNU time's %M, from the children's rusage).
 */
export function timed(command: string, ids: OsIds | undefined, env: NodeJS.ProcessEnv = cleanEnv(ids)): Promise<Timed> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    const t0 = process.hrtime.bigint();
    const child = spawn('/usr/bin/time', ['-f', 'MAXRSS %M', '/bin/sh', '-c', command], { env, stdio: ['ignore', 'pipe', 'pipe'], ...(ids ? { uid: ids.uid, gid: ids.gid } : {}), cwd: '/' });
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      const m = /MAXRSS (\d+)\s*$/.exec(stderr);
      resolve({ ms, rssKiB: m ? Number(m[1]) : Number.NaN, code, stdout, stderr: stderr.replace(/MAXRSS \d+\s*$/, '') });
    });
  });
}

export function cleanEnv(ids: OsIds | undefined): NodeJS.ProcessEnv {
  return { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: ids?.home ?? os.homedir(), LANG: 'C.UTF-8' };
}

export function du(dir: string): number {
  const r = spawnSync('du', ['-sb', dir], { encoding: 'utf8' });
  return Number(r.stdout.split('\t')[0]) || 0;
}

export function syncDisk(): void {
  spawnSync('sync', { stdio: 'ignore' });
}

export type Row = { label: string; ms: number[]; rssKiB: number[]; bytes?: number; note?: string };

/** The markdown table: minimum and median wall time, ratio of `reference` to each row, peak RSS, stored size. */
export function table(title: string, rows: Row[], reference: string, header: string[]): string {
  const min = (xs: number[]) => Math.min(...xs);
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const ref = rows.find((r) => r.label === reference);
  const lines = [
    `### ${title}`,
    '',
    ...header,
    '',
    `| tool | min s | median s | ${reference} ÷ this | peak RSS MiB (largest process) | stored MiB |`,
    '|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const ratio = ref && r !== ref ? `${(min(ref.ms) / min(r.ms)).toFixed(2)}x` : '';
    lines.push(
      `| ${r.label}${r.note ? ` (${r.note})` : ''} | ${(min(r.ms) / 1000).toFixed(2)} | ${(med(r.ms) / 1000).toFixed(2)} | ${ratio} | ${(Math.max(...r.rssKiB) / 1024).toFixed(0)} | ${r.bytes !== undefined ? (r.bytes / MIB).toFixed(1) : ''} |`,
    );
  }
  lines.push('');
  return lines.join('\n');
}

export function machine(): string {
  const pg = spawnSync('pg_basebackup', ['--version'], { encoding: 'utf8' }).stdout.trim();
  const br = spawnSync('pgbackrest', ['version'], { encoding: 'utf8' }).stdout.trim();
  const zstd = spawnSync('zstd', ['--version'], { encoding: 'utf8' }).stdout.trim().replace(/^\*+\s*|\s*\*+$/g, '');
  return `${new Date().toISOString()}, ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, Node ${process.version}, ${pg}, ${br}, ${zstd}, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`;
}

export function emit(markdown: string, file: string | undefined): void {
  process.stdout.write(`${markdown}\n`);
  if (file) appendFileSync(file, `${markdown}\n`);
}
