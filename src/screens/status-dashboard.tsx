// The status in the TUI: a feed that checks in the background (Home never waits for it), a
// compact panel for the top of Home, and the full dashboard screen (key `s` on Home).
import { useEffect, useReducer } from 'react';
import { Box, Text } from 'ink';
import { shortProblem } from '../monitoring/evaluate.js';
import { SEVERITY_MARK } from '../monitoring/render.js';
import { SEVERITY_RANK, type Severity, type StatusCheck, type StatusReport } from '../monitoring/types.js';
import { formatAge } from '../monitoring/format-units.js';
import { useKeys, type Key } from './keys.js';
import { useTerminalSize, useTheme, type ColorName } from './theme.js';
import { clip } from './format.js';

export const SEVERITY_COLOR: Record<Severity, ColorName> = { ok: 'green', warning: 'yellow', critical: 'red', unknown: 'magenta' };

// ---------------------------------------------------------------------------------------
// The feed

export interface StatusFeed {
  /** A check is running (the first, or a refresh while the last report still shows). */
  loading: boolean;
  report?: StatusReport;
  /** Why the status could not be determined at all (bad URL, no repository...). */
  error?: string;
  /** When (by the clock) the report arrived: its staleness, whatever "now" the check was given. */
  checkedAt?: number;
  refresh(): void;
}

interface FeedState {
  generation: number;
  loading: boolean;
  report?: StatusReport;
  error?: string;
  checkedAt?: number;
}

type FeedAction = { type: 'refresh' } | { type: 'done'; generation: number; report: StatusReport } | { type: 'failed'; generation: number; error: string };

export function feedReducer(state: FeedState, action: FeedAction): FeedState {
  switch (action.type) {
    case 'refresh':
      return state.loading ? state : { ...state, generation: state.generation + 1, loading: true };
    case 'done':
      return action.generation === state.generation ? { ...state, loading: false, report: action.report, error: undefined, checkedAt: Date.now() } : state;
    case 'failed':
      return action.generation === state.generation ? { ...state, loading: false, error: action.error } : state;
  }
}

/**
 * Runs `check` in the background, and again on refresh(). The app builds `check` from its
 * services (undefined when no repository is configured: then there is no feed); the screen
 * never connects or opens the repository itself.
 */
