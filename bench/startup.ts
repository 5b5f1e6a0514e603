// Benchmark: how long pgrunbook's quick commands take to start and finish, against `node -e 0`.
//
//   npm run build && node --import tsx bench/startup.ts [--rounds 10] [--markdown FILE]
//
// Not part of `npm test`. Measures, each as one whole process (spawn to exit), interleaved round
// by round so that a busy moment on the machine hits every row alike:
//   node -e 0                the floor: node's own start
//   pgrunbook --version
//   wal-push/wal-fetch --help   start-up only: parse the arguments, print the help, exit (the
//                          repository code is not loaded for --help; the not-in-the-archive row
//                          below is a start that loads it)
//   wal-push               a real 16 MiB segment pushed into a fresh file:// repository (zstd-1,
//                          the default)
//   wal-fetch              that segment fetched back into a new file
//   wal-fetch, not in the archive   a segment the archive lacks (exit 1), as PostgreSQL asks at
//                          the archive's end and while a standby polls: a real start (repository,
//                          format record, driver) plus one lookup; all a fetch loads but zstd
//   status                 the repository and a running sandbox server, --json
// and `npm start` to the Home screen in a pseudo-terminal (script(1)), twice: first after a
// source file's mtime changed (the start rebuilds), then with nothing changed (no rebuild).
// Goals (issue 14, 17): --version, wal-push, wal-fetch under 120 ms; npm start to Home under 2 s
// when nothing changed.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createSandboxCluster, killSandboxClustersSync, type SandboxCluster } from '../src/postgres/sandbox.js';
import { serverEnvironment } from '../src/postgres/server-env.js';

/** Node's own start in the environment PostgreSQL gives archive_command and restore_command. */
const SERVER_FLOOR = "node -e 0 (the server's environment)";
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const HOME_MARKER = 'guided PostgreSQL backup and disaster recovery';
const GOAL_MS = 120;
/** A segment name no test cluster reaches: the wal-fetch row that finds nothing. */
const MISSING_SEGMENT = '00000001000000FF000000FE';
const HOME_GOAL_MS = 2000;

const USAGE = `usage: node --import tsx bench/startup.ts [options]
  --rounds N        timed runs of each command (default 10; the first, untimed, warms the cache)
  --markdown FILE   also write the table as Markdown to FILE
  -h, --help        this text
Run \`npm run build\` first: the benchmark runs dist/cli.js.`;

function options() {
  const { values } = parseArgs({ options: { rounds: { type: 'string' }, markdown: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const rounds = Number(values.rounds ?? 10);
  if (!Number.isInteger(rounds) || rounds < 1) {
    console.error(`--rounds must be a positive integer, got "${values.rounds}"\n${USAGE}`);
    process.exit(2);
  }
  return { rounds, markdown: values.markdown };
}

/** Runs a command to its end; its wall time in ms. Another exit than `expect` stops the benchmark. */
function timed(label: string, cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, expect = 0): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== expect) throw new Error(`${label} exited ${r.status}: ${String(r.stderr).slice(0, 2000)}`);
  return ms;
}

/** `npm start` in a pseudo-terminal: ms until the Home screen is drawn. The app is then stopped. */
async function timeToHome(env: NodeJS.ProcessEnv): Promise<number> {
  const t0 = process.hrtime.bigint();
  const child = spawn('script', ['-qfec', 'npm start --silent', '/dev/null'], { cwd: ROOT, env, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
  let seen = '';
  try {
    return await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`npm start did not reach Home in 120 s; it printed: ${seen.slice(-2000)}`)), 120_000);
      child.stdout.on('data', (chunk: Buffer) => {
        seen += chunk.toString('utf8');
        if (seen.includes(HOME_MARKER)) {
          clearTimeout(timer);
          resolve(Number(process.hrtime.bigint() - t0) / 1e6);
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`npm start exited ${code} before Home: ${seen.slice(-2000)}`));
      });
    });
  } finally {
    child.removeAllListeners('exit');
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const p90 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(xs.length * 0.9) - 1)];

