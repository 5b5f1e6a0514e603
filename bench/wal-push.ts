// Benchmark: archiving real 16 MiB WAL segments with `pgrunbook wal-push`, `cp` and pgBackRest.
//
//   npm run build && node --import tsx bench/wal-push.ts [--segments 32]
//
// Not part of `npm test`. See bench/README.md for what it measures and how to read the output.
//
// Outline:
//   1. a sandbox cluster (archive_mode=on, archive_command='cp %p <dir>/%f') runs pgbench until
//      N segments are archived: those real segment files are the input of every tool;
//   2. pgBackRest stanzas are created for the cluster (it checks the segments' system identifier),
//      then the cluster is stopped so that autovacuum and checkpoints do not disturb the timings;
//   3. every tool archives the same segments into a fresh destination of its own, one process per
//      segment, run through `/bin/sh -c` as the postgres OS user in the data directory, as
//      PostgreSQL's archiver runs archive_command. Tools are interleaved segment by segment, in an
//      order that rotates, and the disk is synced (untimed) between invocations, so that neither
//      page cache nor another tool's pending writes favour one tool;
//   4. per-segment wall time (process spawn included) -> median, p90, MiB/s; stored sizes.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { chmod, chown, copyFile, mkdir, mkdtemp, open, readdir, readFile, realpath, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import zlib from 'node:zlib';
import { createSandboxCluster, killSandboxClustersSync, type SandboxCluster } from '../src/postgres/sandbox.js';
import { isRoot, lookupUser, runCommand, type OsIds } from '../src/postgres/osuser.js';

const SEGMENT_SIZE = 16 * 1024 * 1024;
const MIB = 1024 * 1024;
const SEGMENT_NAME = /^[0-9A-F]{24}$/;
const TARGET_MEDIAN_MS = 150;
const STANZA = 'bench';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');

// ---------------------------------------------------------------------------------------------
// options

const USAGE = `usage: node --import tsx bench/wal-push.ts [options]
  --segments N        WAL segments to archive with each tool (default 32)
  --scale N           pgbench -i scale factor (default 20)
  --deadline SEC      give up making segments after this many seconds (default 900)
  --no-pgbackrest     skip pgBackRest (it is installed with apt-get when missing, as root)
  --keep              keep the work directory (segments, destinations) and print its path
  -h, --help          this text
Run \`npm run build\` first: the benchmark runs dist/cli.js.`;

