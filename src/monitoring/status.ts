// One status check end to end: where to look (repository, server), with which thresholds and
// which "now", then collect both sides at once and judge. Used by `pgrunbook status` and the TUI.
import path from 'node:path';
import type { ConnectionSettings } from '../config/connection.js';
import { DEFAULT_THRESHOLDS, type Profile } from '../config/profile.js';
import { collectRepository, collectServer, repositoryLocation } from './collect.js';
import { evaluateStatus } from './evaluate.js';
import { SKIPPABLE, StatusUsageError, type CheckKind, type StatusCheck, type StatusReport, type StatusThresholds } from './types.js';
import { describeAsideDir, listAsideDirs } from '../restore/aside-dirs.js';
import { pgrunbookCommand } from '../engine/command-name.js';

export interface StatusOptions {
  repo?: string;
  env: NodeJS.ProcessEnv;
  connection: ConnectionSettings;
  thresholds: StatusThresholds;
  now: Date;
  databases?: string[];
  skip?: CheckKind[];
  /** The data directory: its moved-aside predecessors are listed (an informational check). */
  pgdata?: string;
}

/** Defaults, then the profile's `monitoring`, then explicit overrides (flags). */
export function resolveThresholds(profile: Profile | undefined, overrides: Partial<StatusThresholds> = {}): StatusThresholds {
  const out: StatusThresholds = { ...DEFAULT_THRESHOLDS };
  for (const [k, v] of Object.entries(profile?.monitoring ?? {})) if (typeof v === 'number') (out as unknown as Record<string, number>)[k] = v;
  for (const [k, v] of Object.entries(overrides)) if (typeof v === 'number') (out as unknown as Record<string, number>)[k] = v;
  return out;
}

/** --now, else PGRUNBOOK_NOW, else the clock. Tests (and replaying an incident) inject it. */
export function resolveNow(flag: string | undefined, env: NodeJS.ProcessEnv): Date {
  const text = flag ?? (env.PGRUNBOOK_NOW || undefined);
  if (text === undefined) return new Date();
  const t = Date.parse(text);
  if (!Number.isFinite(t)) throw new StatusUsageError(`--now / PGRUNBOOK_NOW: "${text}" is not a date and time (use ISO 8601, e.g. 2026-11-24T03:15:00Z)`);
  return new Date(t);
}

export function parseSkip(list: string[]): CheckKind[] {
  const out: CheckKind[] = [];
  for (const item of list.flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean)) {
    const k = item === 'dumps' ? 'dump' : item === 'base-backups' || item === 'base' ? 'base-backup' : item;
    if (!(SKIPPABLE as readonly string[]).includes(k)) throw new StatusUsageError(`--skip: "${item}" is not a kind of check; valid: ${SKIPPABLE.join(', ')}`);
    if (!out.includes(k as CheckKind)) out.push(k as CheckKind);
  }
  return out;
}

export async function checkStatus(opts: StatusOptions): Promise<StatusReport> {
  const loc = repositoryLocation(opts.repo, opts.env);
  const skip = opts.skip ?? [];
  // Only WAL checks need the server; without them there is nothing to ask it.
  const needServer = !skip.includes('wal') && !skip.includes('server');
  const [repository, server] = await Promise.all([collectRepository(loc, opts.env), needServer ? collectServer(opts.connection) : Promise.resolve(undefined)]);
  const report = evaluateStatus({ repository, server, thresholds: opts.thresholds, now: opts.now, databases: opts.databases, skip });
  if (opts.pgdata) report.checks.push(await movedAsideCheck(opts.pgdata, opts.now));
  return report;
}

/** The data directories recoveries moved aside or pitr staged next to `pgdata`: listed, never judged (status ok). */
async function movedAsideCheck(pgdata: string, now: Date): Promise<StatusCheck> {
  const dirs = await listAsideDirs(pgdata);
  const base = { id: 'moved_aside', kind: 'server' as const, title: 'moved-aside data directories', status: 'ok' as const };
  if (!dirs.length) return { ...base, summary: `none next to ${path.resolve(pgdata)}` };
  return {
    ...base,
    summary: `${dirs.length}: ${dirs.map((d) => describeAsideDir(d, now)).join('; ')}`,
    value: dirs.length,
    hint: `when no longer needed: ${pgrunbookCommand(`--procedure retention --data-dirs --pgdata ${path.resolve(pgdata)}`)} (asks for each directory's name)`,
  };
}

export { StatusUsageError };

/** What the TUI checks: the services the app was started with (profile, flags, PG* variables). */
export function statusOptionsFromServices(services: {
  repo?: string;
  env: NodeJS.ProcessEnv;
  connection: ConnectionSettings;
  profile?: Profile;
  pgdata?: string;
}): StatusOptions {
  return {
    repo: services.repo,
    env: services.env,
    connection: services.connection,
    thresholds: resolveThresholds(services.profile),
    now: resolveNow(undefined, services.env),
    databases: services.profile?.databases,
    pgdata: services.pgdata,
  };
}
