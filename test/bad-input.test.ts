// Bad input through the real CLI, one row each: the documented exit code, a line naming the
// problem and a `hint:` line saying what to do, no stack trace, nothing created, within 2 s.
// Also: --help on every command (exit 0), the bash completion sourced in a real bash, and the
// README's global options table against the command registry.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, runCli, tempDir } from './helpers/cli.js';
import { GLOBAL, SUBCOMMANDS } from '../src/commands/registry.js';
import { loadBuiltInProcedures } from '../src/procedures/index.js';
import { parseTimeMicros } from '../src/restore/target.js';

const procedures = await loadBuiltInProcedures();

const sandbox = tempDir('pgrunbook-bad-input-');
const aFile = path.join(sandbox, 'a-file');
fs.writeFileSync(aFile, 'not a directory\n');
const repo = `file://${path.join(sandbox, 'repo')}`;
const env = {
  HOME: path.join(sandbox, 'home'),
  PGRUNBOOK_STATE_DIR: path.join(sandbox, 'state'),
  PGRUNBOOK_CONFIG_DIR: path.join(sandbox, 'config'),
};

afterAll(() => fs.rmSync(sandbox, { recursive: true, force: true }));

function listing(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true }).map(String).sort();
}

const REPO_FORMS = /hint: .*file:\/\/\/.*s3:\/\/bucket.*azure:\/\/container/;

