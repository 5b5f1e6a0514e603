// The repository a run works on: opened from the run's --repo (its credentials registered as
// secrets first, so they are masked wherever they might show), described for plans and messages.
import type { StepContext } from '../engine/types.js';
import { IDENTITY_KEY, type RepositoryIdentity } from '../repo/identity.js';
import { openRepository, type Repository } from '../repo/repository.js';
import { describeLocation, parseRepoUrl, secretsOf } from '../storage/url.js';

/** What a step hands a service: its run, its log, its checks; not its params or state. */
export type RunIO = Pick<StepContext, 'runId' | 'signal' | 'log' | 'progress' | 'check' | 'addSecret'>;

/** The part of a run's services that says where the repository is. */
export type RepoSettings = { repo?: string; env: NodeJS.ProcessEnv };

/** The repository's location without secrets; `none` when no --repo was given, `invalid(message)` for a URL that does not parse. */
export function describeRepository(svc: RepoSettings, none: string, invalid: (message: string) => string): string {
  if (!svc.repo) return none;
  try {
    return describeLocation(parseRepoUrl(svc.repo, svc.env));
  } catch (err) {
    return invalid((err as Error).message);
  }
}

export async function openRunRepository(io: Pick<RunIO, 'addSecret'>, svc: RepoSettings): Promise<Repository> {
  if (svc.repo) {
    try {
      for (const s of secretsOf(parseRepoUrl(svc.repo, svc.env))) io.addSecret(s);
    } catch {
      // openRepository reports a bad URL with its own message
    }
  }
  return openRepository(svc.repo, svc.env);
}

/** A listing proves the storage answers and the credentials work, without writing anything. */
export async function probeRepository(repo: Repository, prefix: string): Promise<void> {
  for await (const entry of repo.store.list(prefix)) {
    void entry;
    break;
  }
}

/** Whether anything is stored under `prefix`. */
export async function anythingUnder(repo: Repository, prefix: string): Promise<boolean> {
  for await (const entry of repo.store.list(prefix)) {
    void entry;
    return true;
  }
  return false;
}

/** A message as a sentence that another can follow: exactly one final period. */
export function sentence(text: string): string {
  const t = text.trim().replace(/\.+$/, '');
  return `${t}.`;
}

/** The detail of a passed "repository belongs to this cluster" check. */
export function ownerCheckDetail(identity: RepositoryIdentity): string {
  return `${IDENTITY_KEY}: system identifier ${identity.systemIdentifier}`;
}

/** A repository nobody has adopted yet: the first committed backup will. */
export function noOwnerYet(repo: Repository, systemIdentifier: string | undefined): string {
  return `${repo.describe()} has no format record (${IDENTITY_KEY}) yet: the first backup committed adopts it for system identifier ${systemIdentifier || '(not known yet)'}`;
}
