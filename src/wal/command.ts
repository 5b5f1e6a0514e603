// `pgrunbook wal-push %p` (archive_command) and `pgrunbook wal-fetch %f %p` (restore_command).
// PostgreSQL runs these once per WAL file: they load only the storage driver they use, and
// talk to the server log through stderr. Exit 0 means durably stored / fetched; anything else
// tells PostgreSQL to retry (push) or that the file is not available (fetch).
//
// Start-up is most of a push's cost, so only the argument parsing is imported up front (--help
// and a usage error load nothing more); the repository code, the storage URL parsing and the
// spool's slow paths are imported once the arguments say they are needed (test/startup.test.ts
// pins what each case loads).
import path from 'node:path';
import type { WalCompression } from '../repo/layout.js';
import type { SpoolContext } from './async.js';
import { CliUsageError, WAL_FETCH, WAL_PUSH, checkPositionals, commandHelp, parseCommand, type CommandDecl, type RawFlags } from '../commands/registry.js';
import type { checkRepoUrl } from '../commands/validate.js';

interface WalArgs {
  repo?: string;
  compression: WalCompression;
  level: number;
  verbose: boolean;
  spool?: string;
  positionals: string[];
}

/** Flags over the environment (which --env-file may have extended) over the defaults. */
function resolve(decl: CommandDecl, flags: RawFlags, positionals: string[], env: NodeJS.ProcessEnv, checkRepo: typeof checkRepoUrl): WalArgs {
  const str = (k: string) => (typeof flags[k] === 'string' ? (flags[k] as string) : undefined);
  const out: WalArgs = {
    repo: str('repo') ?? (env.PGRUNBOOK_REPO || undefined),
    compression: (str('compress') ?? (env.PGRUNBOOK_WAL_COMPRESS || 'zstd')) as WalCompression,
    level: Number(str('compress-level') ?? (env.PGRUNBOOK_WAL_COMPRESS_LEVEL || 1)),
    verbose: flags.verbose === true,
    spool: str('spool') ? path.resolve(str('spool')!) : undefined,
    positionals,
  };
  const hint = `see: pgrunbook ${decl.name} --help`;
  if (out.compression !== 'zstd' && out.compression !== 'gzip' && out.compression !== 'none') throw new CliUsageError(`--compress must be zstd, gzip or none, got "${out.compression}"`, hint);
  if (!Number.isInteger(out.level) || out.level < 1 || out.level > (out.compression === 'zstd' ? 19 : 9)) throw new CliUsageError(`--compress-level must be 1-${out.compression === 'zstd' ? 19 : 9}, got "${str('compress-level') ?? env.PGRUNBOOK_WAL_COMPRESS_LEVEL}"`, hint);
  if (!out.repo) {
    throw new CliUsageError('no repository', "pass --repo URL in archive_command/restore_command, or set PGRUNBOOK_REPO in the server's environment");
  }
  checkRepo(out.repo, env, { source: str('repo') ? '--repo' : 'PGRUNBOOK_REPO' });
  checkPositionals(decl, positionals);
  return out;
}

