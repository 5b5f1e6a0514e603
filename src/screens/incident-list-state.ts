// The "find the incident" list's state as a pure reducer: incidents arriving (or not), the
// cursor, and the keys: ↑↓ move, Enter chooses (the result is the incident's target, "just
// before it"), w widens the window (24 h, 7 days, 30 days), Esc goes back.
import type { Incident } from '../services/incident-source.js';
import type { Key } from './keys.js';

export const WINDOWS_HOURS = [24, 24 * 7, 24 * 30];

export interface IncidentListState {
  phase: 'loading' | 'ready' | 'failed';
  incidents: Incident[];
  error?: string;
  cursor: number;
  /** Index into WINDOWS_HOURS. */
  window: number;
  result?: string;
  cancelled?: boolean;
}

export type IncidentListAction =
  | { type: 'loaded'; incidents: Incident[] }
  | { type: 'failed'; error: string }
  | { type: 'key'; input: string; key: Key };

export const initialIncidentListState: IncidentListState = { phase: 'loading', incidents: [], cursor: 0, window: 0 };

export function incidentListReducer(s: IncidentListState, a: IncidentListAction): IncidentListState {
  switch (a.type) {
    case 'loaded':
      return { ...s, phase: 'ready', incidents: a.incidents, cursor: 0, error: undefined };
    case 'failed':
      return { ...s, phase: 'failed', error: a.error };
    case 'key': {
      const { input, key } = a;
      if (key.escape) return { ...s, cancelled: true };
      if (input === 'w' && s.phase !== 'loading' && s.window < WINDOWS_HOURS.length - 1) return { ...s, phase: 'loading', incidents: [], window: s.window + 1 };
      if (s.phase !== 'ready' || !s.incidents.length) return s;
      if (key.upArrow || input === 'k') return { ...s, cursor: Math.max(0, s.cursor - 1) };
      if (key.downArrow || input === 'j') return { ...s, cursor: Math.min(s.incidents.length - 1, s.cursor + 1) };
      if (key.return) return { ...s, result: s.incidents[s.cursor].target };
      return s;
    }
  }
}

/** One line: when, what, where, how many. */
export function incidentSummary(i: Incident): string {
  const what = i.kind === 'drop-database' ? `database ${i.database}` : `${i.relation ?? '(unnamed)'} in ${i.database}`;
  return `${i.time.replace('T', ' ').replace(/\.\d+Z$/, 'Z')}  ${i.kind.padEnd(13)} ${what}${i.rows === null ? '' : ` · ${i.rows} rows`}`;
}
