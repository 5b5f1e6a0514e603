// Reading PostgreSQL's server log for ERROR, FATAL and PANIC lines since a time: the log is
// streamed line by line (it can be large), and a line whose time cannot be read is kept.
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
}

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
      if (level) out.push({ level: level[1].toLowerCase() as LogLine['level'], text: line.length > 300 ? `${line.slice(0, 300)}…` : line });
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
