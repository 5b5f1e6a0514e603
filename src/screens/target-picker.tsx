// The recovery-target picker: the repository's recovery windows on a time axis, a cursor to
// choose a time, `l` for latest, or a target typed by hand (lsn:, xid:, name:, a time). It
// offers only what the pitr preflight accepts (same rule: recovery-timeline.ts). The catalog
// loads in the background from a source the app hands in (the screen never opens the
// repository itself); if it cannot be read, the target can still be typed and is
// checked for form only. Keys go through one pure reducer (pitfall 5: no stale state).
import type React from 'react';
import { useEffect, useLayoutEffect, useReducer, useRef, useState } from 'react';
import { Box, Text } from 'ink';
import { Spinner } from '@inkjs/ui';
import type { Catalog } from '../repo/catalog.js';
import type { RecoveryTimelineSource } from '../services/recovery-timeline.js';
import { TARGET_FORMS, usableWindows } from '../restore/target.js';
import { useKeys } from './keys.js';
import { IncidentList } from './incident-list.js';
import type { IncidentSource } from '../services/incident-source.js';
import { useTerminalSize, useTheme } from './theme.js';
import { clip, linesFor } from './format.js';
import { MARK, checkTarget, describeGap, describeTimelines, isoTime, timeSpan } from './recovery-timeline.js';
import { layoutTimeline } from './recovery-timeline-layout.js';
import { cursorSelection, initialPickerState, pathOf, pickerReducer, selectedCommit, type PickAlso } from './target-picker-state.js';
import { layoutActivity, restorePointsOn } from './recovery-timeline-activity.js';

// The reducer lives in target-picker-state.ts; tests and callers import it from here too.
export { cursorSelection, initialPickerState, pickerReducer, type PickerAction, type PickerState } from './target-picker-state.js';

// ---------------------------------------------------------------------------------------
// The screen

export interface TargetPickerProps {
  /** Where the catalog and the windows' last commits come from (the app builds it: loadRecoveryTimeline). */
  source: RecoveryTimelineSource;
  /** find-target's incidents: `f` opens the "find the incident" list (absent: no such entry). */
  incidents?: IncidentSource;
  /** The form field's current text. */
  initial?: string;
  /** The chosen target, or undefined when cancelled (Esc); `also`: the fields it implies (a commit: exclusive, its timeline). */
  onDone(target?: string, also?: PickAlso): void;
  /** Override the terminal size (tests). */
  size?: { columns: number; rows: number };
}

const LABEL = 10;
const label = (s: string) => s.padEnd(LABEL);

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

