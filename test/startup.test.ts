// Fast start: what each quick command loads, recorded by a module hook (not timed: timings are
// bench/startup.ts's job). PostgreSQL runs wal-push/wal-fetch once per segment, so those, and
// --version and status, must never load Ink, React or a cloud SDK they do not use. And
// `npm start` builds only when a source is newer than dist (scripts/ensure-built.mjs).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { CLI, ROOT, cleanEnv, tempDir } from './helpers/cli.js';
import { sharedCluster } from './helpers/cluster.js';

const TRACE = fileURLToPath(new URL('./fixtures/module-trace-register.mjs', import.meta.url));
const UI = /node_modules\/(ink|react|react-reconciler|@inkjs|yoga-layout)\//;
const SDK = /node_modules\/(@aws-sdk|@azure|@smithy)\//;

/** Runs the CLI with the trace hook; returns its result and the modules it loaded. */
async function traced(args: string[], env: Record<string, string> = {}) {
  const file = path.join(tempDir('pgrunbook-trace-'), 'modules.txt');
  const r = await execa('node', ['--import', TRACE, CLI, ...args], {
    reject: false,
    extendEnv: false,
    env: cleanEnv({ ...env, PGRUNBOOK_MODULE_TRACE: file }),
    stdin: 'ignore',
  });
  const modules = fs.existsSync(file) ? [...new Set(fs.readFileSync(file, 'utf8').split('\n').filter(Boolean))] : [];
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr), modules };
}

/** A finished-looking WAL segment to push: a copy of the oldest one of the shared cluster. */
function copyOfSegment(dir: string): { file: string; name: string } {
  const walDir = path.join(sharedCluster().dataDir, 'pg_wal');
  const name = fs.readdirSync(walDir).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort()[0];
  const file = path.join(dir, name);
  fs.copyFileSync(path.join(walDir, name), file);
  return { file, name };
}