// [what, args, exit code, the problem (stderr), hint (stderr) or undefined for any hint line]
const rows: [string, string[], number, RegExp, RegExp?][] = [
  ['unknown option, top level', ['--bogus'], 2, /^pgrunbook: unknown option --bogus for pgrunbook$/m, /^hint: .*pgrunbook --help/m],
  ['unknown option after a value-taking one', ['--bogus', 'x'], 2, /unknown option --bogus for pgrunbook/, /--help/],
  ['unknown option of a procedure', ['--procedure', 'pitr', '--bogus'], 2, /unknown option --bogus for procedure pitr/, /^hint: .*pgrunbook --procedure pitr --help/m],
  ['unknown option of catalog', ['catalog', '--bogus'], 2, /unknown option --bogus for catalog/, /pgrunbook catalog --help/],
  ['unknown option of wal-push', ['wal-push', '--bogus'], 2, /unknown option --bogus for wal-push/, /pgrunbook wal-push --help/],
  ['unknown option of wal-fetch', ['wal-fetch', '--bogus'], 2, /unknown option --bogus for wal-fetch/, /pgrunbook wal-fetch --help/],
  ['unknown option of status (UNKNOWN)', ['status', '--bogus'], 3, /unknown option --bogus for status/, /pgrunbook status --help/],
  ['unknown option of profile save', ['profile', 'save', 'x', '--bogus'], 2, /unknown option --bogus for profile/, /pgrunbook profile --help/],
  ['unknown option of completion', ['completion', '--bogus'], 2, /unknown option --bogus for completion/, /--help/],
  ['missing value, top level', ['--repo'], 2, /^pgrunbook: --repo needs a value$/m, /--repo URL/],
  ['missing value before another option', ['--procedure', 'verify', '--repo', '--json'], 2, /--repo needs a value/],
  ['missing value of catalog', ['catalog', '--repo'], 2, /--repo needs a value/],
  ['missing value of wal-push', ['wal-push', '--repo'], 2, /--repo needs a value/],
  ['missing value of status', ['status', '--repo'], 3, /--repo needs a value/],
  ['a boolean given a value', ['catalog', '--json=yes', '--repo', repo], 2, /--json takes no value/],
  ['impossible date', ['--procedure', 'pitr', '--target', '2026-02-30T00:00:00Z', '--pgdata', path.join(sandbox, 'pgdata'), '--repo', repo], 2, /there is no 2026-02-30/, /pgrunbook --procedure pitr --help/],
  ['file:relative', ['--procedure', 'verify', '--repo', 'file:relative'], 2, /--repo file:relative: .*absolute path/, REPO_FORMS],
  ['nosuch://x', ['--procedure', 'verify', '--repo', 'nosuch://x'], 2, /--repo nosuch:\/\/x: .*unknown scheme/, REPO_FORMS],
  ['s3:// without a bucket', ['--procedure', 'verify', '--repo', 's3://'], 2, /--repo s3:\/\/: .*bucket is missing/, REPO_FORMS],
  ['catalog file:relative', ['catalog', '--repo', 'file:relative'], 2, /file:relative/, REPO_FORMS],
  ['wal-push nosuch://x', ['wal-push', '--repo', 'nosuch://x', path.join(sandbox, '000000010000000000000001')], 2, /unknown scheme/, REPO_FORMS],
  ['wal-fetch s3://', ['wal-fetch', '--repo', 's3://', '000000010000000000000001', path.join(sandbox, 'x')], 2, /bucket is missing/, REPO_FORMS],
  ['status nosuch://x (UNKNOWN)', ['status', '--repo', 'nosuch://x'], 3, /unknown scheme/, REPO_FORMS],
  ['profile save file:relative', ['profile', 'save', 'p', '--repo', 'file:relative'], 2, /absolute path/, REPO_FORMS],
  ['state directory in /proc', ['--procedure', 'verify', '--repo', repo, '--state-dir', '/proc/pgrunbook-state'], 2, /--state-dir \/proc\/pgrunbook-state is in \/proc/, /--state-dir DIR/],
  ['state directory under a file', ['--procedure', 'verify', '--repo', repo, '--state-dir', path.join(aFile, 'state')], 2, /is not a directory/, /writable directory/],
  ['data directory in /proc', ['--procedure', 'pitr', '--pgdata', '/proc/nope', '--repo', repo], 2, /--pgdata \/proc\/nope is in \/proc/, /--pgdata DIR/],
  ['unknown procedure', ['--procedure', 'nope'], 2, /unknown procedure "nope"; valid procedures: verify, /, /pgrunbook --list/],
  ['unknown profile', ['--procedure', 'verify', '--profile', 'nope'], 2, /no profile named "nope"/, /pgrunbook profile list/],
  ['unknown profile for status (UNKNOWN)', ['status', '--profile', 'nope', '--repo', repo], 3, /no profile named "nope"/, /pgrunbook profile list/],
  ['stray argument', ['verify'], 2, /unexpected argument "verify"/, /--help/],
  ['unknown shell', ['completion', 'tcsh'], 2, /no completion for the shell "tcsh"/, /bash/],
  ['a password on the command line, for a profile', ['profile', 'save', 'pw', '--dbname', 'postgresql://app:Pw0rdOnTheLine@127.0.0.1:5432/app'], 2, /password/i, /pgpass|PGPASSFILE/],
];

describe('bad input: exit code, the problem, a hint, no stack trace, nothing created, quickly', () => {
  it.each(rows)('%s', async (_what, args, code, problem, hint) => {
    const before = listing(sandbox);
    let started = Date.now();
    let r = await runCli(args, env);
    let elapsed = Date.now() - started;
    // Not a speed measure (bench/startup.ts is): bad input must be refused at once, never after a
    // connection or network timeout. 10 s tells those apart even on a loaded 2-core machine.
    if (elapsed >= 10_000) {
      started = Date.now();
      r = await runCli(args, env);
      elapsed = Date.now() - started;
    }
    expect(r.exitCode, r.stderr).toBe(code);
    expect(r.stderr).toMatch(problem);
    expect(r.stderr).toMatch(/^pgrunbook( [a-z-]+)?: /m);
    expect(r.stderr).toMatch(/^hint: \S/m);
    if (hint) expect(r.stderr).toMatch(hint);
    expect(r.stdout + r.stderr).not.toMatch(/\n\s+at |Error: |node:internal/);
    expect(r.stdout + r.stderr).not.toContain('Pw0rdOnTheLine');
    expect(listing(sandbox)).toEqual(before);
    expect(elapsed).toBeLessThan(10_000);
  });
});

