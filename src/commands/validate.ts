// Cheap checks of what the command line names, before anything is opened or created: a
// repository URL's form, a state directory journals can be written to, a data directory that is
// not in a kernel file system. Each failure is bad usage (exit 2) naming the valid forms.
import fs from 'node:fs';
import path from 'node:path';
import { parseRepoUrl } from '../storage/url.js';
import { redactSecrets } from '../storage/location.js';
import { CliUsageError } from './registry.js';

export const REPO_FORMS_HINT = 'a repository URL is file:///absolute/path (or just /absolute/path), s3://bucket/prefix or azure://container/prefix';

/** The URL's syntax only: no file system, no network. `file:relative` is refused (not read as /relative). */
export function checkRepoUrl(url: string, env: NodeJS.ProcessEnv, opts: { source?: string; exit?: number } = {}): void {
  const source = opts.source ?? '--repo';
  // The URL may carry credentials in its query: never echo them.
  const shown = redactSecrets(url);
  if (/^file:(?!\/)/i.test(url.trim())) {
    throw new CliUsageError(`${source} ${shown}: a file: URL needs an absolute path (file:///var/backups/pg), a relative one is not allowed`, REPO_FORMS_HINT, opts.exit ?? 2);
  }
  try {
    parseRepoUrl(url, env);
  } catch (err) {
    if ((err as { code?: string }).code === 'invalid-url' || (err as { code?: string }).code === 'invalid-argument') {
      throw new CliUsageError(redactSecrets(`${source} ${shown}: ${(err as Error).message}`), REPO_FORMS_HINT, opts.exit ?? 2);
    }
    throw err;
  }
}

const KERNEL_FS = ['/proc', '/sys', '/dev'];

function kernelRoot(p: string): string | undefined {
  return KERNEL_FS.find((k) => p === k || p.startsWith(`${k}/`));
}

/** The nearest existing ancestor of a path (the path itself when it exists). */
function existingAncestor(p: string): string {
  let at = p;
  for (;;) {
    try {
      fs.statSync(at);
      return at;
    } catch {
      const up = path.dirname(at);
      if (up === at) return at;
      at = up;
    }
  }
}

/** Journals go here: it must be (or be creatable in) a writable directory on a real file system. */
export function checkStateDir(dir: string, source = '--state-dir'): void {
  const hint = 'give a writable directory with --state-dir DIR or PGRUNBOOK_STATE_DIR (default ~/.local/state/pgrunbook)';
  const resolved = path.resolve(dir);
  const base = existingAncestor(resolved);
  let real = base;
  try {
    real = fs.realpathSync(base);
  } catch {
    // keep base
  }
  const kernel = kernelRoot(resolved) ?? kernelRoot(real);
  if (kernel) throw new CliUsageError(`${source} ${dir} is in ${kernel}, a kernel file system: journals cannot be written there`, hint);
  const st = fs.statSync(base);
  if (!st.isDirectory()) throw new CliUsageError(`${source} ${dir}: ${base} is not a directory`, hint);
  try {
    fs.accessSync(base, fs.constants.W_OK);
  } catch (err) {
    throw new CliUsageError(`${source} ${dir}: ${base} is not writable (${(err as NodeJS.ErrnoException).code ?? 'access denied'})`, hint);
  }
}

/** A data directory never lives in /proc, /sys or /dev; an existing one is a directory. */
export function checkDataDir(dir: string, source = '--pgdata'): void {
  const hint = 'give the cluster\'s data directory with --pgdata DIR (or PGDATA), e.g. /var/lib/postgresql/15/main';
  const resolved = path.resolve(dir);
  const kernel = kernelRoot(resolved);
  if (kernel) throw new CliUsageError(`${source} ${dir} is in ${kernel}, a kernel file system, not a PostgreSQL data directory`, hint);
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(resolved);
  } catch {
    return; // a missing one is for the procedure to judge (some create it)
  }
  if (!st.isDirectory()) throw new CliUsageError(`${source} ${dir} is not a directory`, hint);
}
