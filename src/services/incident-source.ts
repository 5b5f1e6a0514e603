// What the target picker's "find the incident" list shows comes from here, never from the
// screen: find-target's scan of the archived WAL (src/restore/incidents.ts), over a window the
// screen asks for, with the live cluster naming the relations. The app builds the source.
import type { ConnectionSettings } from '../config/connection.js';
import { findIncidents, type Incident } from '../restore/incidents.js';

export type { Incident } from '../restore/incidents.js';

export interface IncidentSource {
  /** The repository, as shown to the operator. */
  describe: string;
  /** Incidents between `since` and `until`, newest first. */
  find(window: { since: Date; until: Date }, signal: AbortSignal): Promise<Incident[]>;
}

/** The incidents of the repository at `repoUrl`, named through `connection`. */
export function loadIncidentSource(repoUrl: string | undefined, env: NodeJS.ProcessEnv, connection: ConnectionSettings | undefined): IncidentSource {
  return {
    describe: repoUrl ?? '(no repository)',
    async find(window, signal) {
      if (!connection) throw new Error('no connection: the live cluster names the relations (set PGHOST/PGPORT or a profile)');
      return findIncidents({ repoUrl, env, connection, since: window.since, until: window.until, signal });
    },
  };
}
