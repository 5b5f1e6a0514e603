// A list to pick from (databases, tables, dumps, base backups, profiles, runs): loaded through a
// function the app hands in, filtered by typing, one line per choice with its detail (time,
// size) dimmed. Single: Enter picks. Multi: Space toggles, Enter takes the ticked ones.
import { useEffect, useReducer } from 'react';
import { Box, Text } from 'ink';
import { Spinner } from '@inkjs/ui';
import type { Choice } from '../services/form-choices.js';
import { editText, useKeys, type Key } from './keys.js';
import { useTerminalSize, useTheme } from './theme.js';
import { clip } from './format.js';

export interface PickListState {
  choices?: Choice[];
  error?: string;
  filter: string;
  index: number;
  multi: boolean;
  ticked: string[];
  /** The field's value: the list opens on it. */
  initial: string;
  done?: { value?: string };
}

export type PickListAction = { type: 'loaded'; choices: Choice[] } | { type: 'failed'; error: string } | { type: 'key'; input: string; key: Key };

export function initialPickList(initial: string, multi: boolean): PickListState {
  const ticked = multi ? initial.split(',').map((s) => s.trim()).filter(Boolean) : [];
  return { filter: '', index: 0, multi, ticked, initial };
}

/** The choices the filter keeps (case-insensitive, on label and value). */
export function visibleChoices(state: PickListState): Choice[] {
  const f = state.filter.toLowerCase();
  return (state.choices ?? []).filter((c) => !f || c.label.toLowerCase().includes(f) || c.value.toLowerCase().includes(f));
}

export function pickListReducer(state: PickListState, action: PickListAction): PickListState {
  if (state.done) return state;
  if (action.type === 'loaded') return { ...state, choices: action.choices, index: Math.max(0, action.choices.findIndex((c) => c.value === state.initial)) };
  if (action.type === 'failed') return { ...state, error: action.error };
  const { input, key } = action;
  if (key.escape) return { ...state, done: {} };
  const shown = visibleChoices(state);
  if (key.downArrow) return { ...state, index: Math.min(Math.max(0, shown.length - 1), state.index + 1) };
  if (key.upArrow) return { ...state, index: Math.max(0, state.index - 1) };
  if (key.pageDown) return { ...state, index: Math.min(Math.max(0, shown.length - 1), state.index + 10) };
  if (key.pageUp) return { ...state, index: Math.max(0, state.index - 10) };
  const current = shown[state.index];
  if (state.multi && input === ' ' && current) {
    const ticked = state.ticked.includes(current.value) ? state.ticked.filter((v) => v !== current.value) : [...state.ticked, current.value];
    return { ...state, ticked };
  }
  if (key.return) {
    if (state.multi) return { ...state, done: { value: state.ticked.join(',') } };
    return current ? { ...state, done: { value: current.value } } : state;
  }
  const filter = editText(state.filter, input, key);
  return filter === state.filter ? state : { ...state, filter, index: 0 };
}

export interface PickListProps {
  title: string;
  load(): Promise<Choice[]>;
  initial?: string;
  multi?: boolean;
  /** What an empty list means ("no dumps of app in the repository"). */
  empty?: string;
  /** `onDone(value)` picks; `onDone()` goes back without a change. */
  onDone(value?: string): void;
}

export function PickList({ title, load, initial = '', multi = false, empty, onDone }: PickListProps) {
  const { c } = useTheme();
  const { columns, rows } = useTerminalSize();
  const [state, dispatch] = useReducer(pickListReducer, undefined, () => initialPickList(initial, multi));
  useKeys((input, key) => dispatch({ type: 'key', input, key }));
  useEffect(() => {
    let live = true;
    load().then(
      (choices) => live && dispatch({ type: 'loaded', choices }),
      (err: unknown) => live && dispatch({ type: 'failed', error: err instanceof Error ? err.message : String(err) }),
    );
    return () => {
      live = false;
    };
  }, []);
  useEffect(() => {
    if (state.done) onDone(state.done.value);
  }, [state.done]);

  const width = Math.max(40, columns);
  const shown = visibleChoices(state);
  const room = Math.max(3, rows - 7);
  const start = Math.max(0, Math.min(state.index - Math.floor(room / 2), shown.length - room));
  const labelWidth = Math.min(40, Math.max(8, ...shown.map((s) => s.label.length)));
  return (
    <Box flexDirection="column" width={width}>
      <Text bold wrap="truncate-end">
        {title}
      </Text>
      <Text wrap="truncate-end">
        <Text dimColor>filter: </Text>
        {state.filter}
        <Text inverse> </Text>
      </Text>
      {state.error ? (
        <Text color={c('red')} wrap="wrap">
          ✗ {state.error}
        </Text>
      ) : !state.choices ? (
        <Spinner label="reading the list…" />
      ) : shown.length === 0 ? (
        <Text dimColor wrap="wrap">
          {state.filter ? `nothing matches "${state.filter}"` : (empty ?? 'nothing to choose from')}
        </Text>
      ) : (
        shown.slice(start, start + room).map((choice, i) => {
          const at = start + i === state.index;
          const mark = multi ? (state.ticked.includes(choice.value) ? '[x] ' : '[ ] ') : '';
          return (
            <Text key={choice.value} inverse={at} wrap="truncate-end">
              {at ? '› ' : '  '}
              {mark}
              {clip(choice.label, labelWidth).padEnd(labelWidth)}
              {choice.detail ? <Text dimColor>{`  ${choice.detail}`}</Text> : null}
            </Text>
          );
        })
      )}
      <Text> </Text>
      <Text dimColor wrap="truncate-end">
        {multi ? '↑↓ move · Space tick · Enter take ticked' : '↑↓ move · Enter pick'} · type to filter · Esc back
      </Text>
    </Box>
  );
}
