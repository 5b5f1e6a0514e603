// How to call this pgrunbook, for every hint that prints a command ("continue with: pgrunbook
// --resume ID"): `pgrunbook` when that name on PATH is this installation (npm link, npm install
// -g .), else `node /abs/path/dist/cli.js`, which works from any directory. PGRUNBOOK_COMMAND
// overrides it (a wrapper such as `sudo -u postgres pgrunbook`).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { shellQuote } from './errors.js';

let cached: { key: string; command: string } | undefined;

/** `pgrunbook ARGS` in the words that run this installation here, e.g. `node /opt/pgrunbook/dist/cli.js --resume X`. */
export function pgrunbookCommand(args = '', env: NodeJS.ProcessEnv = process.env): string {
  const base = invocation(env);
  return args ? `${base} ${args}` : base;
}

/** The command that starts this installation (without arguments). */
export function invocation(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env.PGRUNBOOK_COMMAND?.trim();
  if (explicit) return explicit;
  const key = env.PATH ?? '';
  if (cached?.key === key) return cached.command;
  const command = detect(env);
  cached = { key, command };
  return command;
}

function detect(env: NodeJS.ProcessEnv): string {
  // This module is dist/engine/command-name.js; the entry point is dist/cli.js. Run from the
  // TypeScript sources (tests, tsx) there is no built entry beside it: say the plain name.
  const script = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'cli.js');
  if (!fs.existsSync(script)) return 'pgrunbook';
  const real = realpath(script);
  const onPath = findOnPath('pgrunbook', env);
  if (onPath && realpath(onPath) === real) return 'pgrunbook';
  const nodeOnPath = findOnPath('node', env);
  const node = nodeOnPath && realpath(nodeOnPath) === realpath(process.execPath) ? 'node' : shellQuote(process.execPath);
  return `${node} ${shellQuote(real)}`;
}

function realpath(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

/** The first executable file `name` in env.PATH. */
export function findOnPath(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const dir of (env.PATH ?? '').split(path.delimiter).filter(Boolean)) {
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // next
    }
  }
  return undefined;
}
