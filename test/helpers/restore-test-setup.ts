// What the restore-test tests share: a source cluster with data checksums archiving through
// pgrunbook's wal-push, an `app` database under a pgbench load, backups made by pgrunbook while
// it writes, and ways to run restore-test and status against its repository.
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { archivingCluster, type ArchivingCluster } from './archiving-cluster.js';
import { jsonLines, runCli, startCli, tempDir, type CliResult } from './cli.js';
import { scratchLeft, startNoise } from './scratch-load.js';

export type RestoreTestSource = ArchivingCluster & {
  scratchDir: string;
  noise: { stop: () => Promise<void> };
  restoreTest(args?: string[], env?: Record<string, string>): Promise<CliResult>;
  startRestoreTest(args?: string[], env?: Record<string, string>): ReturnType<typeof startCli>;
  status(args: string[], env?: Record<string, string>): Promise<CliResult>;
  statusJson(args?: string[], env?: Record<string, string>): Promise<{ exitCode: number; report: Record<string, any> }>;
  backupLogical(): Promise<void>;
  /** Records in the repository's restore-tests/, oldest first. */
  records(): Record<string, any>[];
  repoDir: string;
};

export async function restoreTestSource(name: string): Promise<RestoreTestSource> {
  const a = await archivingCluster(name, { initdbArgs: ['--data-checksums'] });
  await a.cluster.query('CREATE DATABASE app');
  await a.cluster.query(
    `CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL, qty int);
     INSERT INTO orders SELECT g, md5(g::text), g % 7 FROM generate_series(1, 3000) g;
     CREATE INDEX orders_item ON orders (item);
     CREATE TABLE notes (id int PRIMARY KEY, body text);
     INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 300) g;
     CREATE TABLE noise (id serial PRIMARY KEY, pad text)`,
    [],
    'app',
  );
  const noise = startNoise(a.cluster, 'app');
  const scratchDir = tempDir('pgrunbook-rt-scratch-');
  fs.chmodSync(scratchDir, 0o755);
  const repoDir = a.repoUrl.replace(/^file:\/\//, '');
  const common = (args: string[]) => ['--procedure', 'restore-test', ...a.conn, '--repo', a.repoUrl, '--scratch-dir', scratchDir, '--json', ...args];
  const status = (args: string[], env: Record<string, string> = {}) => runCli(['status', '--repo', a.repoUrl, ...a.conn, ...args], { ...a.env, ...env });
  return {
    ...a,
    scratchDir,
    noise,
    repoDir,
    restoreTest: (args = [], env = {}) => runCli(common(args), { ...a.env, ...env }),
    startRestoreTest: (args = [], env = {}) => startCli(common(args), { ...a.env, ...env }),
    status,
    async statusJson(args = [], env = {}) {
      const r = await status([...args, '--json'], env);
      return { exitCode: r.exitCode, report: JSON.parse(r.stdout) as Record<string, any> };
    },
    async backupLogical() {
      const r = await runCli(['--procedure', 'backup-logical', ...a.conn, '--repo', a.repoUrl, '--databases', 'app', '--json'], a.env);
      expect(r.exitCode, r.stdout.slice(-3000) + r.stderr).toBe(0);
    },
    records() {
      const dir = path.join(repoDir, 'restore-tests');
      if (!fs.existsSync(dir)) return [];
      return fs
        .readdirSync(dir)
        .filter((f) => f.endsWith('.json'))
        .sort()
        .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as Record<string, any>);
    },
  };
}

/** The checks a --json run reported, by name. */
export function checksOf(stdout: string): Record<string, any>[] {
  return jsonLines(stdout).filter((e) => e.type === 'check');
}

/** Processes whose command line mentions `dir` (a scratch server left running would). */
export function processesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmd = '';
    try {
      cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch {
      continue;
    }
    if (cmd.includes(dir) && !cmd.includes('vitest')) out.push(`${pid}: ${cmd}`);
  }
  return out;
}

/** Nothing of a scratch cluster left: no directory, no server. */
export function expectNothingLeft(src: RestoreTestSource): void {
  expect(scratchLeft(src.scratchDir)).toEqual([]);
  expect(processesUnder(src.scratchDir)).toEqual([]);
}
