// Writing a password where libpq (and pgrunbook, libpq-files.ts) looks for it: the password
// file, PGPASSFILE or ~/.pgpass, one line host:port:database:user:password, mode 0600. A
// profile never holds a password; the connection screen saves it here.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export function passwordFilePath(env: NodeJS.ProcessEnv): string {
  return env.PGPASSFILE || path.join(env.HOME || os.homedir(), '.pgpass');
}

const pgpassEscape = (s: string) => s.replace(/\\/g, '\\\\').replace(/:/g, '\\:');

/**
 * Add or replace the line for host:port:*:user (any database: pg_dump and the checks connect to
 * each database in turn). Written to a temporary file and renamed, mode 0600, owned by the
 * invoking user (under sudo, SUDO_UID's), so libpq accepts it. Returns the file's path.
 */
export function savePassword(target: { host: string; port: number; user: string }, password: string, env: NodeJS.ProcessEnv): string {
  if (/[\r\n]/.test(password)) throw new Error('the password has a line break, which a password file cannot hold');
  const file = passwordFilePath(env);
  const host = target.host.startsWith('/') ? 'localhost' : target.host;
  const prefix = `${pgpassEscape(host)}:${target.port}:*:${pgpassEscape(target.user)}:`;
  let lines: string[] = [];
  try {
    lines = fs.readFileSync(file, 'utf8').split('\n');
  } catch {
    // No file yet.
  }
  while (lines.length && lines.at(-1) === '') lines.pop();
  const kept = lines.filter((l) => !l.startsWith(prefix));
  kept.push(`${prefix}${pgpassEscape(password)}`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${kept.join('\n')}\n`, { mode: 0o600 });
  fs.chmodSync(tmp, 0o600);
  const uid = Number(env.SUDO_UID);
  const gid = Number(env.SUDO_GID);
  if (process.getuid?.() === 0 && Number.isInteger(uid) && Number.isInteger(gid) && env.SUDO_UID) fs.chownSync(tmp, uid, gid);
  fs.renameSync(tmp, file);
  return file;
}
