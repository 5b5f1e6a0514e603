// "Find the incident": the incidents find-target reads from the archived WAL (DROP TABLE,
// TRUNCATE, DROP DATABASE, mass DELETE/UPDATE), newest first; choosing one hands back the
// target just before it. The incidents come from a source the app hands in: this screen
// never opens a repository or connects.
import { useEffect, useReducer } from 'react';
import { Box, Text } from 'ink';
import { Spinner } from '@inkjs/ui';
import type { IncidentSource } from '../services/incident-source.js';
import { useKeys } from './keys.js';
import { useTheme } from './theme.js';
import { clip } from './format.js';
import { incidentListReducer, incidentSummary, initialIncidentListState, WINDOWS_HOURS } from './incident-list-state.js';

export interface IncidentListProps {
  source: IncidentSource;
  /** The target just before the chosen incident, or undefined (Esc). */
  onDone(target?: string): void;
  /** "now" for the window (tests). */
  now?: () => Date;
  width?: number;
}

export function IncidentList({ source, onDone, now = () => new Date(), width = 100 }: IncidentListProps) {
  const { c } = useTheme();
  const [state, dispatch] = useReducer(incidentListReducer, initialIncidentListState);
  useKeys((input, key) => dispatch({ type: 'key', input, key }));

  useEffect(() => {
    const controller = new AbortController();
    const until = now();
    const since = new Date(until.getTime() - WINDOWS_HOURS[state.window] * 3_600_000);
    source.find({ since, until }, controller.signal).then(
      (incidents) => !controller.signal.aborted && dispatch({ type: 'loaded', incidents }),
      (err: unknown) => !controller.signal.aborted && dispatch({ type: 'failed', error: err instanceof Error ? err.message : String(err) }),
    );
    return () => controller.abort(new Error('incident list closed'));
  }, [source, state.window]);

  useEffect(() => {
    if (state.result !== undefined) onDone(state.result);
    else if (state.cancelled) onDone(undefined);
  }, [state.result, state.cancelled]);

  const hours = WINDOWS_HOURS[state.window];
  const span = hours >= 48 ? `${hours / 24} days` : `${hours} hours`;
  const chosen = state.incidents[state.cursor];
  return (
    <Box flexDirection="column" width={width}>
      <Text bold wrap="truncate-end">
        Find the incident <Text dimColor>· the last {span} of archived WAL · {clip(source.describe, width - 50)}</Text>
      </Text>
      <Text> </Text>
      {state.phase === 'loading' ? (
        <Spinner label="Reading the archived WAL (DROP, TRUNCATE, mass DELETE/UPDATE)…" />
      ) : state.phase === 'failed' ? (
        <Text color={c('red')} wrap="wrap">
          Could not read the incidents: {state.error}
        </Text>
      ) : !state.incidents.length ? (
        <Text dimColor>No incident in the last {span}.</Text>
      ) : (
        state.incidents.map((i, n) => (
          <Text key={`${i.xid}-${i.lsn}-${i.relation ?? i.database}`} wrap="truncate-end" inverse={n === state.cursor} color={n === state.cursor ? c('cyan') : undefined}>
            {n === state.cursor ? '› ' : '  '}
            {incidentSummary(i)}
          </Text>
        ))
      )}
      <Text> </Text>
      {chosen && state.phase === 'ready' ? (
        <Text wrap="truncate-end">
          <Text dimColor>target </Text>
          <Text bold>{chosen.target}</Text>
          <Text dimColor>
            {' '}
            (just before transaction {chosen.xid}, {chosen.lsn})
          </Text>
        </Text>
      ) : null}
      <Text dimColor wrap="truncate-end">
        ↑↓ move · Enter restore to just before it · {state.window < WINDOWS_HOURS.length - 1 ? 'w look further back · ' : ''}Esc back
      </Text>
    </Box>
  );
}
