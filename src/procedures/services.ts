// What the CLI and TUI hand to procedures: the resolved connection, the profile, and
// paths. Procedures build their own adapters (pg, storage) from these.
import { resolveConnection, type ConnectionSettings } from '../config/connection.js';
import type { RawFlags } from '../engine/params.js';
import type { Profile } from '../config/profile.js';
import type { Params, Procedure, StepContext } from '../engine/types.js';

export interface ProcedureServices {
  connection: ConnectionSettings;
  profile: Profile;
  profileName?: string;
  pgdata?: string;
  repo?: string;
  env: NodeJS.ProcessEnv;
}

export function services(ctx: StepContext): ProcedureServices {
  return ctx.services as ProcedureServices;
}

/** Profile settings that double as procedure params (databases, server log), as defaults. */
export function profileDefaults(procedure: Procedure, profile: Profile | undefined): Params {
  const out: Params = {};
  if (!profile) return out;
  const has = (n: string) => procedure.params.some((p) => p.name === n);
  if (has('databases') && profile.databases?.length) out.databases = profile.databases;
  if (has('serverLog') && profile.serverLog) out.serverLog = profile.serverLog;
  return out;
}

/** Connection, data directory and repository: flags over environment variables over the profile. */
export function buildServices(flags: RawFlags, env: NodeJS.ProcessEnv, profile: Profile, profileName?: string): ProcedureServices {
  const str = (k: string) => (flags[k] === undefined ? undefined : String(Array.isArray(flags[k]) ? (flags[k] as string[]).at(-1) : flags[k]));
  const connection = resolveConnection({ host: str('host'), port: str('port'), user: str('user'), dbname: str('dbname') }, env, profile.connection);
  const pgdata = str('pgdata') ?? (env.PGDATA || undefined) ?? profile.pgdata;
  const repo = str('repo') ?? (env.PGRUNBOOK_REPO || undefined) ?? profile.repo;
  return { connection, profile, profileName, pgdata, repo, env };
}
