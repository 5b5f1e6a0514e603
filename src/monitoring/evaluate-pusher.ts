// The pusher of asynchronous archiving (pure: the spool's facts and "now" in, a check out). It is
// a speed-up, not the archive's only way in: when it is not running archive_command pushes each
// segment itself (and starts a new pusher), so "not running" is ok; recent push failures warn.
import type { PusherSnapshot } from './collect.js';
import type { PusherMeasurement, StatusCheck } from './types.js';

/** A push failure this recent (and segments still waiting) makes the check warn. */
const RECENT_FAILURE_MS = 10 * 60_000;

export function evaluatePusher(p: PusherSnapshot, readyFromServer: number | undefined, now: number, checks: StatusCheck[]): PusherMeasurement {
  const ready = readyFromServer ?? p.state?.ready;
  const m: PusherMeasurement = {
    spool: p.spool,
    alive: p.alive ?? false,
    pid: p.alive ? p.pid : undefined,
    readySegments: ready,
    pushedAhead: p.pushedAhead ?? 0,
    inFlight: p.alive ? p.state?.inFlight : 0,
    pushedTotal: p.state?.pushedTotal,
    lastError: p.state?.lastError,
    lastErrorAt: p.state?.lastErrorAt,
  };
  const base = { id: 'wal_pusher', kind: 'wal' as const, title: 'WAL pusher', value: m.pushedAhead, unit: 'segments' as const };
  if (p.error) {
    checks.push({ ...base, status: 'unknown', summary: p.error, hint: 'the spool is on the server\'s machine: run status there (as the server\'s OS user or root)' });
    return m;
  }
  const queue = `${ready ?? '?'} ready, ${m.pushedAhead} pushed ahead${m.alive ? `, ${m.inFlight ?? 0} in flight` : ''}`;
  const failedAt = m.lastErrorAt ? Date.parse(m.lastErrorAt) : Number.NaN;
  if (m.alive && m.lastError && now - failedAt < RECENT_FAILURE_MS && (ready ?? 1) > 0) {
    checks.push({
      ...base,
      status: 'warning',
      summary: `running (pid ${m.pid}), failing to push: ${m.lastError} (${queue})`,
      hint: `the repository refuses or cannot be reached; archive_command retries each segment itself. Details: ${p.spool}/push/pusher.log`,
    });
    return m;
  }
  checks.push({
    ...base,
    status: 'ok',
    summary: m.alive ? `running (pid ${m.pid}): ${queue}` : `not running (the next archive_command starts it): ${queue}`,
  });
  return m;
}
