// `npm run bench`: every comparison of bench/, one after the other on this machine, into
// bench/RESULTS.md with the date, the machine and the versions. Each script builds its own
// dataset, runs pgrunbook and its peer interleaved, and appends its table (--markdown).
//
//   npm run bench [-- --scale 100 --rounds 5 --only base-backup,logical]
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BENCHES = ['base-backup', 'restore', 'pitr-latest', 'wal-backlog', 'wal-fetch', 'logical', 'encryption', 'startup'];

const { values } = parseArgs({ options: { scale: { type: 'string' }, rounds: { type: 'string' }, only: { type: 'string' }, out: { type: 'string' } } });
const scale = values.scale ?? '100';
const rounds = values.rounds ?? '5';
const only = values.only ? values.only.split(',') : BENCHES;
const out = values.out ?? path.join(ROOT, 'bench', 'RESULTS.md');

const version = (cmd: string, args: string[]) => {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8' }).trim().split('\n')[0];
  } catch {
    return 'not installed';
  }
};
const cpu = readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/)?.[1] ?? os.arch();
const header = [
  '# Benchmark results',
  '',
  `Run ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC by \`npm run bench -- --scale ${scale} --rounds ${rounds}\` on ${os.hostname()}: ${os.cpus().length} cores (${cpu}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}.`,
  `Node ${process.version}; ${version('postgres', ['--version'])}${version('/usr/lib/postgresql/15/bin/postgres', ['--version']) !== 'not installed' ? ` (${version('/usr/lib/postgresql/15/bin/postgres', ['--version'])})` : ''}; ${version('pgbackrest', ['version'])}; ${version('zstd', ['--version'])}.`,
  'Ratios are pgrunbook / peer on the same data in the same run (above 1 is slower); each figure is the minimum of the interleaved rounds unless its table says otherwise.',
  '',
].join('\n');

const work = mkdtempSync(path.join(os.tmpdir(), 'pgrunbook-bench-'));
const sections: string[] = [];
try {
  if (!existsSync(path.join(ROOT, 'dist', 'cli.js'))) execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
  for (const name of only) {
    const script = path.join(ROOT, 'bench', `${name}.ts`);
    if (!existsSync(script)) {
      sections.push(`### ${name}\n\nno bench/${name}.ts in this checkout\n`);
      continue;
    }
    const md = path.join(work, `${name}.md`);
    // --scale is the pgbench scale of the data sets; the WAL benches take their own (32 segments a
    // backlog, 64 to replay: the issue's sizes), and startup has none.
    const args = ['--import', 'tsx', script, '--rounds', rounds, '--markdown', md, ...(name === 'startup' ? [] : ['--scale', name.startsWith('wal-') ? '1' : scale])];
    process.stderr.write(`[bench] ${name}: node ${args.join(' ')}\n`);
    const started = Date.now();
    const r = spawnSync('node', args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
    const took = `${Math.round((Date.now() - started) / 1000)} s`;
    if (r.status === 0 && existsSync(md)) sections.push(readFileSync(md, 'utf8').trim(), '');
    else sections.push(`### ${name}\n\nfailed (exit ${r.status ?? r.signal}) after ${took}; see its output\n`);
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
writeFileSync(out, `${header}\n${sections.join('\n')}\n`);
process.stderr.write(`[bench] wrote ${out}\n`);
