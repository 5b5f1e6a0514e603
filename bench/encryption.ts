// Benchmark: what client-side encryption costs a base backup.
//
//   npm run build && node --import tsx bench/encryption.ts [--scale 20] [--rounds 5] [--markdown FILE]
//
// Not part of `npm test`. One sandbox cluster (pgbench -i -s SCALE) is backed up with
// `pgrunbook --procedure backup-base` into a fresh file:// repository per run, alternately without
// and with a repository key (--repo-key-file), the order swapping every round so that neither side
// always runs on a warmer cache. Each run is the whole procedure as an operator runs it (process
// start, pg_basebackup, compression, sealing, read-back verification, commit). Reported: the
// minimum and median wall time of each side, and the ratio of the medians (with key / without);
// the goal is at most 1.10 (encryption costs at most 10 % of backup time).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const GOAL = 1.1;

const USAGE = `usage: node --import tsx bench/encryption.ts [options]
  --scale N        pgbench -i scale factor (default 20, about 300 MiB)
  --rounds N       backups per side, interleaved (default 5)
  --markdown FILE  also write the result table there (Markdown)
  -h, --help       this text
Run \`npm run build\` first: the benchmark runs dist/cli.js.`;

function options(argv: string[]): { scale: number; rounds: number; markdown?: string } {
  const { values } = parseArgs({
    args: argv,
    options: { scale: { type: 'string' }, rounds: { type: 'string' }, markdown: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const int = (name: string, v: string | undefined, dflt: number): number => {
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) {
      console.error(`--${name} must be a whole number >= 1, got "${v}"\n${USAGE}`);
      process.exit(2);
    }
    return n;
  };
  return { scale: int('scale', values.scale, 20), rounds: int('rounds', values.rounds, 5), markdown: values.markdown };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

function dirBytes(dir: string): number {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    n += e.isDirectory() ? dirBytes(p) : fs.statSync(p).size;
  }
  return n;
}

async function main(): Promise<void> {
  const opts = options(process.argv.slice(2));
  if (!fs.existsSync(CLI)) {
    console.error(`${CLI} is missing: run npm run build first`);
    process.exit(2);
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrunbook-bench-enc-'));
  const keyFile = path.join(work, 'repo.key');
  fs.writeFileSync(keyFile, 'bench passphrase, not a secret\n', { mode: 0o600 });
  let cluster: SandboxCluster | undefined;
  try {
    cluster = await createSandboxCluster({ name: 'bench-enc' });
    process.stderr.write(`pgbench -i -s ${opts.scale} ...\n`);
    const init = spawnSync('pgbench', ['-i', '-s', String(opts.scale), '-q', '-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', 'postgres'], { stdio: ['ignore', 'ignore', 'inherit'] });
    if (init.status !== 0) throw new Error('pgbench -i failed');
    const conn = ['--host', cluster.host, '--port', String(cluster.port), '--user', 'postgres'];
    const times: Record<'plain' | 'encrypted', number[]> = { plain: [], encrypted: [] };
    const sizes: Record<'plain' | 'encrypted', number> = { plain: 0, encrypted: 0 };
    const run = (side: 'plain' | 'encrypted', i: number): void => {
      const repo = path.join(work, `${side}-${i}`);
      fs.mkdirSync(repo);
      const args = [CLI, '--procedure', 'backup-base', ...conn, '--repo', `file://${repo}`, '--checkpoint', 'fast', '--json', ...(side === 'encrypted' ? ['--repo-key-file', keyFile] : [])];
      spawnSync('sync');
      const t0 = process.hrtime.bigint();
      const r = spawnSync(process.execPath, args, { env: { PATH: process.env.PATH, HOME: process.env.HOME, PGRUNBOOK_STATE_DIR: path.join(work, 'state') }, encoding: 'utf8' });
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (r.status !== 0) throw new Error(`backup-base (${side}) exited ${r.status}: ${(r.stderr || r.stdout).slice(-1500)}`);
      times[side].push(ms);
      sizes[side] = dirBytes(repo);
      fs.rmSync(repo, { recursive: true, force: true });
      process.stderr.write(`round ${i + 1} ${side.padEnd(9)} ${(ms / 1000).toFixed(2)} s\n`);
    };
    run('plain', -1); // warm-up, untimed
    times.plain = [];
    for (let i = 0; i < opts.rounds; i++) {
      const order: ('plain' | 'encrypted')[] = i % 2 ? ['encrypted', 'plain'] : ['plain', 'encrypted'];
      for (const side of order) run(side, i);
    }
    const ratio = median(times.encrypted) / median(times.plain);
    const row = (side: 'plain' | 'encrypted') =>
      `| ${side === 'plain' ? 'without key' : 'with --repo-key-file'} | ${(Math.min(...times[side]) / 1000).toFixed(2)} s | ${(median(times[side]) / 1000).toFixed(2)} s | ${(sizes[side] / 1048576).toFixed(1)} MiB |`;
    const table = [
      `Encryption cost of a base backup (pgbench -s ${opts.scale}, ${opts.rounds} interleaved rounds, ${os.cpus().length} CPUs, ${new Date().toISOString()}):`,
      '',
      '| backup-base | min | median | stored |',
      '|---|---|---|---|',
      row('plain'),
      row('encrypted'),
      '',
      `ratio (median with key / without): **${ratio.toFixed(3)}** (goal <= ${GOAL}: ${ratio <= GOAL ? 'met' : 'NOT met'})`,
      '',
    ].join('\n');
    process.stdout.write(table);
    if (opts.markdown) fs.writeFileSync(opts.markdown, table);
  } finally {
    await cluster?.remove();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(`bench/encryption: ${(err as Error).message}`);
  process.exit(1);
});