interface Options {
  segments: number;
  scale: number;
  deadlineSec: number;
  pgbackrest: boolean;
  keep: boolean;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      segments: { type: 'string' },
      scale: { type: 'string' },
      deadline: { type: 'string' },
      'no-pgbackrest': { type: 'boolean' },
      keep: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const int = (name: string, v: string | undefined, dflt: number, min: number): number => {
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got "${v}"`);
    return n;
  };
  return {
    segments: int('segments', values.segments, 32, 2),
    scale: int('scale', values.scale, 20, 1),
    deadlineSec: int('deadline', values.deadline, 900, 10),
    pgbackrest: !values['no-pgbackrest'],
    keep: Boolean(values.keep),
  };
}

class UsageError extends Error {}

// ---------------------------------------------------------------------------------------------
// small helpers

const q = (s: string): string => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

function log(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

/** Linear-interpolated percentile (numpy's default) of an unsorted sample. */
function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const pos = (s.length - 1) * p;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

const median = (xs: number[]): number => percentile(xs, 0.5);
const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

async function mkdirFor(dir: string, ids: OsIds | undefined, mode = 0o750): Promise<string> {
  await mkdir(dir, { recursive: true, mode });
  await chmod(dir, mode);
  if (ids) await chown(dir, ids.uid, ids.gid);
  return dir;
}

/** Total size of regular files under dir whose name passes `keep`. */
async function bytesUnder(dir: string, keep: (name: string) => boolean): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile() || !keep(e.name)) continue;
    files++;
    bytes += (await stat(path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name))).size;
  }
  return { files, bytes };
}

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;

/**
 * CPU time of this process's reaped children (cutime + cstime from /proc/self/stat), in ms.
 * Children of children count once their parent waited for them, so a `sh -c` invocation brings
 * in its whole process tree. Clock-tick resolution (10 ms) per reading; summed over many
 * invocations the mean is accurate to well under a millisecond.
 */
function childCpuMs(): number {
  try {
    const st = readFileSync('/proc/self/stat', 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' '); // f[0] is field 3 (state)
    return ((Number(f[13]) + Number(f[14])) * 1000) / CLK_TCK; // fields 16, 17
  } catch {
    return NaN;
  }
}

function syncDisk(): void {
  spawnSync('sync', { stdio: 'ignore' });
}

interface Timed {
  ms: number;
  /** CPU time (user + sys) of the process and everything it waited for, in ms; NaN when unknown. */
  cpuMs: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Run a shell command the way PostgreSQL's archiver runs archive_command (system(): /bin/sh -c,
 * as the server's OS user, in the data directory) and time it from spawn to exit.
 */
function runTimed(command: string, ids: OsIds | undefined, cwd: string, env: NodeJS.ProcessEnv): Promise<Timed> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    let exitAt = 0n;
    let code: number | null = null;
    let signal: NodeJS.Signals | null = null;
    const cpu0 = childCpuMs();
    const t0 = process.hrtime.bigint();
    const child = spawn('/bin/sh', ['-c', command], {
      cwd,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(ids ? { uid: ids.uid, gid: ids.gid } : {}),
    });
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('exit', (c, s) => {
      exitAt = process.hrtime.bigint();
      code = c;
      signal = s;
    });
    child.on('close', () => {
      if (exitAt === 0n) exitAt = process.hrtime.bigint();
      resolve({ ms: Number(exitAt - t0) / 1e6, cpuMs: childCpuMs() - cpu0, code, signal, stdout, stderr });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// prerequisites

function checkBuild(): void {
  if (!existsSync(CLI)) {
    throw new UsageError(`${path.relative(process.cwd(), CLI) || CLI} is missing: run \`npm run build\` first (the benchmark times the built CLI).`);
  }
  // tsc -p tsconfig.build.json maps src/a/b.ts(x) to dist/a/b.js (and only rewrites what changed).
  const stale: string[] = [];
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.tsx?$/.test(e.name) && !e.name.endsWith('.d.ts')) {
        const out = path.join(ROOT, 'dist', path.relative(path.join(ROOT, 'src'), p)).replace(/\.tsx?$/, '.js');
        if (!existsSync(out) || statSync(out).mtimeMs < statSync(p).mtimeMs) stale.push(path.relative(ROOT, p));
      }
    }
  };
  walk(path.join(ROOT, 'src'));
  if (stale.length > 0) {
    // What `wal-push` loads: cli.ts, src/wal/, src/storage/ (the local driver and its helpers).
    const onPath = stale.filter((f) => /^src\/(cli\.ts|wal\/|storage\/)/.test(f));
    log(
      `WARNING: dist/ is older than ${stale.length} source file(s) (${stale.slice(0, 3).join(', ')}${stale.length > 3 ? ', ...' : ''}), ` +
        (onPath.length > 0 ? `${onPath.length} of them on wal-push's path (${onPath.join(', ')})` : "none of them on wal-push's path") +
        '; run `npm run build` to time the current code',
    );
  } else {
    log('dist/ is up to date with src/');
  }
}

