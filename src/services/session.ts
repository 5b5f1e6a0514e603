// What the app runs against, and how it changes without a restart: the saved profiles, the
// services of one (connection, data directory, repository), saving the connection screen's
// draft (profile without password; password to the password file), testing a draft live, and
// the unfinished runs of this host to resume. Screens get these as functions from the app.
import fs from 'node:fs';
import os from 'node:os';
import { knownProfilesFile, loadProfile, openProfileStore, ProfileError } from '../config/store.js';
import type { Profile } from '../config/profile.js';
import { draftProblems, profileFromDraft, type ConnectionDraft } from '../config/profile-draft.js';
import { savePassword } from '../config/pgpass.js';
import { resolveConnection, type ConnectionSettings } from '../config/connection.js';
import { buildServices, type ProcedureServices } from '../procedures/services.js';
import { listUnfinishedRuns, readResumePoint, type ResumePoint, type UnfinishedRun } from '../engine/journal.js';
import { errorMessage } from '../engine/errors.js';
import { readServerFacts } from '../postgres/listing.js';
import { openRepository } from '../repo/repository.js';
import { readRepositoryIdentity } from '../repo/identity.js';

export { ProfileError };

/** The saved profiles' names; none (and nothing created) when no profile was ever saved. */
export async function listProfiles(env: NodeJS.ProcessEnv): Promise<string[]> {
  const file = knownProfilesFile(env);
  if (file && !fs.existsSync(file)) return [];
  return (await openProfileStore(env)).list();
}

/** The services of a saved profile (or of no profile: PG* variables and defaults). */
export async function servicesFor(profileName: string | undefined, env: NodeJS.ProcessEnv): Promise<ProcedureServices> {
  const profile: Profile = profileName ? await loadProfile(profileName, env) : {};
  return buildServices({}, env, profile, profileName);
}

export async function loadSavedProfile(name: string, env: NodeJS.ProcessEnv): Promise<Profile> {
  return loadProfile(name, env);
}

/** The connection a draft means: its fields win over PG* variables, as flags would; its password if typed. */
export function draftConnection(draft: ConnectionDraft, env: NodeJS.ProcessEnv): ConnectionSettings {
  const conn = resolveConnection(
    { host: draft.host.trim() || undefined, port: draft.port.trim() || undefined, user: draft.user.trim() || undefined, dbname: draft.database.trim() || undefined },
    env,
  );
  if (draft.password) conn.password = draft.password;
  return { ...conn, connectTimeoutSec: Math.min(conn.connectTimeoutSec ?? 5, 5) };
}

export interface SaveResult {
  profileName: string;
  message: string;
}

/** Save the draft as a profile (keeping settings the screen does not show); a typed password goes to the password file. */
export async function saveDraft(draft: ConnectionDraft, env: NodeJS.ProcessEnv): Promise<SaveResult> {
  const problems = draftProblems(draft);
  if (problems.length) throw new ProfileError(problems.join('; '));
  const name = draft.name.trim();
  const store = await openProfileStore(env);
  const profile = profileFromDraft(draft, store.get(name) ?? {});
  store.set(name, profile);
  let where = '';
  if (draft.password) {
    const conn = draftConnection(draft, env);
    const file = savePassword({ host: conn.host ?? 'localhost', port: conn.port ?? 5432, user: conn.user ?? os.userInfo().username }, draft.password, env);
    where = `; password in ${file} (0600)`;
  }
  return { profileName: name, message: `saved profile ${name} in ${store.path}${where}` };
}

export interface TestLine {
  label: string;
  ok: boolean;
  /** Not a failure, but worth knowing (archiving off, no identity yet). */
  warn?: boolean;
  detail: string;
}

/** Connect with the draft and look at the repository: one line per fact, each ok or not. */
export async function testDraft(draft: ConnectionDraft, env: NodeJS.ProcessEnv): Promise<TestLine[]> {
  const lines: TestLine[] = [];
  let sysid: string | undefined;
  try {
    const f = await readServerFacts(draftConnection(draft, env));
    sysid = f.systemIdentifier;
    lines.push({ label: 'server', ok: true, detail: `PostgreSQL ${f.version}${f.inRecovery ? ', in recovery (a standby or a paused recovery)' : ', primary'}` });
    lines.push({
      label: 'role',
      ok: true,
      warn: !f.superuser && !f.replication,
      detail: `${f.user}${f.superuser ? ' (superuser)' : f.replication ? ' (replication)' : ' (neither superuser nor replication: base backups will be refused)'}`,
    });
    const archiving = f.archiveMode !== 'off';
    lines.push({
      label: 'archiving',
      ok: true,
      warn: !archiving || !/pgrunbook/.test(f.archiveCommand),
      detail: archiving ? `archive_mode ${f.archiveMode}, archive_command ${f.archiveCommand || '(empty)'}` : 'archive_mode off: run the wal-archiving procedure to set it up',
    });
    if (draft.pgdata.trim() && f.dataDirectory && f.dataDirectory !== draft.pgdata.trim()) {
      lines.push({ label: 'data directory', ok: false, detail: `the server runs from ${f.dataDirectory}, not ${draft.pgdata.trim()}` });
    }
  } catch (err) {
    lines.push({ label: 'server', ok: false, detail: errorMessage(err) });
  }
  const url = draft.repo.trim();
  if (!url) {
    lines.push({ label: 'repository', ok: true, warn: true, detail: 'none given: backups need one (file:///path, s3://bucket/prefix, azure://container/prefix)' });
    return lines;
  }
  try {
    const repo = await openRepository(url, env);
    try {
      const identity = await readRepositoryIdentity(repo.store);
      lines.push({ label: 'repository', ok: true, detail: `${repo.store.describe()} reachable` });
      if (!identity) lines.push({ label: 'identity', ok: true, warn: true, detail: 'no identity yet: the first backup records this cluster' });
      else if (sysid && identity.systemIdentifier !== sysid) {
        lines.push({ label: 'identity', ok: false, detail: `the repository belongs to cluster ${identity.systemIdentifier}, this server is ${sysid}: use another repository` });
      } else lines.push({ label: 'identity', ok: true, detail: `cluster ${identity.systemIdentifier}${sysid ? ', this server' : ''}` });
    } finally {
      await repo.close();
    }
  } catch (err) {
    lines.push({ label: 'repository', ok: false, detail: errorMessage(err) });
  }
  return lines;
}

/** Unfinished runs recorded on this host, newest first. */
export function unfinishedRuns(stateDir: string): UnfinishedRun[] {
  return listUnfinishedRuns(stateDir, os.hostname());
}

export interface ResumeSession {
  point: ResumePoint;
  services: ProcedureServices;
}

/** What resuming run `runId` needs: its resume point, and services from its journaled profile and context. */
export async function resumeSession(stateDir: string, runId: string, env: NodeJS.ProcessEnv): Promise<ResumeSession> {
  const point = readResumePoint(stateDir, runId);
  const profileName = point.context?.profile;
  const profile = profileName ? await loadProfile(profileName, env) : {};
  const services = buildServices({}, env, profile, profileName, point.context ? { runId, procedure: point.procedure, context: point.context } : undefined);
  return { point, services };
}