describe('a bad repository URL never echoes its credentials', () => {
  it('exit 2 naming the problem, the secret masked', async () => {
    const r = await runCli(['catalog', '--repo', 's3://b/p?secretAccessKey=Sup3rSecretValue'], env);
    expect(r.exitCode, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/invalid repository URL/);
    expect(r.stdout + r.stderr).not.toContain('Sup3rSecretValue');
  });
});

describe('--help on every command', () => {
  const commands: string[][] = [['--help'], ...Object.keys(SUBCOMMANDS).map((c) => [c, '--help']), ...procedures.map((p) => ['--procedure', p.id, '--help'])];
  it.each(commands)('%s', async (...args) => {
    const r = await runCli(args, env);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/Usage:|Options:/);
    expect(r.stdout).toContain('--');
  });

  it('a procedure that needs a repository, run without one: exit 2 (bad usage) naming --repo, before it connects to anything', async () => {
    const noServer = ['--host', path.join(sandbox, 'no-server'), '--port', '1'];
    const data = ['--pgdata', path.join(sandbox, 'data')];
    const runs: string[][] = [
      ['backup-base'],
      ['backup-logical'],
      ['retention'],
      ['pitr', ...data, '--target', 'latest'],
      ['logical-restore', '--database', 'app'],
      ['restore-test'],
      ['wal-archiving', ...data],
    ];
    for (const [procedure, ...args] of runs) {
      const r = await runCli(['--procedure', procedure, ...noServer, ...args], env);
      expect(`${procedure}: exit ${r.exitCode}`, r.stdout.slice(-1500) + r.stderr).toBe(`${procedure}: exit 2`);
      expect(r.stdout, procedure).toMatch(/pass --repo URL/);
      expect(r.stdout + r.stderr, procedure).not.toMatch(/\n\s+at .*\.js:\d+/);
    }
  });

  it('--version and --list exit 0', async () => {
    const v = await runCli(['--version'], env);
    expect(v.exitCode).toBe(0);
    expect(v.stdout).toMatch(/^\d+\.\d+\.\d+/);
    const l = await runCli(['--list'], env);
    expect(l.exitCode).toBe(0);
    expect(l.stdout).toMatch(/^pitr\s+/m);
  });
});

describe('shell completion', () => {
  async function complete(words: string[]): Promise<string[]> {
    const script = `source <(node '${CLI}' completion bash); COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _pgrunbook; echo "\${COMPREPLY[@]}"`;
    const r = await execa('bash', ['-c', script], { reject: false });
    expect(r.exitCode, String(r.stderr)).toBe(0);
    return String(r.stdout).trim().split(/\s+/).filter(Boolean);
  }

  it('bash completes commands, procedure names and each procedure\'s options', async () => {
    const pitrT = await complete(['pgrunbook', '--procedure', 'pitr', '--t']);
    expect(pitrT).toEqual(expect.arrayContaining(['--target', '--target-action', '--timeline']));
    expect(pitrT.every((w) => w.startsWith('--t'))).toBe(true);
    expect(await complete(['pgrunbook', '--procedure', 'p'])).toEqual(['pitr', 'promote']);
    expect(await complete(['pgrunbook', 'st'])).toEqual(['status']);
    expect(await complete(['pgrunbook', 'wal-push', '--compress', ''])).toEqual(['zstd', 'gzip', 'none']);
    expect(await complete(['pgrunbook', '--procedure', 'pitr', '--target-action', ''])).toEqual(['pause', 'promote']);
    expect(await complete(['pgrunbook', 'catalog', '--'])).toEqual(expect.arrayContaining(['--repo', '--verify', '--since', '--parallel', '--json', '--help']));
  });

  it('zsh and fish scripts are made from the same declarations', async () => {
    const zsh = await runCli(['completion', 'zsh'], env);
    expect(zsh.exitCode).toBe(0);
    expect(zsh.stdout).toContain('bashcompinit');
    const fish = await runCli(['completion', 'fish'], env);
    expect(fish.exitCode).toBe(0);
    expect(fish.stdout).toContain('-l state-dir');
    expect(fish.stdout).toContain('-l target-action');
  });
});