function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${q(cmd)}`], { encoding: 'utf8' });
  const out = r.stdout.trim();
  return r.status === 0 && out ? out : undefined;
}

/** pgBackRest's path, installing Debian's package when missing (as root). Undefined (with a reason) if unavailable. */
function ensurePgBackRest(): { bin?: string; why?: string } {
  let bin = which('pgbackrest');
  if (bin) return { bin };
  if (!isRoot()) return { why: 'pgbackrest is not installed and we are not root (apt-get install -y pgbackrest)' };
  log('pgbackrest not found: apt-get update -qq && apt-get install -y -qq pgbackrest');
  const r = spawnSync('sh', ['-c', 'apt-get update -qq && apt-get install -y -qq pgbackrest'], {
    encoding: 'utf8',
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  bin = which('pgbackrest');
  if (!bin) return { why: `installing pgbackrest failed (exit ${r.status}): ${(r.stderr || r.stdout).trim().split('\n').slice(-5).join(' | ')}` };
  return { bin };
}

// ---------------------------------------------------------------------------------------------
// real WAL segments

interface ArchiverStats {
  archived: number;
  failed: number;
  lastFailed: string | null;
}

async function archiverStats(cluster: SandboxCluster): Promise<ArchiverStats> {
  const [r] = await cluster.query<{ archived_count: string; failed_count: string; last_failed_wal: string | null }>(
    'SELECT archived_count, failed_count, last_failed_wal FROM pg_stat_archiver',
  );
  return { archived: Number(r.archived_count), failed: Number(r.failed_count), lastFailed: r.last_failed_wal };
}

async function readyCount(cluster: SandboxCluster): Promise<number> {
  const names = await readdir(path.join(cluster.dataDir, 'pg_wal', 'archive_status'));
  return names.filter((n) => n.endsWith('.ready')).length;
}

/**
 * Run pgbench against the sandbox until `n` segments are archived (pg_stat_archiver), or fail at
 * the deadline. Returns the archived segments' names (sorted) and the first segment written by
 * the transaction phase (after pgbench -i).
 */
async function makeSegments(
  cluster: SandboxCluster,
  archiveDir: string,
  n: number,
  scale: number,
  deadline: number,
  ids: OsIds | undefined,
): Promise<{ names: string[]; firstTxSegment: string }> {
  const pgbench = path.join(cluster.binDir, 'pgbench');
  const conn = ['-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres'];
  const env = { PGHOST: cluster.host, PGPORT: String(cluster.port), LC_ALL: 'C' };
  const remainingMs = () => deadline - Date.now();

  log(`pgbench -i -s ${scale}`);
  const init = await runCommand(pgbench, ['-i', '-s', String(scale), '-q', ...conn, 'postgres'], {
    as: ids,
    env,
    timeoutMs: Math.max(1000, remainingMs()),
  });
  if (init.failed) throw new Error(`pgbench -i failed: ${init.failure}`);
  const [{ seg }] = await cluster.query<{ seg: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS seg');
  const firstTxSegment = seg;

  let rounds = 0;
  for (;;) {
    const s = await archiverStats(cluster);
    if (s.failed > 0) throw new Error(`archive_command failed ${s.failed} time(s) (last: ${s.lastFailed}); see ${cluster.logFile}`);
    if (s.archived >= n) break;
    if (remainingMs() <= 0) {
      throw new Error(`only ${s.archived} of ${n} segments archived after the deadline; raise --deadline or lower --segments`);
    }
    if (s.archived + (await readyCount(cluster)) >= n) {
      // Enough segments are complete; the archiver is catching up. Poll (not a fixed wait).
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    const secs = Math.max(1, Math.min(5, Math.floor(remainingMs() / 1000)));
    rounds++;
    const tx = await runCommand(pgbench, ['-n', '-c', '4', '-j', '2', '-T', String(secs), ...conn, 'postgres'], {
      as: ids,
      env,
      timeoutMs: secs * 1000 + 60_000,
    });
    if (tx.failed) throw new Error(`pgbench -T failed: ${tx.failure}`);
    if (rounds === 1 || rounds % 5 === 0) log(`pgbench -T ${secs} (round ${rounds}); archived so far: ${(await archiverStats(cluster)).archived}/${n}`);
  }
  const names = (await readdir(archiveDir)).filter((f) => SEGMENT_NAME.test(f)).sort();
  return { names, firstTxSegment };
}

// ---------------------------------------------------------------------------------------------
// tools

interface Variant {
  label: string;
  /** Baselines do not archive anything; they show fixed costs. */
  baseline: boolean;
  /** Exit code that means it worked (default 0). */
  expectCode?: number;
  /** The shell command for one segment (absolute path, name), given this variant's destination. */
  command(dest: string, segPath: string, name: string): string;
  /** Extra set-up of a fresh destination (pgBackRest: the stanza). */
  prepare?(dest: string): Promise<void>;
  /** Stored copies of the segments in dest: count and bytes (data files only, no metadata). */
  stored?(dest: string): Promise<{ files: number; bytes: number }>;
}

interface Result {
  variant: Variant;
  ms: number[];
  cpuMs: number[];
  stored?: { files: number; bytes: number };
}

function pgrunbookVariant(compress: 'gzip' | 'none'): Variant {
  const flags = compress === 'gzip' ? '--compress gzip --compress-level 1' : '--compress none';
  return {
    label: compress === 'gzip' ? 'pgrunbook wal-push gzip-1' : 'pgrunbook wal-push none',
    baseline: false,
    command: (dest, seg) => `${q(process.execPath)} ${q(CLI)} wal-push --repo ${q(`file://${dest}`)} ${flags} ${q(seg)}`,
    stored: (dest) => bytesUnder(path.join(dest, 'wal'), (f) => SEGMENT_NAME.test(f.replace(/\.gz$/, ''))),
  };
}

const cpVariant: Variant = {
  label: 'cp',
  baseline: false,
  command: (dest, seg, name) => `cp ${q(seg)} ${q(`${dest}/${name}`)}`,
  stored: (dest) => bytesUnder(dest, (f) => SEGMENT_NAME.test(f)),
};

const cpSyncVariant: Variant = {
  label: 'cp + sync',
  baseline: false,
  // `sync FILE DIR` fsyncs the copy and its directory entry (coreutils >= 8.24).
  command: (dest, seg, name) => `cp ${q(seg)} ${q(`${dest}/${name}`)} && sync ${q(`${dest}/${name}`)} ${q(dest)}`,
  stored: (dest) => bytesUnder(dest, (f) => SEGMENT_NAME.test(f)),
};

function pgbackrestVariant(
  bin: string,
  compress: 'lz4' | 'gz',
  work: string,
  cluster: SandboxCluster,
  ids: OsIds | undefined,
  env: NodeJS.ProcessEnv,
): Variant {
  const confOf = (dest: string) => `${dest}.conf`;
  return {
    label: `pgbackrest archive-push ${compress === 'lz4' ? 'lz4' : 'gz-1'}`,
    baseline: false,
    command: (dest, seg) => `${q(bin)} --config=${q(confOf(dest))} --stanza=${STANZA} archive-push ${q(seg)}`,
    async prepare(dest) {
      const side = await mkdirFor(path.join(work, 'pgbackrest', path.basename(dest)), ids);
      for (const d of ['log', 'lock', 'spool']) await mkdirFor(path.join(side, d), ids);
      const conf = [
        '[global]',
        `repo1-path=${dest}`,
        `compress-type=${compress}`,
        'compress-level=1',
        'archive-async=n',
        `log-path=${side}/log`,
        `lock-path=${side}/lock`,
        `spool-path=${side}/spool`,
        'log-level-console=warn',
        'log-level-stderr=warn',
        'log-level-file=off',
        '',
        `[${STANZA}]`,
        `pg1-path=${cluster.dataDir}`,
        `pg1-socket-path=${cluster.host}`,
        `pg1-port=${cluster.port}`,
        'pg1-user=postgres',
        '',
      ].join('\n');
      await writeFile(confOf(dest), conf, { mode: 0o640 });
      if (ids) await chown(confOf(dest), ids.uid, ids.gid);
      const r = await runTimed(`${q(bin)} --config=${q(confOf(dest))} --stanza=${STANZA} stanza-create`, ids, cluster.dataDir, env);
      if (r.code !== 0) throw new Error(`pgbackrest stanza-create failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
    },
    // archive/<stanza>/<pg version>-<id>/<first 16 hex>/<segment>-<sha1>.<ext>
    stored: (dest) => bytesUnder(path.join(dest, 'archive'), (f) => /^[0-9A-F]{24}-[0-9a-f]{40}(\.\w+)?$/.test(f)),
  };
}

