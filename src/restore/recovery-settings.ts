// The settings a recovering copy starts with: where WAL comes from, where replay stops, and
// standby mode so the server waits (never promotes itself) at the end of the archived WAL.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { isRoot } from '../postgres/osuser.js';
import type { Owner } from './datadir.js';
import type { RecoveryPlan } from './plan.js';
import { formatMicrosForPostgres, parseTarget } from './target.js';

const RECOVERY_MARK = '# pgrunbook pitr recovery settings';

/** The recovery settings for a plan, with `restoreCommand` fetching WAL from the repository. */
export function recoverySettings(p: RecoveryPlan, restoreCommand: string): [string, string][] {
  // The plan keeps the target as typed for times (other kinds may not parse back; they need no rewriting).
  const target = parseTarget(p.target);
  const out: [string, string][] = [['restore_command', restoreCommand]];
  out.push(['recovery_target_timeline', p.timelineSetting]);
  for (const [k, v] of p.settings) {
    // Microseconds kept end to end: the target as typed, never through a JavaScript Date.
    out.push([k, k === 'recovery_target_time' && 'kind' in target && target.kind === 'time' ? formatMicrosForPostgres(target.micros) : v]);
  }
  // Always pause: promotion follows only a verified target, and is pgrunbook's to do.
  if (p.settings.length) out.push(['recovery_target_action', 'pause']);
  // A recovering copy must never follow another primary or stop before readable.
  out.push(['primary_conninfo', ''], ['hot_standby', 'on']);
  return out;
}

/**
 * Writes the settings at the end of postgresql.auto.conf (replacing an earlier run's block) and
 * creates standby.signal: at the end of the archived WAL, or at a missing segment, the server
 * waits instead of promoting itself. Returns the lines written.
 */
export async function writeRecoverySettings(pgdata: string, settings: [string, string][], runId: string, owner: Owner): Promise<string[]> {
  const auto = path.join(pgdata, 'postgresql.auto.conf');
  const existing = fs.existsSync(auto) ? await fsp.readFile(auto, 'utf8') : '';
  const kept = existing.split(RECOVERY_MARK)[0].trimEnd();
  // Configuration-file quoting (not SQL's: no E'' strings there): quotes doubled.
  const lines = settings.map(([k, v]) => `${k} = '${v.replace(/'/g, "''")}'`);
  await fsp.writeFile(auto, `${kept}\n${RECOVERY_MARK} (run ${runId})\n${lines.join('\n')}\n`);
  await fsp.rm(path.join(pgdata, 'recovery.signal'), { force: true });
  await fsp.writeFile(path.join(pgdata, 'standby.signal'), '');
  if (isRoot()) {
    await fsp.chown(auto, owner.uid, owner.gid);
    await fsp.chown(path.join(pgdata, 'standby.signal'), owner.uid, owner.gid);
  }
  return lines;
}

/**
 * The spool restore_command's prefetcher (and later the pusher) use, emptied of what an earlier
 * recovery or server left: prefetched segments of another history, ok files of another server.
 * Emptying is always safe (it only costs a fetch or a push); mode 0700, owned by the server.
 */
export async function prepareRecoverySpool(spool: string, owner: Owner | undefined): Promise<void> {
  await fsp.mkdir(spool, { recursive: true, mode: 0o700 });
  await fsp.rm(path.join(spool, 'fetch'), { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
  await fsp.rm(path.join(spool, 'push', 'ok'), { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
  await fsp.chmod(spool, 0o700);
  if (owner && isRoot()) await fsp.chown(spool, owner.uid, owner.gid);
}
