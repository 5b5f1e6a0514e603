// `pgrunbook wal-push %p` (archive_command) and `pgrunbook wal-fetch %f %p` (restore_command).
// PostgreSQL runs these once per WAL file: they load only the storage driver they use, and
// talk to the server log through stderr. Exit 0 means durably stored / fetched; anything else
// tells PostgreSQL to retry (push) or that the file is not available (fetch).
import path from 'node:path';
import { openStore } from '../storage/url.js';
import { fetchWal, pushWal, type WalCompression } from '../repo/walarchive.js';
import { EnvFileError, loadEnvFile } from './env-file.js';

const USAGE = `usage:
  pgrunbook wal-push [--env-file FILE] [--repo URL] [--compress gzip|none] [--compress-level 1-9] %p
  pgrunbook wal-fetch [--env-file FILE] [--repo URL] %f %p
--env-file loads KEY=VALUE lines (the repository's credentials) from a file only its owner may read (chmod 600);
they override the environment.
The repository comes from --repo or PGRUNBOOK_REPO (file:///path, s3://bucket/prefix, azure://container/prefix);
compression from --compress / PGRUNBOOK_WAL_COMPRESS (default gzip) and --compress-level / PGRUNBOOK_WAL_COMPRESS_LEVEL (default 1).`;

interface WalArgs {
  repo?: string;
  compression: WalCompression;
  level: number;
  verbose: boolean;
  positionals: string[];
}

function parse(argv: string[], env: NodeJS.ProcessEnv): WalArgs {
  const out: WalArgs = {
    repo: env.PGRUNBOOK_REPO || undefined,
    compression: (env.PGRUNBOOK_WAL_COMPRESS as WalCompression) || 'gzip',
    level: env.PGRUNBOOK_WAL_COMPRESS_LEVEL ? Number(env.PGRUNBOOK_WAL_COMPRESS_LEVEL) : 1,
    verbose: false,
    positionals: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--env-file' || a.startsWith('--env-file=')) value(); // loaded before parsing
    else if (a === '--repo' || a.startsWith('--repo=')) out.repo = value();
    else if (a === '--compress' || a.startsWith('--compress=')) out.compression = value() as WalCompression;
    else if (a === '--compress-level' || a.startsWith('--compress-level=')) out.level = Number(value());
    else if (a === '--verbose') out.verbose = true;
    else if (a.startsWith('--')) throw new Error(`unknown option ${a}`);
    else out.positionals.push(a);
  }
  if (out.compression !== 'gzip' && out.compression !== 'none') throw new Error(`--compress must be gzip or none, got "${out.compression}"`);
  if (!Number.isInteger(out.level) || out.level < 1 || out.level > 9) throw new Error(`--compress-level must be 1-9, got "${out.level}"`);
  if (!out.repo) throw new Error('no repository: pass --repo URL in archive_command/restore_command, or set PGRUNBOOK_REPO in the server\'s environment');
  return out;
}

/**
 * The value of --env-file (last one wins), if given. Node.js itself looks at --env-file even after
 * the script name (nodejs/node#54232): a file it cannot read ends the process with exit code 9 and
 * "node: FILE: not found" before this code runs; a readable one is then checked and loaded here.
 */
function envFileArg(argv: string[]): string | undefined {
  let file: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--env-file') file = argv[++i] ?? '';
    else if (a.startsWith('--env-file=')) file = a.slice('--env-file='.length);
  }
  return file;
}

export async function walCommand(command: 'wal-push' | 'wal-fetch', argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const say = (msg: string) => process.stderr.write(`pgrunbook ${command}: ${msg}\n`);
  const envFile = envFileArg(argv);
  if (envFile !== undefined) {
    if (!envFile) {
      say(`--env-file needs a file name\n${USAGE}`);
      return 2;
    }
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
  let args: WalArgs;
  try {
    args = parse(argv, env);
  } catch (err) {
    say(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const want = command === 'wal-push' ? 1 : 2;
  if (args.positionals.length !== want) {
    say(`expected ${want === 1 ? 'the WAL file path (%p)' : 'the WAL file name and destination path (%f %p)'}\n${USAGE}`);
    return 2;
  }
  const started = Date.now();
  let store;
  try {
    store = await openStore(args.repo!, env);
  } catch (err) {
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
