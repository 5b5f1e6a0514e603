// The environment PostgreSQL servers start with. A postmaster keeps the environment it was started
// with for its whole life and hands it to every archive_command and restore_command, and anyone
// who may read /proc/PID/environ of the server's OS user can read it. So pgrunbook never passes its
// own environment (PGPASSWORD, cloud credentials, ...) to pg_ctl, systemctl or the profile's
// start/stop commands: only a PATH, the locale and time zone, and the variables the profile's
// server control names (server.passEnv). What the server needs for the repository goes into a
// 0600 file that archive_command names (pgrunbook wal-push --env-file FILE).
import path from 'node:path';

/** The PATH a server gets, after the PostgreSQL bindir. */
export const DEFAULT_SERVER_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface ServerEnvOptions {
  /** Directory of the PostgreSQL programs (pg_ctl's); first on PATH. */
  binDir?: string;
  /** Names of further variables to pass through from `from` (the profile's server.passEnv). */
  passEnv?: readonly string[];
  /** Set these too (they win over everything else). */
  extra?: Record<string, string | undefined>;
  /** Where LANG, LC_*, TZ and passEnv come from; default process.env. */
  from?: NodeJS.ProcessEnv;
}

const LOCALE_OR_ZONE = /^(LANG|LANGUAGE|LC_[A-Z_]+|TZ)$/;

/**
 * A minimal environment for starting, stopping or restarting PostgreSQL: PATH (the bindir, a
 * sane default, and the directory of this node so pgrunbook's own archive_command finds it),
 * LANG/LANGUAGE/LC_* and TZ when set, the `passEnv` names, and `extra`. Never the caller's
 * environment wholesale.
 */
export function serverEnvironment(opts: ServerEnvOptions = {}): Record<string, string> {
  const from = opts.from ?? process.env;
  const dirs = [opts.binDir, ...DEFAULT_SERVER_PATH.split(':'), path.dirname(process.execPath)].filter((d): d is string => Boolean(d));
  const env: Record<string, string> = { PATH: [...new Set(dirs)].join(':') };
  for (const [k, v] of Object.entries(from)) {
    if (v !== undefined && LOCALE_OR_ZONE.test(k)) env[k] = v;
  }
  for (const name of opts.passEnv ?? []) {
    const v = from[name];
    if (v !== undefined) env[name] = v;
  }
  for (const [k, v] of Object.entries(opts.extra ?? {})) {
    if (v !== undefined) env[k] = v;
  }
  return env;
}

/** A variable name a profile may list in server.passEnv. */
export function isEnvName(name: string): boolean {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(name);
}
