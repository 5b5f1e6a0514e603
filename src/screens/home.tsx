// Home: the procedures, grouped, one line each. Keys go through a reducer (a quick ↓ then
// Enter must pick the procedure below, not the one the stale render saw).
import type React from 'react';
import { useEffect, useReducer } from 'react';
import { Box, Text } from 'ink';
import type { Procedure, ProcedureGroup } from '../engine/types.js';
import { useKeys, type Key } from './keys.js';
import { useTerminalSize, useTheme } from './theme.js';
import { clip } from './format.js';

export const GROUP_ORDER: ProcedureGroup[] = ['backup', 'restore', 'verify', 'drill', 'other'];
export const GROUP_LABEL: Record<ProcedureGroup, string> = {
  backup: 'Back up',
  restore: 'Restore',
  verify: 'Verify',
  drill: 'Drill',
  other: 'Other',
};

/** Groups that have procedures, in menu order; procedures keep their order within a group. */
export function groupProcedures(procedures: Procedure[]): { group: ProcedureGroup; procedures: Procedure[] }[] {
  const known = new Set<string>(GROUP_ORDER);
  return GROUP_ORDER.map((group) => ({
    group,
    procedures: procedures.filter((p) => (known.has(p.group) ? p.group === group : group === 'other')),
  })).filter((g) => g.procedures.length > 0);
}

/** The procedures in the order the menu shows them (what the selection index counts). */
export function menuOrder(procedures: Procedure[]): Procedure[] {
  return groupProcedures(procedures).flatMap((g) => g.procedures);
}

export interface HomeState {
  index: number;
  count: number;
  picked?: number;
  quit?: boolean;
  /** s was pressed (with the status dashboard available). */
  status?: boolean;
  /** c (connect), p (profiles) or r (resume) was pressed. */
  command?: HomeCommand;
}

export type HomeCommand = 'connect' | 'profiles' | 'resume';
export const HOME_COMMAND_KEYS: Record<string, HomeCommand> = { c: 'connect', p: 'profiles', r: 'resume' };

export type HomeAction = { type: 'key'; input: string; key: Key; statusKey?: boolean; commands?: boolean };

export function homeReducer(state: HomeState, action: HomeAction): HomeState {
  if (state.picked !== undefined || state.quit || state.status || state.command) return state;
  const { input, key } = action;
  if (action.statusKey && input === 's') return { ...state, status: true };
  if (action.commands && HOME_COMMAND_KEYS[input]) return { ...state, command: HOME_COMMAND_KEYS[input] };
  if (state.count === 0) return input === 'q' || key.escape ? { ...state, quit: true } : state;
  if (key.downArrow || input === 'j') return { ...state, index: Math.min(state.count - 1, state.index + 1) };
  if (key.upArrow || input === 'k') return { ...state, index: Math.max(0, state.index - 1) };
  if (key.home || input === 'g') return { ...state, index: 0 };
  if (key.end || input === 'G') return { ...state, index: state.count - 1 };
  if (key.return) return { ...state, picked: state.index };
  if (input === 'q') return { ...state, quit: true };
  return state;
}

export interface HomeProps {
  procedures: Procedure[];
  /** "profile prod · db1:5432 as postgres, database app" */
  connection?: string;
  initialIndex?: number;
  /** Shown under the connection line (the status panel), `bannerRows` lines tall. */
  banner?: React.ReactNode;
  bannerRows?: number;
  /** Given: key s opens the status dashboard (with the menu's selection, to come back to). */
  onStatus?(index: number): void;
  onPick(procedure: Procedure, index: number): void;
  onQuit(): void;
  /** Given: c connects (the connection screen), p picks a profile, r lists unfinished runs to resume. */
  onCommand?(command: HomeCommand): void;
  /** One line under the connection line (a profile saved; a profile that did not load). */
  notice?: { text: string; error?: boolean };
}

export function Home({ procedures, connection, initialIndex = 0, banner, bannerRows = 0, onStatus, onPick, onQuit, onCommand, notice }: HomeProps) {
  const { c } = useTheme();
  const { columns, rows } = useTerminalSize();
  const ordered = menuOrder(procedures);
  const [state, dispatch] = useReducer(homeReducer, { index: Math.max(0, Math.min(initialIndex, ordered.length - 1)), count: ordered.length });
  useKeys((input, key) => dispatch({ type: 'key', input, key, statusKey: Boolean(onStatus), commands: Boolean(onCommand) }));

  useEffect(() => {
    if (state.picked !== undefined) onPick(ordered[state.picked], state.picked);
    else if (state.quit) onQuit();
    else if (state.status) onStatus?.(state.index);
    else if (state.command) onCommand?.(state.command);
    // Only the outcome matters; the callbacks come from the root.
  }, [state.picked, state.quit, state.status, state.command]);

  const width = Math.max(40, columns);
  const idWidth = Math.min(20, Math.max(0, ...ordered.map((p) => p.id.length)));
  const selected = ordered[state.index];

  // Menu rows (group headings and procedures), windowed to fit the terminal.
  const menuRows: ({ kind: 'group'; label: string } | { kind: 'item'; procedure: Procedure; index: number })[] = [];
  let n = 0;
  for (const g of groupProcedures(procedures)) {
    menuRows.push({ kind: 'group', label: GROUP_LABEL[g.group] });
    for (const p of g.procedures) menuRows.push({ kind: 'item', procedure: p, index: n++ });
  }
  const room = Math.max(3, rows - 1 - 3 - 4 - 1 - bannerRows - (notice ? 1 : 0));
  const selectedRow = menuRows.findIndex((r) => r.kind === 'item' && r.index === state.index);
  const start = menuRows.length <= room ? 0 : Math.max(0, Math.min(selectedRow - Math.floor(room / 2), menuRows.length - room));
  const visible = menuRows.slice(start, start + room);

  return (
    <Box flexDirection="column" width={width}>
      <Text wrap="truncate-end">
        <Text bold color={c('cyan')}>
          pgrunbook
        </Text>
        <Text> · guided PostgreSQL backup and disaster recovery</Text>
      </Text>
      <Text dimColor wrap="truncate-end">
        {connection ?? 'connection: from PG* variables and ~/.pgpass'}
      </Text>
      {notice ? (
        <Text color={c(notice.error ? 'red' : 'green')} wrap="truncate-end">
          {notice.error ? '✗ ' : '✓ '}
          {notice.text}
        </Text>
      ) : null}
      {banner}
      <Text> </Text>
      {ordered.length === 0 ? <Text>No procedures are available.</Text> : null}
      {visible.map((r) =>
        r.kind === 'group' ? (
          <Text key={`g-${r.label}`} bold>
            {r.label}
          </Text>
        ) : (
          <Text key={r.procedure.id} wrap="truncate-end" inverse={r.index === state.index}>
            {r.index === state.index ? ' › ' : '   '}
            {clip(`${r.procedure.id.padEnd(idWidth)}  ${r.procedure.title} — ${r.procedure.summary}`, width - 4)}
          </Text>
        ),
      )}
      <Text> </Text>
      {selected ? (
        <Text wrap="wrap" dimColor>
          {clip(`${selected.summary} (${selected.steps.length} step${selected.steps.length === 1 ? '' : 's'}; headless: pgrunbook --procedure ${selected.id})`, width * 2 - 4)}
        </Text>
      ) : null}
      <Text> </Text>
      <Text dimColor wrap="truncate-end">
        ↑↓ Enter choose{onStatus ? ' · s status' : ''}{onCommand ? ' · c connect · p profile · r resume' : ''} · ? help · q quit
      </Text>
    </Box>
  );
}
