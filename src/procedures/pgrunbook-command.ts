// The command lines PostgreSQL itself runs (archive_command, restore_command): this
// installation's pgrunbook, by absolute path because the server's PATH is not ours.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { shellQuote } from '../engine/runner.js';

export function pgrunbookOnPath(env: NodeJS.ProcessEnv): string | undefined {
  for (const dir of (env.PATH ?? '').split(path.delimiter).filter(Boolean)) {
    const candidate = path.join(dir, 'pgrunbook');
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // next
    }
  }
  return undefined;
}

/** dist/cli.js of this installation (this module is dist/procedures/pgrunbook-command.js). */
export function cliScriptPath(): string {
  const here = fileURLToPath(import.meta.url);
  const sibling = path.resolve(path.dirname(here), '..', 'cli.js');
  if (fs.existsSync(sibling)) return sibling;
  // Running from the TypeScript sources (tests, tsx): the built CLI of the same checkout.
  return path.resolve(path.dirname(here), '..', '..', 'dist', 'cli.js');
}

/** PostgreSQL expands %p, %f and %% in archive_command and restore_command: a literal % must be doubled. */
export function percentEscape(text: string): string {
  return text.replace(/%/g, '%%');
}

/**
 * `pgrunbook wal-push --repo URL %p` or `pgrunbook wal-fetch --repo URL %f %p`, with the
 * absolute path of a `pgrunbook` on PATH, else this installation's node and dist/cli.js.
 */
export function walCommandLine(sub: 'wal-push' | 'wal-fetch', repo: string, env: NodeJS.ProcessEnv): { command: string; program: { node?: string; script: string } } {
  const arg = (v: string) => percentEscape(shellQuote(v));
  const tail = sub === 'wal-push' ? '%p' : '%f %p';
  const onPath = pgrunbookOnPath(env);
  if (onPath) return { command: `${arg(onPath)} ${sub} --repo ${arg(repo)} ${tail}`, program: { script: onPath } };
  const script = cliScriptPath();
  return { command: `${arg(process.execPath)} ${arg(script)} ${sub} --repo ${arg(repo)} ${tail}`, program: { node: process.execPath, script } };
}