function baselineVariant(label: string, command: string, expectCode = 0): Variant {
  return { label, baseline: true, command: () => command, expectCode };
}

// ---------------------------------------------------------------------------------------------
// in-process costs of the pieces of a push (same Node as the CLI), for the "where time goes" notes

const PIECES = ['read', 'sha256 raw', 'gzip -1', 'sha256 gz x2', 'write+fsync gz'] as const;
type Piece = (typeof PIECES)[number];

/**
 * What `wal-push --compress gzip` does with one segment, timed piece by piece in this process:
 * read it, SHA-256 it, gzip it (level 1, libuv thread pool), SHA-256 the result twice (the
 * metadata's checksum and the store's own), write and fsync it. One record per segment.
 */
async function inProcessCosts(segPaths: string[], scratch: string): Promise<Record<Piece, number>[]> {
  const gzip = promisify(zlib.gzip);
  const out: Record<Piece, number>[] = [];
  for (const [i, p] of segPaths.entries()) {
    const rec = {} as Record<Piece, number>;
    const time = async <T>(k: Piece, f: () => Promise<T> | T): Promise<T> => {
      const t0 = process.hrtime.bigint();
      const r = await f();
      rec[k] = Number(process.hrtime.bigint() - t0) / 1e6;
      return r;
    };
    const raw = await time('read', () => readFile(p));
    await time('sha256 raw', () => createHash('sha256').update(raw).digest('hex'));
    const gz = await time('gzip -1', () => gzip(raw, { level: 1 }));
    await time('sha256 gz x2', () => {
      createHash('sha256').update(gz).digest('hex');
      return createHash('sha256').update(gz).digest('hex');
    });
    await time('write+fsync gz', async () => {
      const fh = await open(path.join(scratch, `x${i}`), 'w');
      try {
        await fh.writeFile(gz);
        await fh.sync();
      } finally {
        await fh.close();
      }
    });
    out.push(rec);
    syncDisk();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// report

function fmt(n: number, digits = 1): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '-';
}

function printReport(results: Result[], rawBytes: number, nSegments: number, isTx: boolean[], costs: Record<Piece, number>[]): void {
  const ref = results.find((r) => r.variant.label === 'pgrunbook wal-push gzip-1');
  const refMedian = ref ? median(ref.ms) : NaN;
  const header = ['tool', 'median ms', 'p90 ms', 'MiB/s', 'vs pgrunbook', 'CPU ms', 'stored/raw'];
  const rows: string[][] = [];
  for (const r of results) {
    const med = median(r.ms);
    const p90 = percentile(r.ms, 0.9);
    const mibs = r.variant.baseline ? '-' : fmt(rawBytes / MIB / (sum(r.ms) / 1000));
    const ratio = Number.isFinite(refMedian) ? `${(med / refMedian).toFixed(2)}x` : '-';
    const stored = r.stored ? `${((100 * r.stored.bytes) / rawBytes).toFixed(1)}%` : '-';
    const cpu = fmt(sum(r.cpuMs) / r.cpuMs.length);
    rows.push([r.variant.baseline ? `(baseline) ${r.variant.label}` : r.variant.label, fmt(med), fmt(p90), mibs, ratio, cpu, stored]);
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('   ');
  console.log('');
  console.log(`per-segment wall time over ${nSegments} segments of 16 MiB (${fmt(rawBytes / MIB, 0)} MiB), one process per segment, spawn to exit:`);
  console.log(line(header));
  for (const r of rows) console.log(line(r));
  console.log('');
  console.log('vs pgrunbook = this row\'s median / pgrunbook wal-push gzip-1\'s median (below 1.00x: faster than pgrunbook).');
  console.log('MiB/s = all segments\' raw bytes / the sum of the per-segment wall times (sequential, as the archiver runs).');
  console.log('CPU ms = mean user+sys CPU time per segment of the whole invocation (sh and all it ran): steadier than wall time on a busy machine.');
  console.log('stored/raw = bytes of the archived copies (no metadata files) / raw bytes.');
  console.log('');
  for (const r of results) {
    if (!r.stored || r.variant.baseline) continue;
    if (!/pgrunbook|pgbackrest/.test(r.variant.label)) continue;
    console.log(
      `compressed size: ${r.variant.label}: ${fmt(r.stored.bytes / MIB)} MiB of ${fmt(rawBytes / MIB, 0)} MiB = ${((100 * r.stored.bytes) / rawBytes).toFixed(1)}% (ratio ${(rawBytes / r.stored.bytes).toFixed(2)}:1)`,
    );
  }
  console.log('');

  // The same numbers split by where the segment came from: bulk-load WAL compresses (and gzips)
  // very differently from OLTP WAL full of page images.
  const groups: { label: string; idx: number[] }[] = [
    { label: `pgbench -i segments (${isTx.filter((t) => !t).length})`, idx: isTx.flatMap((t, i) => (t ? [] : [i])) },
    { label: `pgbench -T segments (${isTx.filter((t) => t).length})`, idx: isTx.flatMap((t, i) => (t ? [i] : [])) },
  ].filter((g) => g.idx.length > 0);
  const gHeader = ['ms by segment origin: median wall / mean CPU', ...groups.map((g) => g.label)];
  const gRows: string[][] = results
    .filter((r) => !r.variant.baseline)
    .map((r) => [
      r.variant.label,
      ...groups.map((g) => `${fmt(median(g.idx.map((i) => r.ms[i])))} / ${fmt(sum(g.idx.map((i) => r.cpuMs[i])) / g.idx.length)}`),
    ]);
  const pieceRows: string[][] = [
    ...PIECES.map((k) => [`  in-process: ${k}`, ...groups.map((g) => fmt(median(g.idx.map((i) => costs[i][k]))))]),
    ['  in-process: sum of the pieces', ...groups.map((g) => fmt(median(g.idx.map((i) => sum(PIECES.map((k) => costs[i][k]))))))],
  ];
  const gWidths = gHeader.map((h, i) => Math.max(h.length, ...[...gRows, ...pieceRows].map((r) => r[i].length)));
  const gLine = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(gWidths[i]) : c.padStart(gWidths[i]))).join('   ');
  console.log(gLine(gHeader));
  for (const r of gRows) console.log(gLine(r));
  console.log('what wal-push gzip-1 does to a segment, timed piece by piece inside this Node process (no start-up):');
  for (const r of pieceRows) console.log(gLine(r));
  console.log('');
  const met = Number.isFinite(refMedian) && refMedian <= TARGET_MEDIAN_MS;
  console.log(
    `target: pgrunbook wal-push median <= ${TARGET_MEDIAN_MS} ms per segment (local, gzip level 1): ${met ? 'MET' : 'NOT MET'} (median ${fmt(refMedian)} ms)`,
  );
}

