// The connection screen's fields as plain text, to and from a Profile. The password is a field
// of the draft (the connection test uses it) but never of the profile: saving writes it to the
// password file instead (pgpass.ts).
import type { Profile, ServerControl } from './profile.js';
import { validateProfile } from './profile.js';

export interface ConnectionDraft {
  name: string;
  host: string;
  port: string;
  user: string;
  database: string;
  password: string;
  pgdata: string;
  repo: string;
  server: ServerControl['method'];
  unit: string;
  start: string;
  stop: string;
}

export const SERVER_METHODS: ServerControl['method'][] = ['pg_ctl', 'systemd', 'commands'];

/** The fields the draft has now (server control decides which of unit/start/stop show). */
export function draftFields(draft: ConnectionDraft): (keyof ConnectionDraft)[] {
  const extra: (keyof ConnectionDraft)[] = draft.server === 'systemd' ? ['unit'] : draft.server === 'commands' ? ['start', 'stop'] : [];
  return ['name', 'host', 'port', 'user', 'database', 'password', 'pgdata', 'repo', 'server', ...extra];
}

export const DRAFT_LABELS: Record<keyof ConnectionDraft, string> = {
  name: 'profile name',
  host: 'host',
  port: 'port',
  user: 'user',
  database: 'database',
  password: 'password',
  pgdata: 'data directory',
  repo: 'repository',
  server: 'server control',
  unit: 'systemd unit',
  start: 'start command',
  stop: 'stop command',
};

/** A draft from a saved profile (or from what the app runs with now: its resolved connection). */
export function draftFromProfile(name: string | undefined, profile: Profile, resolved: { host?: string; port?: number; user?: string; database?: string; pgdata?: string; repo?: string } = {}): ConnectionDraft {
  const c = profile.connection ?? {};
  return {
    name: name ?? '',
    host: c.host ?? resolved.host ?? '',
    port: String(c.port ?? resolved.port ?? ''),
    user: c.user ?? resolved.user ?? '',
    database: c.database ?? resolved.database ?? '',
    password: '',
    pgdata: profile.pgdata ?? resolved.pgdata ?? '',
    repo: profile.repo ?? resolved.repo ?? '',
    server: profile.server?.method ?? 'pg_ctl',
    unit: profile.server?.unit ?? '',
    start: profile.server?.start ?? '',
    stop: profile.server?.stop ?? '',
  };
}

/** The profile a draft saves as, on top of `base` (settings the screen does not show are kept). Never the password. */
export function profileFromDraft(draft: ConnectionDraft, base: Profile = {}): Profile {
  const t = (s: string) => s.trim() || undefined;
  const profile: Profile = { ...base };
  const connection = { ...(base.connection ?? {}) };
  delete connection.password;
  const set = <K extends 'host' | 'user' | 'database'>(k: K, v: string | undefined) => {
    if (v === undefined) delete connection[k];
    else connection[k] = v;
  };
  set('host', t(draft.host));
  set('user', t(draft.user));
  set('database', t(draft.database));
  if (t(draft.port)) connection.port = Number(draft.port.trim());
  else delete connection.port;
  if (Object.keys(connection).length) profile.connection = connection;
  else delete profile.connection;
  if (t(draft.pgdata)) profile.pgdata = draft.pgdata.trim();
  else delete profile.pgdata;
  if (t(draft.repo)) profile.repo = draft.repo.trim();
  else delete profile.repo;
  const server: ServerControl = { ...(base.server ?? {}), method: draft.server };
  delete server.unit;
  delete server.start;
  delete server.stop;
  if (draft.server === 'systemd' && t(draft.unit)) server.unit = draft.unit.trim();
  if (draft.server === 'commands') {
    if (t(draft.start)) server.start = draft.start.trim();
    if (t(draft.stop)) server.stop = draft.stop.trim();
  }
  profile.server = server;
  return profile;
}

/** What is wrong with a draft, each naming the field (empty: it can be saved). */
export function draftProblems(draft: ConnectionDraft): string[] {
  const out: string[] = [];
  if (!/^[A-Za-z0-9._-]+$/.test(draft.name.trim())) out.push('profile name: give a name of letters, digits, ".", "_" or "-", e.g. prod');
  if (draft.port.trim() && !/^\d+$/.test(draft.port.trim())) out.push(`port: "${draft.port}" is not a port number (1-65535)`);
  if (draft.repo.trim() && !/^(file|s3|azure):\/\//.test(draft.repo.trim()) && !draft.repo.trim().startsWith('/')) {
    out.push('repository: a URL like file:///var/backups/pg, s3://bucket/prefix or azure://container/prefix');
  }
  if (out.length) return out;
  return validateProfile(draft.name.trim(), profileFromDraft(draft)).map((e) => e.replace(/^profile "[^"]*": /, ''));
}