describe('what the quick commands load', () => {
  /** The dist/ modules loaded, as paths under dist/, sorted. */
  const ours = (modules: string[]) => modules.filter((m) => m.includes('/dist/')).map((m) => m.replace(/^.*\/dist\//, '')).sort();

  it('--version loads no package and nothing of ours but the entry point', async () => {
    const r = await traced(['--version']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    expect(r.modules.some((m) => m.includes('/dist/cli.js'))).toBe(true); // the hook saw the run
    expect(r.modules.filter((m) => m.includes('node_modules'))).toEqual([]);
    expect(ours(r.modules)).toEqual(['cli.js']);
  });

  it('wal-push --help and wal-fetch --help load the argument parsing only', async () => {
    for (const command of ['wal-push', 'wal-fetch']) {
      const r = await traced([command, '--help']);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout).toContain(`pgrunbook ${command}:`);
      expect(r.modules.filter((m) => m.includes('node_modules'))).toEqual([]);
      expect(ours(r.modules)).toEqual(['cli.js', 'commands/registry.js', 'engine/types.js', 'wal/command.js']);
    }
  });

  it('wal-push and wal-fetch to a file:// repository load neither Ink, React, pg nor a cloud SDK', async () => {
    const work = tempDir('pgrunbook-startup-');
    const repo = path.join(work, 'repo');
    fs.mkdirSync(repo);
    const { file, name } = copyOfSegment(work);

    const push = await traced(['wal-push', '--repo', `file://${repo}`, file]);
    expect(push.exitCode, push.stderr).toBe(0);
    const fetched = path.join(work, 'fetched');
    const fetch = await traced(['wal-fetch', '--repo', `file://${repo}`, name, fetched]);
    expect(fetch.exitCode, fetch.stderr).toBe(0);
    expect(fs.readFileSync(fetched).equals(fs.readFileSync(file))).toBe(true);
    // What PostgreSQL asks for most often during recovery: a file the archive does not have.
    const missing = await traced(['wal-fetch', '--repo', `file://${repo}`, 'FFFFFFFF0000000000000001', path.join(work, 'none')]);
    expect(missing.exitCode, missing.stderr).toBe(1);

    for (const r of [push, fetch, missing]) {
      expect(r.modules.some((m) => m.includes('/dist/storage/local.js'))).toBe(true);
      expect(r.modules.filter((m) => UI.test(m) || SDK.test(m))).toEqual([]);
      expect(r.modules.filter((m) => /node_modules\//.test(m))).toEqual([]);
      expect(r.modules.filter((m) => /\/dist\/(main|app)\.js|\/dist\/(screens|procedures|services|engine\/(?!types))/.test(m))).toEqual([]);
      // No --spool, no --env-file, no key: the spool's paths, the env file reader and the sealing store stay unloaded.
      expect(ours(r.modules).filter((m) => /^wal\/(async|spool|spawn|env-file)\.js$|^storage\/(encrypted|s3|azure)\.js$/.test(m))).toEqual([]);
    }
    // The zstd program (and with it node:child_process) only where zstd bytes are written or read.
    expect(push.modules.some((m) => /child_process/.test(m))).toBe(true);
    expect(fetch.modules.some((m) => /child_process/.test(m))).toBe(true);
    expect(missing.modules.filter((m) => /child_process/.test(m))).toEqual([]);
  });

  it('a headless procedure loads its own procedure only, not the others', async () => {
    const r = await traced(['--procedure', 'backup-base', '--help']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain('backup-base');
    const procedures = ours(r.modules).filter((m) => /^procedures\/[^/]+\.js$/.test(m));
    expect(procedures).toContain('procedures/backup-base.js');
    expect(procedures.filter((m) => /^procedures\/(pitr|restore-test|table-restore|logical-restore|drill|wal-archiving|retention|verify|promote|backup-logical)\.js$/.test(m))).toEqual([]);
    expect(r.modules.filter((m) => UI.test(m))).toEqual([]);
    // --list still knows every procedure.
    const list = await traced(['--list']);
    expect(list.stdout.split('\n').filter(Boolean).map((l) => l.split(/\s+/)[0])).toEqual(['verify', 'backup-logical', 'backup-base', 'wal-archiving', 'retention', 'logical-restore', 'table-restore', 'pitr', 'promote', 'drill', 'restore-test']);
  });

  it('status loads neither Ink nor React, nor the procedures, nor an SDK its repository does not use', async () => {
    const repo = tempDir('pgrunbook-startup-status-');
    const r = await traced(['status', '--repo', `file://${repo}`, '--json', '--host', '/nonexistent-socket-dir']);
    expect([0, 1, 2, 3]).toContain(r.exitCode);
    expect(r.stdout).toContain('"checks"');
    expect(r.modules.filter((m) => UI.test(m) || SDK.test(m))).toEqual([]);
    expect(r.modules.filter((m) => /\/dist\/(main|app)\.js|\/dist\/screens\//.test(m))).toEqual([]);
  });

  it('the hook sees an SDK when one is used: wal-fetch from s3:// loads the AWS SDK and not Azure', async () => {
    const dest = path.join(tempDir('pgrunbook-startup-s3-'), 'seg');
    // Nothing listens on port 1: the fetch fails after the driver (and its SDK) loaded.
    const r = await traced(['wal-fetch', '--repo', 's3://bucket/prefix?endpoint=http://127.0.0.1:1', '000000010000000000000001', dest], {
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      AWS_REGION: 'us-east-1',
    });
    expect(r.exitCode).not.toBe(0);
    expect(r.modules.some((m) => /node_modules\/@aws-sdk\/client-s3\//.test(m))).toBe(true);
    expect(r.modules.filter((m) => /node_modules\/@azure\//.test(m) || UI.test(m))).toEqual([]);
  });
});

describe('npm start builds only when dist is stale (scripts/ensure-built.mjs --check)', () => {
  // A copy of the layout, so that touching a source here never makes another test rebuild.
  function layout() {
    const root = tempDir('pgrunbook-ensure-built-');
    fs.mkdirSync(path.join(root, 'scripts'));
    fs.copyFileSync(path.join(ROOT, 'scripts', 'ensure-built.mjs'), path.join(root, 'scripts', 'ensure-built.mjs'));
    fs.mkdirSync(path.join(root, 'src', 'sub'), { recursive: true });
    fs.mkdirSync(path.join(root, 'dist', 'sub'), { recursive: true });
    for (const f of ['tsconfig.json', 'tsconfig.build.json']) fs.writeFileSync(path.join(root, f), '{}\n');
    fs.writeFileSync(path.join(root, 'src', 'a.ts'), 'export {};\n');
    fs.writeFileSync(path.join(root, 'src', 'sub', 'b.tsx'), 'export {};\n');
    const old = new Date(Date.now() - 60_000);
    for (const f of ['tsconfig.json', 'tsconfig.build.json', 'src/a.ts', 'src/sub/b.tsx']) fs.utimesSync(path.join(root, f), old, old);
    return root;
  }
  const check = async (root: string) => {
    const r = await execa('node', [path.join(root, 'scripts', 'ensure-built.mjs'), '--check'], { reject: false });
    return { exitCode: r.exitCode, out: String(r.stdout) };
  };

  it('says current when every output exists and no source is newer than the build; names what changed otherwise', async () => {
    const root = layout();
    expect(await check(root)).toEqual({ exitCode: 1, out: 'build needed: dist/ was never built' });
    fs.writeFileSync(path.join(root, 'dist', 'a.js'), '');
    fs.writeFileSync(path.join(root, 'dist', '.tsbuildinfo'), '');
    expect(await check(root)).toEqual({ exitCode: 1, out: 'build needed: dist/sub/b.js is missing' });
    fs.writeFileSync(path.join(root, 'dist', 'sub', 'b.js'), '');
    expect(await check(root)).toEqual({ exitCode: 0, out: 'dist is current' });
    const later = new Date(Date.now() + 5_000);
    fs.utimesSync(path.join(root, 'src', 'sub', 'b.tsx'), later, later);
    expect(await check(root)).toEqual({ exitCode: 1, out: 'build needed: src/sub/b.tsx changed' });
  });

  it('package.json starts through the check, not through a full tsc run', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts.prestart).toBe('node scripts/ensure-built.mjs');
  });
});
