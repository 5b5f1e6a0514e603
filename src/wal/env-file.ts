// Credentials for archive_command / restore_command: a KEY=VALUE file readable only by the
// server's OS user (mode 0600), named on the command line (`--env-file FILE`), so the secrets are
// neither in the postmaster's environment nor in `ps`. Kept dependency-free: wal-push loads it
// once per WAL segment.
import fsp from 'node:fs/promises';

export class EnvFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EnvFileError';
  }
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `KEY=VALUE` lines (values taken literally, no quoting); refuses values with line breaks. */
export function formatEnvFile(vars: Record<string, string>, header?: string): string {
  const lines = header ? header.split('\n').map((l) => `# ${l}`) : [];
  for (const [k, v] of Object.entries(vars)) {
    if (!NAME.test(k)) throw new EnvFileError(`"${k}" is not an environment variable name`);
    if (/[\r\n\0]/.test(v)) throw new EnvFileError(`${k} holds a line break, which an env file cannot carry`);
    lines.push(`${k}=${v}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Parse KEY=VALUE lines; blank lines and # comments are skipped, an `export ` prefix is allowed. Errors name the line, never its content. */
export function parseEnvFile(text: string, file: string): Record<string, string> {
  const out: Record<string, string> = {};
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (!line.trim() || line.trimStart().startsWith('#')) return;
    const m = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) throw new EnvFileError(`${file} line ${i + 1} is not KEY=VALUE`);
    out[m[1]] = m[2];
  });
  return out;
}

/**
 * Read an env file, refusing one that group or others may access (it holds credentials): the
 * message says to chmod 600 it.
 */
export async function loadEnvFile(file: string): Promise<Record<string, string>> {
  let fh;
  try {
    fh = await fsp.open(file, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new EnvFileError(
      code === 'ENOENT'
        ? `env file ${file} does not exist; write it again (pgrunbook --procedure wal-archiving writes it) or fix --env-file`
        : `cannot read env file ${file}: ${(e as Error).message}; it must be readable by the server's OS user (and only by it)`,
    );
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new EnvFileError(`env file ${file} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
      throw new EnvFileError(
        `env file ${file} is readable by group or others (mode ${mode}) and holds credentials, so it is not used: chmod 600 ${file}`,
      );
    }
    return parseEnvFile(await fh.readFile('utf8'), file);
  } finally {
    await fh.close();
  }
}
