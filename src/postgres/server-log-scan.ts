// Reading PostgreSQL's server log for ERROR, FATAL and PANIC lines since a time: the log is
// streamed line by line (it can be large), and a line whose time cannot be read is kept.
// serverLogVerdict words what verify reports: FATAL and PANIC fail by default, ERROR is counted
// and shown (a failed query is the application's business, a FATAL is the server's).
import fs from 'node:fs';
import readline from 'node:readline';

export const LOG_LEVELS = ['error', 'fatal', 'panic'] as const;
export type LogLevelName = (typeof LOG_LEVELS)[number];

/** An ISO 8601 time, or an age (30m, 2h, 1d) back from `now`. */
export function parseSince(text: string, now: Date): Date | undefined {
  const age = /^(\d+(?:\.\d+)?)\s*(s|m|min|h|d)$/i.exec(text.trim());
  if (age) {
    const n = Number(age[1]);
    const unit = age[2].toLowerCase();
    const ms = unit === 's' ? 1000 : unit === 'm' || unit === 'min' ? 60_000 : unit === 'h' ? 3_600_000 : 86_400_000;
    return new Date(now.getTime() - n * ms);
  }
  if (!/^\d{4}-\d\d-\d\d/.test(text)) return undefined;
  const d = new Date(text);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

export interface LogLine {
  level: LogLevelName;
  text: string;
  /** A FATAL PostgreSQL sends a client while it starts or stops on purpose: counted, not alarming. */
  routine?: boolean;
}

// FATAL lines a healthy server writes around a planned start or stop (a client connecting too
// early or too late, sessions ended by a fast shutdown or pg_terminate_backend). "in recovery
// mode" is not here: it follows a crash.
const ROUTINE_FATAL = /FATAL:\s+(the database system is (starting up|shutting down|not yet accepting connections)|terminating connection due to administrator command)/;

// PostgreSQL's default log_line_prefix starts with %m: "2026-11-24 15:56:17.123 UTC [42] ".
const STAMP = /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)(?: ([A-Z]{2,5}|[+-]\d\d(?::?\d\d)?))?/;
const LEVEL = /\b(ERROR|FATAL|PANIC):\s/;

export async function scanServerLog(file: string, since: Date, signal?: AbortSignal): Promise<LogLine[]> {
  const out: LogLine[] = [];
  const input = fs.createReadStream(file, { encoding: 'utf8' });
  const lines = readline.createInterface({ input, crlfDelay: Infinity });
  // Lines without a timestamp continue the previous entry (DETAIL, STATEMENT, stack traces).
  let inWindow = false;
  try {
    for await (const line of lines) {
      signal?.throwIfAborted();
      const stamp = STAMP.exec(line);
      if (stamp) {
        const when = logTime(stamp[1], stamp[2]);
        // An unknown time zone abbreviation: keep the line rather than miss an error.
        inWindow = when === undefined || when >= since;
      }
      if (!inWindow) continue;
      const level = LEVEL.exec(line);
      if (!level) continue;
      const entry: LogLine = { level: level[1].toLowerCase() as LogLine['level'], text: line.length > 300 ? `${line.slice(0, 300)}…` : line };
      if (ROUTINE_FATAL.test(line)) entry.routine = true;
      out.push(entry);
    }
  } finally {
    lines.close();
    input.destroy();
  }
  return out;
}

function logTime(stamp: string, zone: string | undefined): Date | undefined {
  const iso = stamp.replace(' ', 'T');
  if (!zone || zone === 'UTC' || zone === 'GMT') return new Date(`${iso}Z`);
  if (/^[+-]\d\d/.test(zone)) {
    const z = zone.length === 3 ? `${zone}:00` : zone.includes(':') ? zone : `${zone.slice(0, 3)}:${zone.slice(3)}`;
    return new Date(iso + z);
  }
  return undefined;
}

export interface ServerLogVerdict {
  ok: boolean;
  /** "0 PANIC, 2 FATAL (1 routine: start-up or shutdown), 3 ERROR (shown, not failing) since ..." */
  summary: string;
  /** The lines that fail the check, oldest first. */
  failing: LogLine[];
}

/** Judges scanned lines: those at `failLevel` or above fail, except the routine FATALs of a planned start or stop. */
export function serverLogVerdict(found: LogLine[], failLevel: LogLevelName, since: Date, file: string): ServerLogVerdict {
  const rank = LOG_LEVELS.indexOf(failLevel);
  const failing = found.filter((l) => LOG_LEVELS.indexOf(l.level) >= rank && !l.routine);
  const count = (level: LogLevelName) => found.filter((l) => l.level === level).length;
  const routine = found.filter((l) => l.routine).length;
  const words = (level: LogLevelName, label: string) => {
    const n = count(level);
    const notes = [level === 'fatal' && routine ? `${routine} routine: start-up or shutdown` : undefined, n && LOG_LEVELS.indexOf(level) < rank ? 'shown, not failing' : undefined].filter(Boolean);
    return `${n} ${label}${notes.length ? ` (${notes.join('; ')})` : ''}`;
  };
  const summary = `${words('panic', 'PANIC')}, ${words('fatal', 'FATAL')}, ${words('error', 'ERROR')} since ${since.toISOString()} in ${file}`;
  return { ok: failing.length === 0, summary, failing };
}
