// What a platform team gets from the registry: `npm pack` of this working tree (dist/ as built
// before vitest starts), installed into an empty prefix with production dependencies only, run
// through the `pgrunbook` bin that npm links. The install downloads the dependencies from the npm
// registry, so it needs the network.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, cleanEnv, tempDir } from './helpers/cli.js';

const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  files: string[];
  engines: { node: string };
  bin: Record<string, string>;
};

const work = tempDir('pgrunbook-pack-');
const packDir = path.join(work, 'pack');
const prefix = path.join(work, 'prefix');
let tarball = '';
let entries: { mode: string; name: string }[] = [];
let installError: string | undefined;

// npm's own environment, without the npm_* variables vitest inherited from `npm test` (they would
// point the nested npm at this project's config).
function npmEnv(): Record<string, string> {
  const env = cleanEnv();
  for (const k of Object.keys(env)) if (k.toLowerCase().startsWith('npm_')) delete env[k];
  return env;
}

function srcModules(): Set<string> {
  const out = new Set<string>();
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.tsx?$/.test(e.name) && !e.name.endsWith('.d.ts')) out.add(path.relative(path.join(ROOT, 'src'), p).replace(/\.tsx?$/, '.js'));
    }
  };
  walk(path.join(ROOT, 'src'));
  return out;
}

beforeAll(async () => {
  fs.mkdirSync(packDir);
  fs.mkdirSync(prefix);
  // --ignore-scripts: dist/ is already built (npm test builds before vitest); `prepare` would
  // rebuild it under the feet of other test files running the CLI from it.
  const pack = await execa('npm', ['pack', '--pack-destination', packDir, '--ignore-scripts', '--json'], {
    cwd: ROOT, reject: false, extendEnv: false, env: npmEnv(),
  });
  if (pack.exitCode !== 0) throw new Error(`npm pack failed (exit ${pack.exitCode}): ${pack.stderr}`);
  const [info] = JSON.parse(pack.stdout) as { filename: string }[];
  tarball = path.join(packDir, info.filename);
  const list = await execa('tar', ['-tvzf', tarball], { reject: false });
  if (list.exitCode !== 0) throw new Error(`tar -tvzf ${tarball} failed: ${list.stderr}`);
  entries = list.stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => {
      const f = l.trim().split(/\s+/);
      return { mode: f[0], name: f.slice(5).join(' ') };
    });

  const install = await execa('npm', ['install', '--prefix', prefix, tarball, '--no-audit', '--no-fund', '--omit=dev', '--loglevel=error'], {
    cwd: prefix, reject: false, extendEnv: false, env: npmEnv(), timeout: 420_000,
  });
  if (install.exitCode !== 0) {
    const text = `${install.stderr}\n${install.stdout}`;
    installError = /ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|network|socket hang up/i.test(text)
      ? `the npm registry could not be reached, so the packed tarball could not be installed (this test needs the network): ${text.trim().split('\n').slice(-5).join(' | ')}`
      : `npm install of the packed tarball failed (exit ${install.exitCode}${install.timedOut ? ', timed out' : ''}): ${text.trim().split('\n').slice(-15).join('\n')}`;
  }
}, 480_000);

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