export function useStatusFeed(check: (() => Promise<StatusReport>) | undefined): StatusFeed | undefined {
  const [state, dispatch] = useReducer(feedReducer, { generation: 0, loading: true });
  useEffect(() => {
    if (!check) return;
    let live = true;
    const generation = state.generation;
    // Deferred to the next turn: the menu's first frame goes out before any work starts.
    const timer = setTimeout(() => {
      Promise.resolve()
        .then(check)
        .then(
          (report) => live && dispatch({ type: 'done', generation, report }),
          (err: unknown) => live && dispatch({ type: 'failed', generation, error: err instanceof Error ? err.message : String(err) }),
        );
    }, 0);
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [check, state.generation]);
  if (!check) return undefined;
  return { loading: state.loading, report: state.report, error: state.error, checkedAt: state.checkedAt, refresh: () => dispatch({ type: 'refresh' }) };
}

// ---------------------------------------------------------------------------------------
// The compact panel on Home

function counts(r: StatusReport): string {
  const n = (s: Severity) => r.checks.filter((c) => c.status === s).length;
  const severities: Severity[] = ['critical', 'warning', 'unknown'];
  const parts = severities.filter((s) => n(s) > 0).map((s) => `${n(s)} ${s}`);
  return parts.length ? parts.join(', ') : `${r.checks.length} checks ok`;
}

function problems(r: StatusReport): StatusCheck[] {
  return r.checks.filter((c) => c.status !== 'ok').sort((a, b) => SEVERITY_RANK[b.status] - SEVERITY_RANK[a.status]);
}

/** Lines the panel takes (Home subtracts them from the menu's room). */
export function statusPanelRows(feed: StatusFeed | undefined): number {
  if (!feed) return 0;
  if (feed.report && !feed.error && problems(feed.report).length) return 2;
  return 1;
}

export function StatusPanel({ feed, width: fixedWidth }: { feed: StatusFeed; width?: number }) {
  const { c } = useTheme();
  const { columns } = useTerminalSize();
  const width = fixedWidth ?? Math.max(40, columns);
  if (feed.error) {
    return (
      <Text color={c('yellow')} wrap="truncate-end">
        {clip(`status unavailable: ${feed.error}`, width)}
      </Text>
    );
  }
  const r = feed.report;
  if (!r) {
    return (
      <Text dimColor wrap="truncate-end">
        Status: checking the repository and the server… (s details)
      </Text>
    );
  }
  const list = problems(r);
  const line2 = list.map((x) => `${SEVERITY_MARK[x.status]} ${x.title} ${shortProblem(x)}`).join(' · ');
  return (
    <Box flexDirection="column">
      <Text wrap="truncate-end">
        Status:{' '}
        <Text bold color={c(SEVERITY_COLOR[r.status])}>
          {r.status.toUpperCase()}
        </Text>
        <Text dimColor>{clip(` · ${counts(r)}${feed.loading ? ' · refreshing…' : ''} · s details`, Math.max(10, width - 18))}</Text>
      </Text>
      {list.length ? (
        <Text wrap="truncate-end" color={c(SEVERITY_COLOR[list[0].status])}>
          {clip(`  ${line2}`, width)}
        </Text>
      ) : null}
    </Box>
  );
}

// ---------------------------------------------------------------------------------------
// The dashboard screen

export interface DashboardState {
  index: number;
  back?: boolean;
  refreshes: number;
}

export function dashboardReducer(state: DashboardState, action: { input: string; key: Key; count: number }): DashboardState {
  if (state.back) return state;
  const { input, key, count } = action;
  if (key.escape || input === 'q' || key.leftArrow) return { ...state, back: true };
  if (key.downArrow || input === 'j') return { ...state, index: Math.min(Math.max(0, count - 1), state.index + 1) };
  if (key.upArrow || input === 'k') return { ...state, index: Math.max(0, state.index - 1) };
  if (input === 'r') return { ...state, refreshes: state.refreshes + 1 };
  return state;
}

export interface StatusDashboardProps {
  feed: StatusFeed;
  onBack(): void;
}

export function StatusDashboard({ feed, onBack }: StatusDashboardProps) {
  const { c } = useTheme();
  const { columns, rows } = useTerminalSize();
  const report = feed.report;
  const checks = report?.checks ?? [];
  const [state, dispatch] = useReducer(dashboardReducer, { index: 0, refreshes: 0 });
  useKeys((input, key) => dispatch({ input, key, count: checks.length }));
  useEffect(() => {
    if (state.back) onBack();
  }, [state.back]);
  useEffect(() => {
    if (state.refreshes > 0) feed.refresh();
  }, [state.refreshes]);

  const width = Math.max(40, columns);
  const index = Math.min(state.index, Math.max(0, checks.length - 1));
  const selected = checks[index];
  // title, repository, server, blank | checks | blank, 3 detail lines (more when the checks leave room), keys
  const room = Math.max(3, rows - 1 - 4 - 5);
  const start = checks.length <= room ? 0 : Math.max(0, Math.min(index - Math.floor(room / 2), checks.length - room));
  const visible = checks.slice(start, start + room);
  const detailLines = Math.max(3, rows - 1 - 4 - visible.length - 2);
  // An OK check's hint is shown too when it has one (what to do with moved-aside copies).
  const hint = selected?.hint && !feed.error ? `→ ${selected.hint}` : undefined;
  // Word wrap wastes some of each line: clipped to a little less than the lines hold.
  const lineChars = Math.max(10, width - 8);
  const hintLines = hint ? Math.min(detailLines - 2, Math.ceil(hint.length / lineChars)) : 0;
  const titleWidth = Math.min(22, Math.max(8, ...checks.map((x) => x.title.length)));
  const age = feed.checkedAt !== undefined ? Math.max(0, (Date.now() - feed.checkedAt) / 1000) : 0;

  return (
    <Box flexDirection="column" width={width}>
      <Text wrap="truncate-end">
        <Text bold color={c('cyan')}>
          pgrunbook status
        </Text>
        {report ? (
          <>
            <Text> · </Text>
            <Text bold color={c(SEVERITY_COLOR[report.status])}>
              {report.status.toUpperCase()}
            </Text>
            <Text dimColor>{` · exit ${report.exitCode} · checked ${report.generatedAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z')}${age >= 90 ? ` (${formatAge(age)} ago)` : ''}`}</Text>
          </>
        ) : null}
        {feed.loading ? <Text dimColor> · checking…</Text> : null}
      </Text>
      <Text dimColor wrap="truncate-end">
        {clip(`repository ${report?.repository.url ?? '…'}${report && !report.repository.reachable ? ' (unreachable)' : ''}`, width)}
      </Text>
      <Text dimColor wrap="truncate-end">
        {clip(report?.server ? `server ${report.server.endpoint}${report.server.reachable ? '' : ' (unreachable)'}` : report ? 'server not checked' : ' ', width)}
      </Text>
      <Text> </Text>
      {feed.error ? (
        <Text color={c('yellow')} wrap="wrap">
          {clip(`status unavailable: ${feed.error}`, width * 3)}
        </Text>
      ) : !report ? (
        <Text dimColor>Checking the repository and the server…</Text>
      ) : (
        visible.map((x, i) => {
          const n = start + i;
          const mark = `${n === index ? '›' : ' '} ${SEVERITY_MARK[x.status]} ${x.status.toUpperCase().padEnd(8)} ${x.title.padEnd(titleWidth)}  `;
          return (
            <Text key={`${x.id}-${x.database ?? ''}-${n}`} wrap="truncate-end" inverse={n === index}>
              <Text color={c(SEVERITY_COLOR[x.status])}>{mark.slice(0, 13)}</Text>
              {clip(mark.slice(13) + x.summary, Math.max(10, width - 14))}
            </Text>
          );
        })
      )}
      <Text> </Text>
      {selected && !feed.error ? (
        <>
          <Text wrap="wrap">{clip(`${selected.title}: ${selected.summary}`, lineChars * (detailLines - Math.max(1, hintLines)))}</Text>
          {hint ? (
            <Text dimColor wrap="wrap">
              {clip(hint, lineChars * hintLines)}
            </Text>
          ) : (
            <Text> </Text>
          )}
        </>
      ) : (
        <Text> </Text>
      )}
      <Text dimColor wrap="truncate-end">
        ↑↓ move · r refresh · Esc back
      </Text>
    </Box>
  );
}