export function TargetPicker({ source, incidents, initial, onDone, size }: TargetPickerProps) {
  const { c } = useTheme();
  const terminal = useTerminalSize();
  const { columns, rows } = size ?? terminal;
  const width = Math.max(40, columns);
  const axisWidth = Math.max(20, width - LABEL - 1);
  const axisRef = useRef(axisWidth);
  useLayoutEffect(() => {
    axisRef.current = axisWidth;
  });
  const [state, dispatch] = useReducer(pickerReducer, initial ?? '', initialPickerState);
  // "Find the incident" (f): its own screen and state (incident-list.tsx); its choice is the target.
  const [finding, setFinding] = useState(false);
  useKeys((input, key) => (incidents && input === 'f' && !state.editing ? setFinding(true) : dispatch({ type: 'key', input, key, axisWidth: axisRef.current })));

  useEffect(() => {
    const controller = new AbortController();
    const { signal } = controller;
    void (async () => {
      let catalog: Catalog;
      try {
        catalog = await source.catalog(signal);
      } catch (err) {
        if (!signal.aborted) dispatch({ type: 'failed', error: message(err) });
        return;
      }
      if (signal.aborted) return;
      dispatch({ type: 'loaded', catalog, axisWidth: axisRef.current });
      if (!usableWindows(catalog).length) return;
      if (source.activity) {
        dispatch({ type: 'activity-reading' });
        // Commits and restore points: the cursor then steps by commit.
        source.activity(catalog, signal).then(
          (activity) => {
            if (!signal.aborted) dispatch({ type: 'activity', activity, problem: activity.problem });
          },
          (err: unknown) => {
            if (!signal.aborted) dispatch({ type: 'activity', problem: message(err) });
          },
        );
      }
      if (!source.lastCommits) return;
      dispatch({ type: 'commits-reading' });
      try {
        const r = await source.lastCommits(catalog, signal);
        if (!signal.aborted) dispatch({ type: 'commits', times: r.times, problem: r.problem, axisWidth: axisRef.current });
      } catch (err) {
        // The archive times stay as the windows' ends.
        if (!signal.aborted) dispatch({ type: 'commits', times: {}, problem: message(err), axisWidth: axisRef.current });
      }
    })();
    return () => controller.abort(new Error('target picker closed'));
  }, [source, state.loads]);

  // The server's WAL against the archive: is the last minute recoverable yet?
  useEffect(() => {
    if (!source.serverWal) return;
    const controller = new AbortController();
    source.serverWal(controller.signal).then(
      (server) => {
        if (!controller.signal.aborted) dispatch({ type: 'server', server });
      },
      () => {
        if (!controller.signal.aborted) dispatch({ type: 'server', server: undefined });
      },
    );
    return () => controller.abort();
  }, [source, state.loads]);

  // `s`: switch WAL now, wait for the archive, then read the catalog and the WAL again.
  useEffect(() => {
    if (state.switching !== 'requested' || !source.switchWal) return;
    dispatch({ type: 'switch', phase: 'running' });
    const controller = new AbortController();
    source.switchWal(controller.signal).then(
      (r) => {
        if (controller.signal.aborted) return;
        if (!r) dispatch({ type: 'switch', phase: 'failed', message: 'the server does not archive (in recovery, or archive_mode is off)' });
        else if (r.archived) dispatch({ type: 'switch', phase: 'done', message: `switched WAL: ${r.segment} is archived`, reload: true });
        else dispatch({ type: 'switch', phase: 'failed', message: `switched WAL, but ${r.segment} was not archived within 30 s: is archiving failing? (pg_stat_archiver)`, reload: true });
      },
      (err: unknown) => {
        if (!controller.signal.aborted) dispatch({ type: 'switch', phase: 'failed', message: `could not switch WAL: ${message(err)}` });
      },
    );
  }, [state.switching, source]);

  useEffect(() => {
    if (state.result !== undefined) onDone(state.result, state.resultAlso);
    else if (state.cancelled) onDone(undefined);
  }, [state.result, state.cancelled]);

  const header = (
    <Text key="header" bold wrap="truncate-end">
      Recovery target <Text dimColor>· {clip(source.describe, width - 20)}</Text>
    </Text>
  );
  if (finding && incidents) return <IncidentList source={incidents} width={width} onDone={(target) => (target ? onDone(target) : setFinding(false))} />;
  const byCommit = state.commit !== undefined && !state.latest;
  const hint = state.editing
    ? `type a target · Enter use it · Esc ${state.phase === 'ready' ? 'back to the timeline' : 'back to the form'}`
    : state.commit !== undefined
      ? `←→ commit · PgUp/PgDn ×10 · Home/End${(state.activity?.commits.length ?? 0) && new Set(state.activity?.commits.map((x) => x.timeline)).size > 1 ? ' · ↑↓ timeline' : ''} · l latest · e type${incidents ? ' · f find the incident' : ''} · Enter use · Esc back`
      : `←→ move · PgUp/PgDn ×10 · Home/End · l latest · e type${incidents ? ' · f find the incident' : ''} · Enter use · Esc back`;

  if (state.phase === 'loading' && !state.editing) {
    return (
      <Box flexDirection="column" width={width}>
        {header}
        <Text> </Text>
        <Box>
          <Spinner label={`Reading the catalog of ${clip(source.describe, width - 30)}…`} />
        </Box>
        <Text> </Text>
        <Text dimColor wrap="truncate-end">
          e type a target by hand{incidents ? ' · f find the incident' : ''} · Esc back
        </Text>
      </Box>
    );
  }

  const model = state.phase === 'ready' ? state.model : undefined;
  const lines: React.ReactNode[] = [];
  let budget = Math.max(0, rows - 1);
  // Keep room for the hint and a refusal message (up to two lines).
  const reserved = 1 + (state.message ? Math.min(2, linesFor(state.message, width)) : 0);
  const push = (node: React.ReactNode, n = 1) => {
    if (budget - n < reserved) return;
    lines.push(node);
    budget -= n;
  };
  push(header);

  if (model) {
    const windows = model.windows.length;
    const gapCount = model.gaps.length;
    push(
      <Text key="summary" dimColor wrap="truncate-end">
        {model.backups.length} base backup{model.backups.length === 1 ? '' : 's'} ({windows} usable) · {model.walFiles} WAL files on timeline
        {model.timelines.length === 1 ? '' : 's'} {model.timelines.map((t) => t.timeline).join(', ') || '-'}
        {gapCount ? ` · ${gapCount} gap${gapCount === 1 ? '' : 's'}` : ''}
      </Text>,
    );
    push(<Text key="b1"> </Text>);
    const sel = state.editing ? undefined : cursorSelection(state);
    const chosen = sel?.ok ? sel.backupId : undefined;
    const layout = layoutTimeline(model, axisWidth, state.cursor, chosen);
    push(
      <Text key="labels" wrap="truncate-end">
        {label('')}
        {layout.labels}
      </Text>,
    );
    const cc = layout.chosenColumn;
    push(
      <Text key="backups" wrap="truncate-end">
        <Text dimColor>{label('backups')}</Text>
        {cc === undefined ? (
          layout.backups
        ) : (
          <>
            {layout.backups.slice(0, cc)}
            <Text inverse bold color={c('green')}>
              {layout.backups[cc]}
            </Text>
            {layout.backups.slice(cc + 1)}
          </>
        )}
      </Text>,
    );
    push(
      <Text key="wal" wrap="truncate-end">
        <Text dimColor>{label('WAL')}</Text>
        {colorRuns(layout.wal, c)}
      </Text>,
    );
    if (layout.gaps) {
      push(
        <Text key="gaps" wrap="truncate-end" color={c('red')}>
          {label('')}
          {layout.gaps}
        </Text>,
      );
    }
    if (state.activity && state.model) {
      const act = layoutActivity(state.model, state.activity, axisWidth);
      for (const r of act.rows) {
        const chosenTl = r.timeline === state.timeline;
        push(
          <Text key={`tl-row-${r.timeline}`} wrap="truncate-end">
            <Text dimColor={!chosenTl} bold={chosenTl}>
              {label(`${chosenTl && byCommit ? '›' : ' '}tl ${r.timeline}`)}
            </Text>
            <Text color={c('cyan')}>{r.row}</Text>
          </Text>,
        );
      }
      if (act.points) {
        push(
          <Text key="points" wrap="truncate-end">
            <Text dimColor>{label('points')}</Text>
            <Text color={c('magenta')}>{act.points}</Text>
          </Text>,
        );
      }
    }
    if (!state.editing) {
      push(
        <Text key="cursor" wrap="truncate-end" color={c('cyan')}>
          {label('')}
          {layout.cursor}
        </Text>,
      );
    }
    push(<Text key="b2"> </Text>);
    if (!state.editing && sel) {
      push(
        <Text key="target" wrap="truncate-end">
          <Text dimColor>{label('target')}</Text>
          <Text bold>{state.latest ? 'latest' : (sel.label ?? sel.target)}</Text>
          {state.latest ? <Text dimColor> (the end of the archived WAL)</Text> : null}
        </Text>,
      );
      const commit = byCommit ? selectedCommit(state) : undefined;
      if (commit) {
        push(
          <Text key="commit" wrap="truncate-end" dimColor>
            {label('')}
            {`commit ${(state.commit ?? 0) + 1} of ${pathOf(state).length} on timeline ${state.timeline} · ${sel.target}, exclusive · LSN ${commit.lsn}`}
          </Text>,
        );
      }
      if (sel.ok) {
        const win = model.windows.find((w) => w.backupId === sel.backupId);
        const b = model.backups.find((x) => x.id === sel.backupId);
        push(
          <Text key="backup" wrap="truncate-end">
            <Text dimColor>{label('backup')}</Text>
            <Text color={c('green')}>✓ {sel.backupId}</Text>
            {b ? <Text dimColor> · ended {isoTime(b.stopTime)} at {b.stopLsn}</Text> : null}
          </Text>,
        );
        if (win) {
          push(
            <Text key="window" wrap="truncate-end">
              <Text dimColor>{label('window')}</Text>
              {timeSpan(win.from, win.to)}
              <Text dimColor>
                {' '}
                ({win.toExact ? 'last commit' : 'archived until'}) · {win.fromLsn}..{win.toLsn}
                {win.timelines.length > 1 ? ` · timelines ${win.timelines.join('→')}` : model.timelines.length > 1 ? ` · timeline ${win.timeline}` : ''}
              </Text>
            </Text>,
          );
        }
      } else {
        const text = `✗ outside the recovery window: ${sel.reason}`;
        push(
          <Box key="outside" marginLeft={LABEL}>
            <Text wrap="wrap" color={c('red')}>
              {clip(text, 2 * (width - LABEL) - 8)}
            </Text>
          </Box>,
          Math.min(2, linesFor(text, width - LABEL)),
        );
      }
    }
  } else {
    push(<Text key="b1"> </Text>);
    push(
      <Text key="err" color={c('red')} wrap="wrap">
        ✗ {clip(`could not read the catalog: ${state.error ?? 'unknown error'}`, width * 2 - 4)}
      </Text>,
      Math.min(2, Math.ceil((state.error?.length ?? 0) / Math.max(10, width - 4)) || 1),
    );
    push(
      <Text key="manual" dimColor wrap="truncate-end">
        Type the target by hand; the pitr preflight checks it against the repository.
      </Text>,
    );
    push(<Text key="b2"> </Text>);
  }

  if (state.editing) {
    const check = state.text.trim() ? checkTarget(model, state.text) : undefined;
    push(
      <Text key="input" wrap="truncate-start">
        <Text dimColor>{label('target>')}</Text>
        {state.text}
        <Text inverse> </Text>
      </Text>,
    );
    const checkText = check ? clip(check.ok ? `✓ ${check.summary}` : `✗ ${check.error}`, 2 * (width - LABEL) - 8) : '';
    push(
      check ? (
        <Box key="check" marginLeft={LABEL}>
          <Text wrap="wrap" color={c(check.ok ? 'green' : 'red')}>
            {checkText}
          </Text>
        </Box>
      ) : (
        <Text key="check" dimColor wrap="truncate-end">
          {label('')}
          {clip(TARGET_FORMS, width - LABEL - 1)}
        </Text>
      ),
      check ? Math.min(2, linesFor(checkText, width - LABEL)) : 1,
    );
  }

  if (model) {
    const info: { key: string; text: string; color?: 'red' | 'yellow' }[] = [];
    const server = state.server;
    if (state.switching === 'running') info.push({ key: 'switch', text: 'switching WAL and waiting for the archive…', color: 'yellow' });
    else if (state.switchMessage) info.push({ key: 'switch', text: state.switchMessage, color: state.switching === 'failed' ? 'red' : undefined });
    if (server?.unarchived && !server.inRecovery && state.switching !== 'running') {
      info.push({
        key: 'unarchived',
        text: `s switch WAL now: the server's current WAL ${server.currentSegment ?? ''} is not archived yet; its newest commits cannot be recovered to`,
        color: 'yellow',
      });
    }
    if (state.activityState === 'reading') info.push({ key: 'activity', text: 'reading commits and restore points from the archived WAL…' });
    else if (state.activity) {
      const n = state.activity.commits.filter((x) => !x.aborted).length;
      if (!n) info.push({ key: 'activity', text: `no commits found in the archived WAL${state.activityProblem ? ` (${state.activityProblem})` : ''}`, color: state.activityProblem ? 'yellow' : undefined });
      else if (state.activity.truncated) info.push({ key: 'activity', text: `commits shown from the newest ${state.activity.scanned.map((x) => `${x.segments} segments of timeline ${x.timeline}`).join(', ')}; type an older target with e` });
      if (state.model) {
        const tl = state.timeline ?? 0;
        for (const p of restorePointsOn(state.model, state.activity, tl)) info.push({ key: `rp-${p.timeline}-${p.lsn}`, text: `R restore point "${p.name}" at ${p.lsn}${p.after ? `, after the commit at ${p.after.replace('T', ' ')}` : ''} (name:${p.name})` });
      }
    } else if (state.activityProblem) info.push({ key: 'activity', text: `commits not read: ${state.activityProblem}`, color: 'yellow' });
    if (state.commits === 'reading') info.push({ key: 'commits', text: 'reading the last commit of each window from the archived WAL…' });
    else if (state.commits === 'done' && model.windows.some((w) => !w.toExact) && model.windows.length)
      info.push({ key: 'commits', text: `window ends are WAL archive times${state.commitsProblem ? ` (last commits not read: ${state.commitsProblem})` : ''}`, color: 'yellow' });
    if (!model.windows.length) info.push({ key: 'none', text: 'no usable recovery window: no complete base backup with the WAL it needs', color: 'red' });
    for (const g of model.gaps) info.push({ key: `gap-${g.timeline}-${g.from}`, text: `gap on timeline ${g.timeline}: ${describeGap(g)}`, color: 'red' });
    for (const b of model.backups.filter((x) => !x.usable)) info.push({ key: `bad-${b.id}`, text: `${b.id} unusable: ${b.problem ?? 'no window'}`, color: 'yellow' });
    for (const [i, t] of describeTimelines(model).entries()) info.push({ key: `tl-${i}`, text: t });
    if (model.incomplete) info.push({ key: 'incomplete', text: `${model.incomplete} incomplete base backup${model.incomplete === 1 ? '' : 's'} (no backup.json) not offered` });
    if (info.length) push(<Text key="b3"> </Text>);
    for (const line of info) {
      const text = clip(line.text, 2 * (width - 2) - 8);
      push(
        <Box key={line.key}>
          <Box width={2} flexShrink={0}>
            <Text color={line.color ? c(line.color) : undefined}>{line.color === 'red' ? MARK.gap : ' '}</Text>
          </Box>
          <Text wrap="wrap" color={line.color ? c(line.color) : undefined} dimColor={!line.color}>
            {text}
          </Text>
        </Box>,
        Math.min(2, linesFor(text, width - 2)),
      );
    }
  }

  return (
    <Box flexDirection="column" width={width}>
      {lines}
      {state.message ? (
        <Text color={c('red')} wrap="wrap">
          ✗ {clip(state.message, 2 * width - 8)}
        </Text>
      ) : null}
      <Text dimColor wrap="truncate-end">
        {hint}
      </Text>
    </Box>
  );
}

/** The WAL row with ━ green and ╳ red when colours are on (the characters carry the meaning). */
function colorRuns(row: string, c: ReturnType<typeof useTheme>['c']): React.ReactNode[] {
  const out: React.ReactNode[] = [];
  let i = 0;
  while (i < row.length) {
    let j = i;
    while (j < row.length && row[j] === row[i]) j++;
    const ch = row[i];
    const color = ch === MARK.covered ? c('green') : ch === MARK.gap ? c('red') : undefined;
    out.push(
      <Text key={i} color={color} dimColor={ch === MARK.missing}>
        {row.slice(i, j)}
      </Text>,
    );
    i = j;
  }
  return out;
}