describe('the npm package', () => {
  it('holds the compiled CLI, the cron scripts (executable) and the docs, and nothing of the tests, sources, bench or source maps', () => {
    const names = entries.map((e) => e.name.replace(/^package\//, ''));
    expect(names).toContain('package.json');
    expect(names).toContain('LICENSE');
    expect(names).toContain('README.md');
    expect(names).toContain(pkg.bin.pgrunbook);
    for (const script of fs.readdirSync(path.join(ROOT, 'scripts', 'disaster-recovery'))) {
      const entry = entries.find((e) => e.name === `package/scripts/disaster-recovery/${script}`);
      expect(entry, script).toBeDefined();
      expect(entry!.mode, `${script} must stay executable (cron runs it directly)`).toMatch(/^-rwx/);
    }
    const unexpected = names.filter(
      (n) => !(/^dist\/.+\.js$/.test(n) || n.startsWith('scripts/disaster-recovery/') || ['package.json', 'README.md', 'LICENSE', 'ARCHITECTURE.md'].includes(n)),
    );
    expect(unexpected).toEqual([]);
    expect(names.filter((n) => /^(test|bench|src|\.ci|deploy)\//.test(n))).toEqual([]);
    expect(names.filter((n) => /\.(ts|tsx|map|tsbuildinfo)$/.test(n) && !n.endsWith('.d.ts'))).toEqual([]);

    // Every compiled file comes from a current source module (a stale dist/ file of a deleted
    // module would otherwise ship), and every module is there.
    const modules = srcModules();
    const shipped = names.filter((n) => n.startsWith('dist/')).map((n) => n.slice('dist/'.length));
    expect(shipped.filter((m) => !modules.has(m))).toEqual([]);
    expect([...modules].filter((m) => !shipped.includes(m))).toEqual([]);
    // One file per module plus a handful of others: 168 modules today, so not under 150 as
    // a bundle would be; the bound is what keeps tests and data out.
    expect(names.length).toBeLessThanOrEqual(modules.size + 20);
  });

  it('installs from the tarball into an empty prefix without a build, and its pgrunbook bin lists the procedures and prints the version', async () => {
    if (installError) throw new Error(installError);
    const bin = path.join(prefix, 'node_modules', '.bin', 'pgrunbook');
    expect(fs.existsSync(bin)).toBe(true);
    // Production dependencies only: no TypeScript, no test servers in the prefix.
    expect(fs.existsSync(path.join(prefix, 'node_modules', 'typescript'))).toBe(false);
    expect(fs.existsSync(path.join(prefix, 'node_modules', 'vitest'))).toBe(false);
    expect(fs.existsSync(path.join(prefix, 'node_modules', 'pgrunbook', 'test'))).toBe(false);

    const list = await execa(bin, ['--list'], { reject: false, extendEnv: false, env: cleanEnv({ PGRUNBOOK_STATE_DIR: path.join(work, 'state') }), cwd: work });
    expect(list.stderr).toBe('');
    expect(list.exitCode).toBe(0);
    for (const name of ['verify', 'backup-logical', 'backup-base', 'wal-archiving', 'retention', 'pitr', 'promote', 'logical-restore', 'table-restore', 'drill']) {
      expect(list.stdout).toMatch(new RegExp(`^${name}\\s+\\S+\\s+\\S`, 'm'));
    }

    const version = await execa(bin, ['--version'], { reject: false, extendEnv: false, env: cleanEnv(), cwd: work });
    expect(version.exitCode).toBe(0);
    expect(version.stdout.trim()).toBe(pkg.version);

    // The cron scripts find the installed CLI next to them.
    const script = path.join(prefix, 'node_modules', 'pgrunbook', 'scripts', 'disaster-recovery', 'lib.sh');
    const viaLib = await execa('bash', ['-c', `source "$0"; "\${PGRUNBOOK[@]}" --version`, script], { reject: false, extendEnv: false, env: cleanEnv() });
    expect(viaLib.exitCode).toBe(0);
    expect(viaLib.stdout.trim()).toBe(pkg.version);
  });

  it('declares MIT with a LICENSE, and Node 20 (from 20.5), 22 and 24 as supported, as the README says', () => {
    expect(pkg.engines.node).toBe('^20.5.0 || ^22.0.0 || ^24.0.0');
    const license = fs.readFileSync(path.join(ROOT, 'LICENSE'), 'utf8');
    expect(license).toMatch(/^MIT License/);
    expect(license).toContain('pgrunbook contributors');
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    expect(readme).toContain('Node 20 (end of life April 2026), 22 and 24');
  });
});