// ---------------------------------------------------------------------------------------------
// main

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  checkBuild();
  const loadBefore = loadavg();

  const ids: OsIds | undefined = isRoot() ? await (async () => {
    const u = await lookupUser('postgres');
    return { uid: u.uid, gid: u.gid, home: u.home };
  })() : undefined;
  const runAsName = ids ? 'postgres' : os.userInfo().username;

  let pgbackrestBin: string | undefined;
  if (opts.pgbackrest) {
    const r = ensurePgBackRest();
    pgbackrestBin = r.bin;
    if (!pgbackrestBin) log(`skipping pgBackRest: ${r.why}`);
  }

  // Environment of the archive_command processes: what a server started by a service manager
  // would have, not this process's (no NODE_OPTIONS, tsx loaders, or npm variables).
  const childEnv: NodeJS.ProcessEnv = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: ids?.home ?? os.homedir(),
    LANG: 'C.UTF-8',
    PGDATA: '',
  };

  const work = await mkdtemp(path.join(await realpath(os.tmpdir()), 'pgrunbook-bench-'));
  await chmod(work, 0o755);
  if (ids) await chown(work, ids.uid, ids.gid);
  let cluster: SandboxCluster | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: cleaning up`);
    killSandboxClustersSync();
    if (!opts.keep) rmSync(work, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    const archiveDir = await mkdirFor(path.join(work, 'archive'), ids);
    const segDir = await mkdirFor(path.join(work, 'segments'), ids, 0o700);
    const destRoot = await mkdirFor(path.join(work, 'dest'), ids);
    await mkdirFor(path.join(work, 'pgbackrest'), ids);

    // 1. real segments
    log(`sandbox cluster with archive_mode=on, archive_command='cp %p ${archiveDir}/%f'`);
    cluster = await createSandboxCluster({
      name: 'wal-push-bench',
      settings: {
        archive_mode: 'on',
        archive_command: `cp %p ${archiveDir}/%f`,
        max_wal_size: '2GB',
        autovacuum: 'on',
      },
    });
    const t0 = Date.now();
    const { names: archived, firstTxSegment } = await makeSegments(cluster, archiveDir, opts.segments, opts.scale, t0 + opts.deadlineSec * 1000, ids);
    const names = archived.slice(-opts.segments);
    const [{ version }] = await cluster.query<{ version: string }>("SELECT current_setting('server_version') AS version");
    const fromTx = names.filter((n) => n >= firstTxSegment).length;
    log(`${archived.length} segments archived in ${((Date.now() - t0) / 1000).toFixed(1)} s; using the last ${names.length} (${names.length - fromTx} from pgbench -i, ${fromTx} from pgbench -T)`);

    const segPaths: string[] = [];
    for (const n of names) {
      const src = path.join(archiveDir, n);
      const st = await stat(src);
      if (st.size !== SEGMENT_SIZE) throw new Error(`${src} is ${st.size} bytes, not a 16 MiB segment`);
      const dst = path.join(segDir, n);
      await copyFile(src, dst);
      await chmod(dst, 0o600);
      if (ids) await chown(dst, ids.uid, ids.gid);
      segPaths.push(dst);
    }
    const rawBytes = names.length * SEGMENT_SIZE;

    // 2. the tools, each with fresh destinations (timed run + warm-up run)
    const variants: Variant[] = [
      pgrunbookVariant('gzip'),
      pgrunbookVariant('none'),
      cpVariant,
      cpSyncVariant,
    ];
    let pgbackrestVersion = '';
    if (pgbackrestBin) {
      pgbackrestVersion = spawnSync(pgbackrestBin, ['version'], { encoding: 'utf8' }).stdout.trim();
      variants.push(pgbackrestVariant(pgbackrestBin, 'lz4', work, cluster, ids, childEnv));
      variants.push(pgbackrestVariant(pgbackrestBin, 'gz', work, cluster, ids, childEnv));
    }
    variants.push(
      baselineVariant('sh -c true', 'true'),
      baselineVariant('node -e 0', `${q(process.execPath)} -e 0`),
      baselineVariant('node dist/cli.js --version', `${q(process.execPath)} ${q(CLI)} --version`),
      // wal-push's own start-up: node + the wal-push modules, then a usage error (exit 2).
      baselineVariant('node dist/cli.js wal-push (no args)', `${q(process.execPath)} ${q(CLI)} wal-push`, 2),
    );

    const dests = new Map<Variant, { timed: string; warm: string }>();
    for (const [i, v] of variants.entries()) {
      if (v.baseline) continue;
      const slug = `${i}-${v.label.replace(/[^a-z0-9]+/gi, '-').replace(/-+$/, '')}`;
      const timed = await mkdirFor(path.join(destRoot, slug), ids);
      const warm = await mkdirFor(path.join(destRoot, `${slug}-warmup`), ids);
      if (v.prepare) {
        log(`${v.label}: stanza-create (timed and warm-up repositories)`);
        await v.prepare(timed);
        await v.prepare(warm);
      }
      dests.set(v, { timed, warm });
    }

    // The server is not needed any more (pgBackRest's archive-push reads pg_control, it does not
    // connect): stop it so that autovacuum, checkpoints and the archiver do not add noise.
    await cluster.stop('fast');

    // 3. warm the page cache (segments, node, the CLI's modules, pgBackRest) and each tool once
    for (const p of segPaths) await readFile(p);
    for (const v of variants) {
      const d = dests.get(v);
      const r = await runTimed(v.command(d?.warm ?? work, segPaths[0], names[0]), ids, cluster.dataDir, childEnv);
      if (r.code !== (v.expectCode ?? 0)) throw new Error(`warm-up of ${v.label} failed (exit ${r.code ?? r.signal}): ${(r.stderr || r.stdout).trim()}\ncommand: ${v.command(d?.warm ?? work, segPaths[0], names[0])}`);
    }
    syncDisk();

    // 4. timed: segment by segment, every variant, rotating the order
    const results: Result[] = variants.map((variant) => ({ variant, ms: [], cpuMs: [] }));
    log(`timing ${variants.length} variants x ${names.length} segments (interleaved), running as ${runAsName} via /bin/sh -c in the data directory`);
    for (let i = 0; i < names.length; i++) {
      for (let j = 0; j < results.length; j++) {
        const res = results[(i + j) % results.length];
        const v = res.variant;
        const cmd = v.command(dests.get(v)?.timed ?? work, segPaths[i], names[i]);
        const r = await runTimed(cmd, ids, cluster.dataDir, childEnv);
        if (r.code !== (v.expectCode ?? 0)) throw new Error(`${v.label} failed on ${names[i]} (exit ${r.code ?? r.signal}): ${(r.stderr || r.stdout).trim()}\ncommand: ${cmd}`);
        if (r.stderr.trim() && !v.baseline) log(`${v.label} said on ${names[i]}: ${r.stderr.trim()}`);
        res.ms.push(r.ms);
        res.cpuMs.push(r.cpuMs);
        syncDisk(); // untimed: nobody pays for another tool's dirty pages
      }
    }

    // 5. everything arrived?
    for (const r of results) {
      const v = r.variant;
      if (!v.stored) continue;
      r.stored = await v.stored(dests.get(v)!.timed);
      if (r.stored.files !== names.length) throw new Error(`${v.label}: ${r.stored.files} stored segment files, expected ${names.length}`);
    }

    const scratch = await mkdirFor(path.join(work, 'scratch'), undefined);
    const costs = await inProcessCosts(segPaths, scratch);

    // 6. report
    console.log(`pgrunbook wal-push benchmark — ${new Date().toISOString()}`);
    console.log(
      `machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${os.platform()} ${os.release()}; node ${process.version}; PostgreSQL ${version}${pgbackrestVersion ? `; ${pgbackrestVersion}` : ''}`,
    );
    console.log(`work dir: ${work} (file system: ${fsType(work)}); load average before/after: ${loadBefore} / ${loadavg()}`);
    console.log(
      `input: ${names.length} real WAL segments ${names[0]}..${names[names.length - 1]} from pgbench (scale ${opts.scale}; ${names.length - fromTx} written by pgbench -i, ${fromTx} by pgbench -T)`,
    );
    console.log(`each command runs as ${runAsName} via /bin/sh -c in the data directory, like archive_command; %p is an absolute path`);
    printReport(results, rawBytes, names.length, names.map((n) => n >= firstTxSegment), costs);
    if (!pgbackrestBin && opts.pgbackrest) console.log('\npgBackRest was skipped: see the log above.');
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    if (cluster) await cluster.remove().catch((e: unknown) => log(`could not remove the sandbox cluster: ${(e as Error).message}`));
    if (opts.keep) log(`kept ${work}`);
    else await rm(work, { recursive: true, force: true, maxRetries: 3, retryDelay: 100 });
  }
}

function fsType(p: string): string {
  const r = spawnSync('stat', ['-f', '-c', '%T', p], { encoding: 'utf8' });
  return r.stdout.trim() || 'unknown';
}

function loadavg(): string {
  return os.loadavg().map((x) => x.toFixed(2)).join(' ');
}

main().catch((e: unknown) => {
  if (e instanceof UsageError) {
    process.stderr.write(`bench/wal-push: ${e.message}\n${USAGE}\n`);
    process.exitCode = 2;
  } else {
    process.stderr.write(`bench/wal-push: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  }
});