describe('times in the form psql prints', () => {
  it('accepts a space and a zone of hours only (+00), and refuses impossible dates', () => {
    expect(parseTimeMicros('2026-11-24 03:14:00.123+00')).toBe(parseTimeMicros('2026-11-24T03:14:00.123Z'));
    expect(parseTimeMicros('2026-11-24 05:14:00.123456+02')).toBe(parseTimeMicros('2026-11-24T03:14:00.123456Z'));
    expect(parseTimeMicros('2026-11-24 03:14:00-05:30')).toBe(parseTimeMicros('2026-11-24T08:44:00Z'));
    expect(parseTimeMicros('2026-02-30 00:00:00+00')).toMatchObject({ error: expect.stringContaining('there is no 2026-02-30') });
  });
});

describe('README', () => {
  it("the global options table matches the registry's declarations, both ways", () => {
    const readme = fs.readFileSync(path.join(import.meta.dirname, '..', 'README.md'), 'utf8');
    const start = readme.indexOf('Options for every procedure:');
    expect(start).toBeGreaterThan(0);
    const table = readme.slice(start).split('\n\n')[1];
    const rowsText = table.split('\n').filter((l) => l.startsWith('| `'));
    const documented = new Map<string, string | undefined>();
    for (const row of rowsText) {
      const first = row.split(' | ')[0];
      for (const m of first.matchAll(/`(?:-([A-Za-z])\/)?--([a-z-]+)/g)) documented.set(m[2], m[1]);
    }
    const declared = new Map(GLOBAL.options.map((o) => [o.name, o.short]));
    expect([...documented.keys()].sort()).toEqual([...declared.keys()].sort());
    for (const [name, short] of declared) expect(documented.get(name), `--${name}'s short flag`).toBe(short);
  });
});

describe('the fast commands stay light', () => {
  // Static imports only (a dynamic import() loads on demand): wal-push, wal-fetch and --version
  // must not pull in Ink, React, the cloud SDKs, conf or the procedures.
  function staticClosure(entry: string): { files: Set<string>; packages: Set<string> } {
    const files = new Set<string>();
    const packages = new Set<string>();
    const visit = (file: string) => {
      if (files.has(file)) return;
      files.add(file);
      const text = fs.readFileSync(file, 'utf8');
      for (const m of text.matchAll(/^\s*(?:import|export)\s+(?!type\b)(?:[^'";]*?\sfrom\s+)?['"]([^'"]+)['"]/gm)) {
        const spec = m[1];
        if (spec.startsWith('.')) visit(path.resolve(path.dirname(file), spec.replace(/\.js$/, '.ts')).replace(/\.ts\.ts$/, '.ts'));
        else if (!spec.startsWith('node:')) packages.add(spec);
      }
    };
    visit(entry);
    return { files, packages };
  }
  it.each(['src/cli.ts', 'src/wal/command.ts', 'src/commands/registry.ts'])('%s', (entry) => {
    const { files, packages } = staticClosure(path.join(import.meta.dirname, '..', entry));
    const rel = [...files].map((f) => path.relative(path.join(import.meta.dirname, '..'), f));
    expect(rel.filter((f) => /src\/(main|app)\.tsx?$|src\/procedures\/|src\/screens\//.test(f))).toEqual([]);
    expect([...packages].filter((p) => /^(ink|react|conf|@aws-sdk|@azure|@smithy)/.test(p))).toEqual([]);
  });
});
