// The connection screen: host, port, user, database, password, data directory, repository and
// server control, tested live (the app hands in `test`: server version, role, archiving,
// repository reachable, identity) and saved as a profile (`save`: the password goes to the
// password file, never the profile). Keys go through one pure reducer.
import { useEffect, useReducer } from 'react';
import { Box, Text } from 'ink';
import { Spinner } from '@inkjs/ui';
import { DRAFT_LABELS, SERVER_METHODS, draftFields, type ConnectionDraft } from '../config/profile-draft.js';
import type { SaveResult, TestLine } from '../services/session.js';
import { typeOver, useKeys, type Key } from './keys.js';
import { useTerminalSize, useTheme } from './theme.js';
import { clip } from './format.js';

export type ConnectAction = 'test' | 'save';

export interface ConnectState {
  draft: ConnectionDraft;
  /** Index into draftFields(draft), then the two actions (test, save). */
  focus: number;
  selected: boolean;
  busy?: ConnectAction;
  test?: TestLine[];
  saved?: SaveResult;
  error?: string;
  cancelled?: boolean;
}

export type ConnectEvent =
  | { type: 'key'; input: string; key: Key }
  | { type: 'tested'; lines: TestLine[] }
  | { type: 'saved'; result: SaveResult }
  | { type: 'failed'; error: string };

export function initialConnectState(draft: ConnectionDraft): ConnectState {
  return { draft, focus: draft.name ? 1 : 0, selected: true };
}

/** The action row the focus is on, if it is on one. */
export function focusedAction(state: ConnectState): ConnectAction | undefined {
  const n = draftFields(state.draft).length;
  return state.focus === n ? 'test' : state.focus === n + 1 ? 'save' : undefined;
}

export function connectReducer(state: ConnectState, ev: ConnectEvent): ConnectState {
  if (state.saved || state.cancelled) return state;
  if (ev.type === 'tested') return { ...state, busy: undefined, test: ev.lines };
  if (ev.type === 'saved') return { ...state, busy: undefined, saved: ev.result };
  if (ev.type === 'failed') return { ...state, busy: undefined, error: ev.error };
  if (state.busy) return state;
  const { input, key } = ev;
  const fields = draftFields(state.draft);
  const last = fields.length + 1;
  if (key.escape) return { ...state, cancelled: true };
  if (key.ctrl && input === 't') return { ...state, busy: 'test', error: undefined, test: undefined };
  if (key.ctrl && input === 's') return { ...state, busy: 'save', error: undefined };
  if (key.upArrow || (key.tab && key.shift)) return { ...state, focus: Math.max(0, state.focus - 1), selected: true };
  if (key.downArrow || key.tab) return { ...state, focus: Math.min(last, state.focus + 1), selected: true };
  const action = focusedAction(state);
  if (key.return) {
    if (action) return { ...state, busy: action, error: undefined, ...(action === 'test' ? { test: undefined } : {}) };
    return { ...state, focus: state.focus + 1, selected: true };
  }
  if (action) return state;
  const field = fields[state.focus];
  if (field === 'server') {
    const i = SERVER_METHODS.indexOf(state.draft.server);
    const step = key.leftArrow ? -1 : key.rightArrow || input === ' ' ? 1 : 0;
    if (!step) return state;
    return { ...state, draft: { ...state.draft, server: SERVER_METHODS[(i + step + SERVER_METHODS.length) % SERVER_METHODS.length] } };
  }
  if (key.leftArrow || key.rightArrow) return state.selected ? { ...state, selected: false } : state;
  const typed = typeOver(state.draft[field], state.selected, input, key);
  if (typed.value === state.draft[field] && typed.selected === state.selected) return state;
  // What the test said was about the old values.
  return { ...state, draft: { ...state.draft, [field]: typed.value }, selected: typed.selected, test: typed.value === state.draft[field] ? state.test : undefined };
}

