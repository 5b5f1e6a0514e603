// Everything the app's screens read or do, built from the session's services: the recovery
// timeline, the status check, the forms' pick lists and defaults, the profiles, the connection
// test and save, and the runs to resume. Screens get these functions; they never connect or
// open a repository themselves.
import type { Params, Procedure } from '../engine/types.js';
import type { UnfinishedRun } from '../engine/journal.js';
import type { Profile } from '../config/profile.js';
import { draftFromProfile, type ConnectionDraft } from '../config/profile-draft.js';
import { checkStatus, statusOptionsFromServices } from '../monitoring/status.js';
import type { StatusReport } from '../monitoring/types.js';
import { profileDefaults, type ProcedureServices } from '../procedures/services.js';
import { loadRecoveryTimeline, type RecoveryTimelineSource } from './recovery-timeline.js';
import { loadIncidentSource, type IncidentSource } from './incident-source.js';
import { formChoicesFor, type FormChoices } from './form-choices.js';
import { listProfiles, resumeSession, saveDraft, servicesFor, testDraft, unfinishedRuns, type ResumeSession, type SaveResult, type TestLine } from './session.js';

export interface ScreenServices {
  timeline: RecoveryTimelineSource;
  /** find-target's incidents for the target picker's "find the incident" list (f). */
  incidents?: IncidentSource;
  statusCheck?: () => Promise<StatusReport>;
  choices: FormChoices;
  /** What a procedure's form starts from: the profile's settings that are its params. */
  formDefaults(procedure: Procedure): Params;
  /** The connection screen's first values: the profile in use, or what the app connects with now. */
  connectDraft(): ConnectionDraft;
  testDraft(draft: ConnectionDraft): Promise<TestLine[]>;
  saveDraft(draft: ConnectionDraft): Promise<SaveResult>;
  listProfiles(): Promise<string[]>;
  servicesFor(profileName: string): Promise<ProcedureServices>;
  unfinishedRuns(): Promise<UnfinishedRun[]>;
  resume(runId: string): Promise<ResumeSession>;
}

/** The form's defaults: profileDefaults (what headless uses too), plus the profile's database and critical tables shown as values. */
export function formDefaults(procedure: Procedure, profile: Profile | undefined): Params {
  const out = profileDefaults(procedure, profile);
  if (!profile) return out;
  const has = (n: string) => procedure.params.some((p) => p.name === n);
  const database = profile.databases?.[0] ?? profile.connection?.database;
  if (has('database') && database) out.database = database;
  if (has('criticalTables') && profile.criticalTables?.length) {
    out.criticalTables = profile.criticalTables.map((t) => `${t.database}:${t.table}${t.minRows !== undefined ? `:${t.minRows}` : ''}`);
  }
  return out;
}

export function screenServices(services: ProcedureServices | undefined, env: NodeJS.ProcessEnv, stateDir: string): ScreenServices {
  const envOf = services?.env ?? env;
  return {
    timeline: loadRecoveryTimeline(services?.repo, envOf, { connection: services?.connection }),
    incidents: services?.repo ? loadIncidentSource(services.repo, envOf, services.connection) : undefined,
    statusCheck: services?.repo ? () => checkStatus(statusOptionsFromServices(services)) : undefined,
    choices: services ? formChoicesFor(services.connection, services.repo, envOf) : { load: async () => [] },
    formDefaults: (procedure) => formDefaults(procedure, services?.profile),
    connectDraft: () =>
      draftFromProfile(services?.profileName, services?.profile ?? {}, {
        host: services?.connection.host,
        port: services?.connection.port,
        user: services?.connection.user,
        database: services?.connection.database,
        pgdata: services?.pgdata,
        repo: services?.repo,
      }),
    testDraft: (draft) => testDraft(draft, envOf),
    saveDraft: (draft) => saveDraft(draft, envOf),
    listProfiles: () => listProfiles(envOf),
    servicesFor: (name) => servicesFor(name, envOf),
    unfinishedRuns: async () => unfinishedRuns(stateDir),
    resume: (runId) => resumeSession(stateDir, runId, envOf),
  };
}
