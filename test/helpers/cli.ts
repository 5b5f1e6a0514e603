// Runs the built CLI (dist/cli.js, made by `npm test` before vitest starts) as a real subprocess.
import fs from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';

export const ROOT = path.resolve(import.meta.dirname, '..', '..');
export const CLI = path.join(ROOT, 'dist', 'cli.js');
export const DEMO_PROCEDURES = path.join(ROOT, 'test', 'fixtures', 'demo-procedures.mjs');

if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build (npm test does it) before vitest`);

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** A clean environment: no PG* or PGRUNBOOK_* from the developer's shell leaks into a test. */
export function cleanEnv(extra: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || k.startsWith('PG') || k.startsWith('PGRUNBOOK_') || k === 'NO_COLOR' || k === 'CI') continue;
    env[k] = v;
  }
  // Hints name the command that runs this install (src/engine/command-name.ts): `node
  // /abs/dist/cli.js` here, where pgrunbook is not on PATH. Tests read them as `pgrunbook ...`;
  // test/resume-hints.test.ts passes PGRUNBOOK_COMMAND: '' to see the detection itself.
  env.PGRUNBOOK_COMMAND = 'pgrunbook';
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v;
  return env;
}

export function startCli(args: string[], env: Record<string, string | undefined> = {}): ResultPromise<{ reject: false; extendEnv: false; stdin: 'ignore' }> {
  return execa('node', [CLI, ...args], { reject: false, extendEnv: false, env: cleanEnv(env), stdin: 'ignore' });
}

export async function runCli(args: string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  const r = await startCli(args, env);
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

export function jsonLines(stdout: string): Record<string, any>[] {
  return stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, any>);
}

import { tempDir } from './temp.js';

export { tempDir };

/** A temp dir the PostgreSQL server (the postgres OS user when the tests run as root) can write. */
/** A repository directory inside `parent` that the server's OS user owns (archive_command writes it). */
export async function serverOwnedRepoDir(parent: string, name = 'repo'): Promise<string> {
  const { isRoot, lookupUser } = await import('../../src/postgres/osuser.js');
  const dir = path.join(parent, name);
  fs.mkdirSync(dir);
  if (isRoot()) {
    const pg = await lookupUser('postgres');
    fs.chownSync(dir, pg.uid, pg.gid);
  }
  return dir;
}

export async function serverWritableDir(prefix: string): Promise<string> {
  const { isRoot, lookupUser } = await import('../../src/postgres/osuser.js');
  const dir = tempDir(prefix);
  if (isRoot()) {
    const pg = await lookupUser('postgres');
    fs.chownSync(dir, pg.uid, pg.gid);
  }
  fs.chmodSync(dir, 0o755);
  return dir;
}