export interface ConnectScreenProps {
  draft: ConnectionDraft;
  test(draft: ConnectionDraft): Promise<TestLine[]>;
  save(draft: ConnectionDraft): Promise<SaveResult>;
  /** The profile was saved: the app switches to it. */
  onSaved(result: SaveResult): void;
  onBack(): void;
}

export function ConnectScreen({ draft, test, save, onSaved, onBack }: ConnectScreenProps) {
  const { c } = useTheme();
  const { columns } = useTerminalSize();
  const [state, dispatch] = useReducer(connectReducer, draft, initialConnectState);
  useKeys((input, key) => dispatch({ type: 'key', input, key }));

  useEffect(() => {
    if (!state.busy) return;
    const fail = (err: unknown) => dispatch({ type: 'failed', error: err instanceof Error ? err.message : String(err) });
    if (state.busy === 'test') test(state.draft).then((lines) => dispatch({ type: 'tested', lines }), fail);
    else save(state.draft).then((result) => dispatch({ type: 'saved', result }), fail);
  }, [state.busy]);
  useEffect(() => {
    if (state.saved) onSaved(state.saved);
    else if (state.cancelled) onBack();
  }, [state.saved, state.cancelled]);

  const width = Math.max(40, columns);
  const fields = draftFields(state.draft);
  const labelWidth = 16;
  const valueWidth = Math.max(10, width - labelWidth - 4);
  const action = focusedAction(state);
  return (
    <Box flexDirection="column" width={width}>
      <Text bold wrap="truncate-end">
        Connect to a cluster <Text dimColor>· saved as a profile</Text>
      </Text>
      {fields.map((f, i) => {
        const at = i === state.focus;
        const raw = state.draft[f];
        const shown = f === 'password' ? '•'.repeat(raw.length) : raw;
        return (
          <Box key={f}>
            <Text bold={at}>{at ? '› ' : '  '}</Text>
            <Box width={labelWidth}>
              <Text bold={at}>{DRAFT_LABELS[f]}</Text>
            </Box>
            {f === 'server' ? (
              <Text>
                {SERVER_METHODS.map((m) => (m === raw ? <Text key={m} bold color={c('cyan')}>{`[${m}]`}</Text> : <Text key={m} dimColor>{` ${m} `}</Text>))}
              </Text>
            ) : (
              <Text wrap="truncate-start">
                <Text inverse={at && state.selected && shown !== ''}>{clip(shown, valueWidth)}</Text>
                {at && (!state.selected || shown === '') ? <Text inverse> </Text> : null}
                {!shown && !at && f === 'password' ? <Text dimColor>(from the password file)</Text> : null}
              </Text>
            )}
          </Box>
        );
      })}
      <Text>
        {'  '}
        <Text inverse={action === 'test'} bold={action === 'test'}>
          {' Test connection '}
        </Text>
        {'  '}
        <Text inverse={action === 'save'} bold={action === 'save'}>
          {' Save profile '}
        </Text>
      </Text>
      {state.busy ? <Spinner label={state.busy === 'test' ? 'testing the connection and the repository…' : 'saving…'} /> : null}
      {state.error ? (
        <Text color={c('red')} wrap="wrap">
          ✗ {state.error}
        </Text>
      ) : null}
      {state.test?.map((l) => (
        <Text key={l.label} wrap="truncate-end">
          <Text color={c(!l.ok ? 'red' : l.warn ? 'yellow' : 'green')}>{!l.ok ? '✗' : l.warn ? '!' : '✓'}</Text> <Text bold>{l.label}</Text> {clip(l.detail, width - l.label.length - 4)}
        </Text>
      ))}
      <Text dimColor wrap="truncate-end">
        {fields[state.focus] === 'server' ? '←→ choose' : action ? 'Enter do it' : `${state.selected ? 'type replaces · ← edit' : 'type to edit'} · Ctrl-U clear`} · ↑↓ move · Ctrl-T test · Ctrl-S save · Esc back
      </Text>
    </Box>
  );
}