export async function walCommand(command: 'wal-push' | 'wal-fetch', argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const say = (msg: string) => process.stderr.write(`pgrunbook ${command}: ${msg}\n`);
  const decl = command === 'wal-push' ? WAL_PUSH : WAL_FETCH;
  const usage = async (err: unknown): Promise<number> => {
    const { errorMessage, hintOf, usageReport } = await import('../engine/errors.js');
    process.stderr.write(usageReport(errorMessage(err), hintOf(err), `pgrunbook ${command}`));
    return err instanceof CliUsageError ? err.exitCode : 2;
  };
  let flags: RawFlags;
  let positionals: string[];
  try {
    ({ flags, positionals } = parseCommand(decl, argv));
  } catch (err) {
    return usage(err);
  }
  if (flags.help) {
    // As cli.ts does for the other commands: a reader that stops early is no error worth a stack trace.
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw err;
    });
    process.stdout.write(commandHelp(decl));
    return 0;
  }
  const envFile = typeof flags['env-file'] === 'string' ? flags['env-file'] : undefined;
  // What the server gave this command, before --env-file: the environment its background worker gets.
  const serverEnv = { ...env };
  if (envFile !== undefined) {
    if (!envFile) return usage(new CliUsageError('--env-file needs a file name', `see: pgrunbook ${command} --help`));
    const { EnvFileError, loadEnvFile } = await import('./env-file.js');
    try {
      const vars = await loadEnvFile(path.resolve(envFile));
      // The file's values win: the server's environment may hold stale or foreign credentials.
      if (env === process.env) Object.assign(process.env, vars); // the SDKs' own credential chains read process.env
      env = { ...env, ...vars };
    } catch (err) {
      say(err instanceof EnvFileError ? err.message : `cannot load ${envFile}: ${(err as Error).message}`);
      return 2;
    }
  }
  const { checkRepoUrl } = await import('../commands/validate.js');
  let args: WalArgs;
  try {
    args = resolve(decl, flags, positionals, env, checkRepoUrl);
  } catch (err) {
    if (err instanceof CliUsageError) return usage(err);
    throw err;
  }
  const started = Date.now();
  if (args.spool) {
    const { acknowledgeFromSpool, fetchFromSpool } = await import('./async.js');
    const c: SpoolContext = { spool: args.spool, serverEnv, say, verbose: args.verbose, repo: args.repo!, compression: args.compression, level: args.level, envFile };
    try {
      if (command === 'wal-push' ? await acknowledgeFromSpool(args.positionals[0], c) : await fetchFromSpool(args.positionals[0], path.resolve(args.positionals[1]), c)) {
        if (args.verbose) say(`${path.basename(args.positionals[0])} ${command === 'wal-push' ? 'was pushed ahead' : 'was prefetched'} (spool ${args.spool}) in ${Date.now() - started} ms`);
        return 0;
      }
    } catch (err) {
      say(`the spool ${args.spool} failed (${(err as Error).message}); working synchronously`);
    }
  }
  const [{ openRepoStore, RepoKeyError }, { fetchWal, pushWal }] = await Promise.all([import('../repo/encryption.js'), import('../repo/walarchive.js')]);
  let store;
  try {
    // --repo-key-file (never the passphrase) is how archive_command names an encrypted repository's key.
    const keyFile = typeof flags['repo-key-file'] === 'string' ? { PGRUNBOOK_REPO_KEY_FILE: path.resolve(flags['repo-key-file']) } : {};
    store = await openRepoStore(args.repo!, { ...env, ...keyFile });
  } catch (err) {
    if (err instanceof RepoKeyError) return usage(err);
    say((err as Error).message);
    return 1;
  }
  try {
    if (command === 'wal-push') {
      const source = args.positionals[0];
      const r = await pushWal(store, source, { compression: args.compression, level: args.level });
      if (r.status === 'already-archived') say(`${r.name} was already archived with the same contents (${r.key}); nothing to do`);
      else if (args.verbose) say(`${r.name} stored as ${r.key} (${r.rawSize} -> ${r.storedSize} bytes) in ${Date.now() - started} ms`);
      return 0;
    }
    const [name, dest] = args.positionals;
    const r = await fetchWal(store, name, path.resolve(dest), { preferred: args.compression });
    if (r.status === 'missing') {
      // PostgreSQL probes for files that may not exist (the next timeline's history, the
      // segment after the last one): not an error, so say nothing unless asked.
      if (args.verbose) say(`${name} is not in the archive`);
      return 1;
    }
    if (args.verbose) say(`${name} fetched from ${r.key} in ${Date.now() - started} ms`);
    return 0;
  } catch (err) {
    say(`${(err as Error).message}`);
    return 1;
  } finally {
    await store.close().catch(() => undefined);
  }
}