async function main(): Promise<void> {
  const opts = options();
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
  const build = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'ensure-built.mjs')], { stdio: 'inherit' });
  if (build.status !== 0) throw new Error('the build failed');

  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrunbook-bench-startup-'));
  let cluster: SandboxCluster | undefined;
  try {
    process.stderr.write('making a sandbox cluster for a real WAL segment and the status row...\n');
    cluster = await createSandboxCluster({ name: 'bench-startup' });
    await cluster.psql('CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g; CHECKPOINT');
    const walDir = path.join(cluster.dataDir, 'pg_wal');
    const segName = fs.readdirSync(walDir).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort()[0];
    const segment = path.join(work, segName);
    fs.copyFileSync(path.join(walDir, segName), segment);
    const statusRepo = path.join(work, 'status-repo');
    fs.mkdirSync(statusRepo);
    timed('seed push', process.execPath, [CLI, 'wal-push', '--repo', `file://${statusRepo}`, segment]);

    const env = { ...process.env };
    delete env.CI;
    // wal-push and wal-fetch run as PostgreSQL's archive_command / restore_command, with the
    // environment the server has (pgrunbook starts it with serverEnvironment(): PATH, locale,
    // zone), not the operator's shell's: they are timed in that one, beside node's own start in it.
    // (This machine's shell sets NODE_EXTRA_CA_CERTS, which alone costs node ~70 ms at start.)
    const serverEnv = serverEnvironment();
    const rows: Record<string, number[]> = {
      'node -e 0': [],
      [SERVER_FLOOR]: [],
      'pgrunbook --version': [],
      'wal-push --help (start-up only)': [],
      'wal-fetch --help (start-up only)': [],
      'wal-push (16 MiB, zstd-1)': [],
      'wal-fetch (16 MiB)': [],
      'wal-fetch, not in the archive (exit 1)': [],
      'status --json': [],
    };
    for (let round = 0; round <= opts.rounds; round++) {
      const repo = path.join(work, `repo-${round}`);
      fs.mkdirSync(repo);
      const fetched = path.join(work, `fetched-${round}`);
      const runs: [string, () => number][] = [
        ['node -e 0', () => timed('node -e 0', process.execPath, ['-e', '0'], env)],
        [SERVER_FLOOR, () => timed('node -e 0 (server env)', process.execPath, ['-e', '0'], serverEnv)],
        ['pgrunbook --version', () => timed('--version', process.execPath, [CLI, '--version'], env)],
        ['wal-push --help (start-up only)', () => timed('wal-push --help', process.execPath, [CLI, 'wal-push', '--help'], serverEnv)],
        ['wal-fetch --help (start-up only)', () => timed('wal-fetch --help', process.execPath, [CLI, 'wal-fetch', '--help'], serverEnv)],
        ['wal-push (16 MiB, zstd-1)', () => timed('wal-push', process.execPath, [CLI, 'wal-push', '--repo', `file://${repo}`, segment], serverEnv)],
        ['wal-fetch (16 MiB)', () => timed('wal-fetch', process.execPath, [CLI, 'wal-fetch', '--repo', `file://${statusRepo}`, segName, fetched], serverEnv)],
        ['wal-fetch, not in the archive (exit 1)', () => timed('wal-fetch (missing)', process.execPath, [CLI, 'wal-fetch', '--repo', `file://${statusRepo}`, MISSING_SEGMENT, `${fetched}-missing`], serverEnv, 1)],
        [
          'status --json',
          () => {
            // status exits 0-3 by what it finds (Nagios codes); only its time matters here.
            const t0 = process.hrtime.bigint();
            spawnSync(process.execPath, [CLI, 'status', '--repo', `file://${statusRepo}`, '--host', cluster!.host, '--port', String(cluster!.port), '--user', 'postgres', '--json'], { env, stdio: 'ignore' });
            return Number(process.hrtime.bigint() - t0) / 1e6;
          },
        ],
      ];
      // Rotate the order from round to round; round 0 warms the page cache and is not counted.
      for (let i = 0; i < runs.length; i++) {
        const [label, run] = runs[(i + round) % runs.length];
        const ms = run();
        if (round > 0) rows[label].push(ms);
      }
      fs.rmSync(repo, { recursive: true, force: true });
      fs.rmSync(fetched, { force: true });
      process.stderr.write(`round ${round}/${opts.rounds}\r`);
    }
    process.stderr.write('\nnpm start to Home: after a source changed, then with nothing changed...\n');
    const now = new Date();
    fs.utimesSync(path.join(ROOT, 'src', 'cli.ts'), now, now);
    const homeChanged = await timeToHome(env);
    const homeSame = await timeToHome(env);

    const floor = median(rows['node -e 0']);
    const serverFloor = median(rows[SERVER_FLOOR]);
    const lines = ['| command | environment | median ms | p90 ms | minus node -e 0 in it | goal |', '| --- | --- | ---: | ---: | ---: | --- |'];
    for (const [label, xs] of Object.entries(rows)) {
      const inServerEnv = label === SERVER_FLOOR || label.startsWith('wal-');
      const goal = /version|start-up only/.test(label) ? `< ${GOAL_MS} ms ${median(xs) < GOAL_MS ? 'met' : 'NOT met'}` : '';
      const over = label.startsWith('node -e 0') ? '' : (median(xs) - (inServerEnv ? serverFloor : floor)).toFixed(0);
      lines.push(`| ${label.replace(/ \(the server's environment\)$/, '')} | ${inServerEnv ? "the server's" : "this shell's"} | ${median(xs).toFixed(0)} | ${p90(xs).toFixed(0)} | ${over} | ${goal} |`);
    }
    lines.push(`| npm start to Home, a source changed (rebuilds) | this shell's | ${homeChanged.toFixed(0)} | | | |`);
    lines.push(`| npm start to Home, nothing changed | this shell's | ${homeSame.toFixed(0)} | | | < ${HOME_GOAL_MS} ms ${homeSame < HOME_GOAL_MS ? 'met' : 'NOT met'} |`);
    const text = `Start-up, ${opts.rounds} rounds, node ${process.version}, ${os.cpus().length} CPUs, ${new Date().toISOString()}\n\n${lines.join('\n')}\n`;
    process.stdout.write(text);
    if (opts.markdown) fs.writeFileSync(opts.markdown, text);
  } finally {
    await cluster?.remove();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    killSandboxClustersSync();
    console.error(`bench/startup: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
