// libpq's files, read the way libpq reads them: the connection service file
// (PGSERVICEFILE or ~/.pg_service.conf, then PGSYSCONFDIR/pg_service.conf) and the password
// file (PGPASSFILE or ~/.pgpass). Nothing here prints a password.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export class ServiceFileError extends Error {}

function home(env: NodeJS.ProcessEnv): string {
  return env.HOME || os.homedir();
}

/** The service files libpq would look in, in order: the user's file, then the system-wide one. */
export function serviceFiles(env: NodeJS.ProcessEnv): { user: string; system: string } {
  const user = env.PGSERVICEFILE || path.join(home(env), '.pg_service.conf');
  const system = path.join(env.PGSYSCONFDIR || '/etc/postgresql-common', 'pg_service.conf');
  return { user, system };
}

/** The key=value pairs of section [name] of an INI-style service file; undefined when absent. */
export function readServiceSection(file: string, name: string): Record<string, string> | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  let inSection = false;
  let found: Record<string, string> | undefined;
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const section = /^\[(.+)\]$/.exec(line);
    if (section) {
      inSection = section[1].trim() === name && !found; // the first definition wins, as in libpq
      if (inSection) found = {};
      return;
    }
    if (!inSection || !found) return;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new ServiceFileError(`syntax error in service file "${file}", line ${i + 1}: expected key=value`);
    const key = line.slice(0, eq).trim().toLowerCase();
    if (key === 'service') throw new ServiceFileError(`nested "service" specifications are not supported in service file "${file}", line ${i + 1}`);
    found[key] = line.slice(eq + 1).trim();
  });
  return found;
}

/** Resolve a service name to its settings, as libpq does (the user's file first). */
export function lookupService(name: string, env: NodeJS.ProcessEnv): { file: string; values: Record<string, string> } {
  const { user, system } = serviceFiles(env);
  if (env.PGSERVICEFILE && !fs.existsSync(user)) {
    throw new ServiceFileError(`service file "${user}" (PGSERVICEFILE) not found. Point PGSERVICEFILE at your pg_service.conf, or unset it.`);
  }
  for (const file of [user, system]) {
    const values = readServiceSection(file, name);
    if (values) return { file, values };
  }
  throw new ServiceFileError(
    `definition of service "${name}" not found (looked in ${user} and ${system}). ` +
      'Add a [' + name + '] section with host, port, user, dbname to one of them, set PGSERVICEFILE, or unset PGSERVICE.',
  );
}

let warnedPassfileMode = false;

/** The password file's entry for this connection (libpq's rules: first match wins, `*` matches anything). */
export function lookupPassword(
  target: { host: string; port: number; database: string; user: string },
  passfile: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  const file = passfile || env.PGPASSFILE || path.join(home(env), '.pgpass');
  let text: string;
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) return undefined;
    if (st.mode & 0o077) {
      if (!warnedPassfileMode) {
        warnedPassfileMode = true;
        process.stderr.write(`WARNING: password file "${file}" has group or world access; permissions should be u=rw (0600) or less. It is ignored.\n`);
      }
      return undefined;
    }
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  // A unix socket connection matches "localhost", as with libpq's default socket.
  const host = target.host.startsWith('/') ? 'localhost' : target.host;
  const wanted = [host, String(target.port), target.database, target.user];
  for (const raw of text.split(/\r?\n/)) {
    if (!raw || raw.startsWith('#')) continue;
    const fields = splitPassLine(raw);
    if (fields.length < 5) continue;
    if (wanted.every((w, i) => fields[i] === '*' || fields[i] === w)) return fields.slice(4).join(':');
  }
  return undefined;
}

function splitPassLine(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '\\' && i + 1 < line.length) cur += line[++i];
    else if (c === ':' && out.length < 4) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}
