// What the CLI and TUI hand to procedures: the resolved connection, the profile, and
// paths. Procedures build their own adapters (pg, storage) from these.
import type { ConnectionSettings } from '../config/connection.js';
import type { Profile } from '../config/profile.js';
import type { StepContext } from '../engine/types.js';

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
