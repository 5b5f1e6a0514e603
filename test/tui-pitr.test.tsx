// The TUI side of point-in-time recovery: the recovery-target picker against a real file://
// repository (base backups committed through the Repository API, WAL objects under wal/
// with their archive times, one gap), and the WAL replay panel of the run view with a small
// in-memory procedure. No PostgreSQL runs here: the picker only reads the catalog.
// ink-testing-library renders every commit; each step waits for the frame it expects.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cleanup, render } from 'ink-testing-library';
import type { Key } from 'ink';
import { gate, key, poll as waitFor, stripAnsi, waitForFrame } from './helpers/ink.js';
import { App } from '../src/app.js';
import type { Procedure, RunEvent, RunSummary } from '../src/engine/types.js';
import { pitrProcedure } from '../src/procedures/pitr.js';
import { buildServices } from '../src/procedures/services.js';
import { openRepository } from '../src/repo/repository.js';
import { readCatalog, type Catalog } from '../src/repo/catalog.js';
import { walKey } from '../src/repo/walarchive.js';
import { formatLsn, lsnOfSegno, segmentName } from '../src/repo/walnames.js';
import { AppThemeProvider } from '../src/screens/theme.js';
import { KeysProvider } from '../src/screens/keys.js';
import { RunScreen, RunView, labelledProgressText } from '../src/screens/run-view.js';
import { replayInfoReducer, runReducer, initialRunState } from '../src/screens/run-state.js';
import {
  BIG_STEP,
  MARK,
  buildTimelineModel,
  checkTarget,
  chooseForLsn,
  chooseForTime,
  columnOf,
  isoTime,
  labelTime,
  moveCursor,
  recoverableRange,
} from '../src/screens/recovery-timeline.js';
import { layoutTimeline } from '../src/screens/recovery-timeline-layout.js';
import { initialPickerState, pickerReducer, type PickerState } from '../src/screens/target-picker.js';

// ---------------------------------------------------------------------------------------
// helpers (as in tui.test.tsx)

const KEYS = { enter: '\r', left: '\x1B[D', right: '\x1B[C', home: '\x1B[H', end: '\x1B[F', pageUp: '\x1B[5~', esc: '\x1B', ctrlU: '\x15', ctrlT: '\x14' };

/** A frame with its line breaks and padding collapsed (wrapped messages read as one line). */
const flat = (frame: string) => frame.replace(/\s+/g, ' ');

/** The "target" line of the picker: the time or target it would hand back. */
const targetLine = (frame: string) => /^target\s+(\S+)/m.exec(frame)?.[1];

// ---------------------------------------------------------------------------------------
// The repository: timeline 1, segments 1..5 and 8..12 (6 and 7 missing), two base backups.
//   b1 stopped 10:12 in segment 2: its window runs to segment 5, archived 10:45, then the gap.
//   b2 stopped 11:18 in segment 9: its window runs to segment 12, archived 11:50.
// Plus an incomplete backup (no backup.json) that must not be offered.

const T0 = Date.parse('2026-01-01T10:00:00Z');
const min = (m: number) => T0 + m * 60_000;
const ARCHIVED: Record<number, number> = { 1: min(5), 2: min(15), 3: min(25), 4: min(35), 5: min(45), 8: min(70), 9: min(80), 10: min(90), 11: min(100), 12: min(110) };
const seg = (n: number) => segmentName(1, BigInt(n));

let work: string;
let repoDir: string;
let repoUrl: string;
let stateDir: string;
let catalog: Catalog;

async function buildRepository(dir: string): Promise<void> {
  const repo = await openRepository(`file://${dir}`, {});
  try {
    for (const [n, at] of Object.entries(ARCHIVED)) {
      const k = walKey(seg(Number(n)), 'gzip');
      await repo.store.put(k, zlib.gzipSync(Buffer.from(`not really WAL segment ${n}`)));
      // The catalog dates WAL by when it was archived: the object's modification time.
      fs.utimesSync(path.join(dir, ...k.split('/')), new Date(at), new Date(at));
    }
    const backup = async (id: string, segno: number, stopMin: number) => {
      const data = await repo.putObject(repo.baseBackupKey(id, 'base.tar.gz'), zlib.gzipSync(Buffer.from(`base backup ${id}`)));
      await repo.commitBaseBackup({
        id,
        startLsn: formatLsn(lsnOfSegno(BigInt(segno)) + 0x28n),
        stopLsn: formatLsn(lsnOfSegno(BigInt(segno)) + 0x100n),
        startTime: new Date(min(stopMin - 1)).toISOString(),
        stopTime: new Date(min(stopMin)).toISOString(),
        timeline: 1,
        objects: { data: { ...data, format: 'tar', compression: 'gzip' } },
      });
    };
    await backup('b1', 2, 12);
    await backup('b2', 9, 78);
    await repo.putObject(repo.baseBackupKey('b3-unfinished', 'base.tar.gz'), Buffer.from('half'));
  } finally {
    await repo.close();
  }
}

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrunbook-tui-pitr-'));
  repoDir = path.join(work, 'repo');
  stateDir = path.join(work, 'state');
  fs.mkdirSync(repoDir);
  fs.mkdirSync(stateDir);
  repoUrl = `file://${repoDir}`;
  await buildRepository(repoDir);
  const repo = await openRepository(repoUrl, {});
  try {
    catalog = await readCatalog(repo.store);
  } finally {
    await repo.close();
  }
});
afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});
afterEach(() => {
  cleanup();
});

// ---------------------------------------------------------------------------------------
// pure: model, rule, layout, cursor

describe('recovery timeline model', () => {
  it('has the two windows, newest first, the gap and the incomplete backup', () => {
    const m = buildTimelineModel(catalog);
    expect(m.windows.map((w) => [w.backupId, isoTime(w.from), isoTime(w.to), w.toExact])).toEqual([
      ['b2', '2026-01-01T11:18:00Z', '2026-01-01T11:50:00Z', false],
      ['b1', '2026-01-01T10:12:00Z', '2026-01-01T10:45:00Z', false],
    ]);
    expect(m.windows[1].endedByGap).toMatchObject({ from: seg(6), to: seg(7), missing: 2 });
    expect(m.gaps).toHaveLength(1);
    expect(m.incomplete).toBe(1);
    expect(m.backups.map((b) => b.id)).toEqual(['b1', 'b2']);
    expect(m.start).toBeLessThan(min(12));
    expect(m.end).toBeGreaterThan(min(110));
  });

  it('chooses like chooseBackup: the newest backup ending before the time, refusing gaps and the ends', () => {
    const m = buildTimelineModel(catalog);
    const pick = (t: number) => {
      const c = chooseForTime(m, t);
      return c.ok ? c.window.backupId : c.reason;
    };
    expect(pick(min(30))).toBe('b1');
    expect(pick(min(100))).toBe('b2');
    expect(pick(min(12))).toMatch(/^before the end of the oldest base backup \(b1, ended 2026-01-01T10:12:00Z\)/);
    expect(pick(min(11))).toMatch(/^before the end of the oldest base backup/);
    expect(pick(min(60))).toMatch(new RegExp(`^in a gap of the WAL archive \\(timeline 1: ${seg(6)}\\.\\.${seg(7)} \\(2 segments\\) missing\\)`));
    expect(pick(min(110))).toMatch(/^after the end of the archived WAL \(last segment archived 2026-01-01T11:50:00Z\)/);

    // Once the last commit is read from the WAL, it bounds the window instead of the archive time.
    const exact = buildTimelineModel(catalog, { [seg(12)]: new Date(min(105)).toISOString() });
    expect(exact.windows[0]).toMatchObject({ toExact: true, to: min(105) });
    expect(chooseForTime(exact, min(104)).ok).toBe(true);
    const late = chooseForTime(exact, min(106));
    expect(late.ok ? '' : late.reason).toMatch(/^after the last commit in the archived WAL \(2026-01-01T11:45:00Z\)/);
  });

  it('places LSNs and checks typed targets', () => {
    const m = buildTimelineModel(catalog);
    const lsn = (text: string) => {
      const c = chooseForLsn(m, BigInt(`0x${text.replace('/', '').padStart(1, '0')}`));
      return c.ok ? c.window.backupId : c.reason;
    };
    expect(lsn('3000000')).toBe('b1');
    expect(lsn('A000000')).toBe('b2');
    expect(lsn('6800000')).toMatch(/^in a gap of the WAL archive/);
    expect(lsn('1000000')).toMatch(/^before the end of the oldest base backup/);
    expect(lsn('20000000')).toMatch(/^beyond the archived WAL \(it ends at 0\/D000000\)/);

    expect(checkTarget(m, 'latest')).toMatchObject({ ok: true, backupId: 'b2' });
    expect(checkTarget(m, '2026-01-01T10:30:00Z')).toMatchObject({ ok: true, backupId: 'b1', target: '2026-01-01T10:30:00Z' });
    expect(checkTarget(m, '2026-01-01T11:00:00+00:00')).toMatchObject({ ok: false, error: expect.stringMatching(/time 2026-01-01T11:00:00.000000Z is in a gap/) });
    expect(checkTarget(m, '2026-01-01T10:30:00')).toMatchObject({ ok: false, error: expect.stringMatching(/add a time zone/) });
    expect(checkTarget(m, 'lsn:0/3000000')).toMatchObject({ ok: true, backupId: 'b1' });
    expect(checkTarget(m, 'lsn:zz')).toMatchObject({ ok: false, error: expect.stringMatching(/is not an LSN/) });
    expect(checkTarget(m, 'xid:1234')).toMatchObject({ ok: true, summary: expect.stringMatching(/preflight step finds it/) });
    expect(checkTarget(m, 'name:')).toMatchObject({ ok: false });
    expect(checkTarget(undefined, 'lsn:0/3000000')).toMatchObject({ ok: true, summary: expect.stringMatching(/not checked against the catalog/) });
  });

  it('lays the windows out on the axis: B at stop times, ━ windows, ╳ the gap, · the rest, labels and ▲', () => {
    const m = buildTimelineModel(catalog);
    const width = 69; // an 80-column terminal less the row labels
    const cursor = min(30);
    const rows = layoutTimeline(m, width, cursor, 'b1');
    const col = (t: number) => columnOf(m, t, width);
    for (const row of [rows.labels, rows.backups, rows.wal, rows.gaps, rows.cursor]) expect([...row]).toHaveLength(width);
    expect(rows.backups[col(min(12))]).toBe(MARK.backup);
    expect(rows.backups[col(min(78))]).toBe(MARK.backup);
    expect(rows.chosenColumn).toBe(col(min(12)));
    expect(rows.backups.replace(/ /g, '')).toBe('BB');
    // ━ over both windows, ╳ between them, · outside.
    expect(rows.wal.slice(col(min(12)), col(min(45)) + 1)).toMatch(/^━+$/);
    expect(rows.wal.slice(col(min(45)) + 1, col(min(78)))).toMatch(/^╳+$/);
    expect(rows.wal.slice(col(min(78)), col(min(110)) + 1)).toMatch(/^━+$/);
    expect(rows.wal[0]).toBe(MARK.missing);
    expect(rows.wal[width - 1]).toBe(MARK.missing);
    expect(rows.gaps.indexOf(`╳ ${seg(6)} +1`)).toBe(col(min(45)) + 1);
    expect(rows.labels).toContain(labelTime(min(12)));
    expect(rows.labels).toContain(labelTime(min(110)));
    expect(rows.cursor.indexOf(MARK.cursor)).toBe(col(cursor));
  });

  it('moves the cursor by columns, big steps, Home and End', () => {
    const m = buildTimelineModel(catalog);
    const width = 69;
    const range = recoverableRange(m, width)!;
    expect(isoTime(range.first)).toBe('2026-01-01T10:12:01Z');
    expect(isoTime(range.last)).toBe('2026-01-01T11:49:59Z');
    expect(moveCursor(m, min(50), width, 'home')).toBe(range.first);
    expect(moveCursor(m, min(50), width, 'end')).toBe(range.last);
    const c0 = columnOf(m, min(50), width);
    expect(columnOf(m, moveCursor(m, min(50), width, 'right'), width)).toBe(c0 + 1);
    expect(columnOf(m, moveCursor(m, min(50), width, 'bigLeft'), width)).toBe(c0 - BIG_STEP);
    // Whole seconds when a column is longer than two seconds.
    expect(moveCursor(m, min(50), width, 'right') % 1000).toBe(0);
    // Clamped to the axis.
    let t = range.last;
    for (let i = 0; i < 20; i++) t = moveCursor(m, t, width, 'bigRight');
    expect(t).toBeLessThanOrEqual(m.end);
    expect(columnOf(m, t, width)).toBe(width - 1);
  });

  it('pickerReducer: keys move, l picks latest, Enter refuses outside and accepts inside, e edits', () => {
    const width = 69;
    let s: PickerState = pickerReducer(initialPickerState(''), { type: 'loaded', catalog, axisWidth: width });
    const press = (input: string, k: Partial<Key> = {}) => (s = pickerReducer(s, { type: 'key', input, key: key(k), axisWidth: width }));
    expect(isoTime(s.cursor)).toBe('2026-01-01T11:49:59Z');
    press('', { home: true });
    press('', { leftArrow: true });
    press('', { return: true });
    expect(s.result).toBeUndefined();
    expect(s.message).toMatch(/^Cannot recover to 2026-01-01T10:1\d:\d\dZ: it is before the end of the oldest base backup/);
    press('', { rightArrow: true });
    press('', { rightArrow: true });
    expect(s.message).toBeUndefined();
    press('l');
    expect(s.latest).toBe(true);
    press('e');
    expect(s).toMatchObject({ editing: true, text: 'latest' });
    press('', { escape: true });
    expect(s).toMatchObject({ editing: false, latest: true });
    press('', { return: true });
    expect(s.result).toBe('latest');

    // Window ends refined from the WAL: an untouched cursor follows the new latest time; a placed one stays.
    const refined = { type: 'commits' as const, times: { [seg(12)]: new Date(min(105)).toISOString() }, axisWidth: width };
    s = pickerReducer(pickerReducer(initialPickerState(''), { type: 'loaded', catalog, axisWidth: width }), refined);
    expect(isoTime(s.cursor)).toBe('2026-01-01T11:44:59Z');
    expect(s.model!.windows[0].toExact).toBe(true);
    s = pickerReducer(initialPickerState(''), { type: 'loaded', catalog, axisWidth: width });
    press('', { home: true });
    s = pickerReducer(s, refined);
    expect(isoTime(s.cursor)).toBe('2026-01-01T10:12:01Z');

    // Opened on a typed LSN: straight into the editor, as typed.
    s = pickerReducer(initialPickerState('lsn:0/3000000'), { type: 'loaded', catalog, axisWidth: width });
    expect(s).toMatchObject({ editing: true, text: 'lsn:0/3000000' });
    // Opened on a time: the cursor starts there.
    s = pickerReducer(initialPickerState('2026-01-01T10:30:00Z'), { type: 'loaded', catalog, axisWidth: width });
    expect(isoTime(s.cursor)).toBe('2026-01-01T10:30:00Z');
    press('', { return: true });
    expect(s.result).toBe('2026-01-01T10:30:00Z');

    // The catalog failed: the editor, and Esc leaves.
    s = pickerReducer(initialPickerState(''), { type: 'failed', error: 'no backup repository' });
    expect(s).toMatchObject({ phase: 'failed', editing: true });
    press('xid:7');
    press('', { return: true });
    expect(s.result).toBe('xid:7');
    s = pickerReducer(initialPickerState(''), { type: 'failed', error: 'x' });
    press('', { escape: true });
    expect(s.cancelled).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------
// the picker in the app, opened from the pitr form

function renderPitrForm(repo: string | undefined) {
  const env = { NO_COLOR: '1' } as NodeJS.ProcessEnv;
  const services = buildServices(repo ? { repo } : {}, env, {});
  const app = render(<App procedures={[pitrProcedure]} stateDir={stateDir} env={env} services={services} progressIntervalMs={0} />);
  return app;
}

async function openForm(app: ReturnType<typeof renderPitrForm>) {
  await waitForFrame(app.lastFrame, '› pitr');
  app.stdin.write(KEYS.enter);
  return waitForFrame(app.lastFrame, 'parameters (pitr)');
}

describe('target picker', () => {
  it('draws the catalog, moves the cursor, names the backup, refuses outside the window and fills the form', async () => {
    const app = renderPitrForm(repoUrl);
    const { lastFrame, stdin } = app;
    let frame = await openForm(app);
    expect(frame).toMatch(/› target/);
    expect(frame).toContain('Enter/Ctrl-T pick on the timeline');

    // Enter on the empty target field opens the picker; the catalog loads.
    stdin.write(KEYS.enter);
    frame = await waitForFrame(lastFrame, (f) => f.includes('backups') && f.includes('window ends are WAL archive times'));
    expect(frame).toContain(`Recovery target · ${repoUrl}`);
    expect(frame).toContain('2 base backups (2 usable) · 10 WAL files on timeline 1 · 1 gap');
    expect(frame).toMatch(/^backups\s+B\s+B\s*$/m);
    expect(frame).toMatch(/^WAL\s+·+━+╳+━+·+$/m);
    expect(frame).toContain(`╳ ${seg(6)} +1`);
    expect(frame).toContain(`╳ gap on timeline 1: ${seg(6)}..${seg(7)} (2 segments) missing`);
    expect(flat(frame)).toMatch(/timeline 1: 10 segments 000000010000000000000001\.\.0000000C, 1 gap, last archived 2026-01-01T11:50:00Z/);
    expect(frame).toContain('1 incomplete base backup (no backup.json) not offered');
    expect(frame).toContain(labelTime(min(12)));
    expect(frame).toContain(labelTime(min(110)));
    // The cursor starts at the latest recoverable time, in b2's window.
    expect(targetLine(frame)).toBe('2026-01-01T11:49:59Z');
    expect(frame).toMatch(/backup\s+✓ b2 · ended 2026-01-01T11:18:00Z at 0\/9000100/);
    expect(frame).toMatch(/window\s+11:18:00Z → 11:50:00Z \(archived until\) · 0\/9000100\.\.0\/D000000$/m);

    // PgUp back into the gap: outside, with the reason; Enter refuses.
    for (let i = 0; i < 8 && !flat(frame).includes('it is in a gap'); i++) {
      const before = targetLine(frame);
      stdin.write(KEYS.pageUp);
      frame = await waitForFrame(lastFrame, (f) => targetLine(f) !== before);
    }
    expect(flat(frame)).toContain(`✗ outside the recovery window: it is in a gap of the WAL archive (timeline 1: ${seg(6)}..${seg(7)} (2 segments) missing)`);
    const inGap = targetLine(frame)!;
    expect(Date.parse(inGap)).toBeGreaterThan(min(45));
    expect(Date.parse(inGap)).toBeLessThan(min(78));
    stdin.write(KEYS.enter);
    frame = await waitForFrame(lastFrame, (f) => flat(f).includes(`✗ Cannot recover to ${inGap}: it is in a gap`));
    expect(frame).toContain('Recovery target'); // still the picker

    // Home: just after b1 ended. One step left is before it: refused.
    stdin.write(KEYS.home);
    frame = await waitForFrame(lastFrame, (f) => targetLine(f) === '2026-01-01T10:12:01Z');
    expect(frame).toMatch(/backup\s+✓ b1 · ended 2026-01-01T10:12:00Z at 0\/2000100/);
    expect(frame).toMatch(/window\s+10:12:00Z → 10:45:00Z \(archived until\) · 0\/2000100\.\.0\/6000000/);
    stdin.write(KEYS.left);
    frame = await waitForFrame(lastFrame, (f) => flat(f).includes('✗ outside the recovery window: it is before the end of the oldest base backup (b1'));
    stdin.write(KEYS.enter);
    await waitForFrame(lastFrame, (f) => flat(f).includes('✗ Cannot recover to 2026-01-01T10:1') && flat(f).includes(': it is before the end of the oldest base backup (b1, ended 2026-01-01T10:12:00Z).'));

    // Three steps right: inside b1's window. Enter fills the form and moves on.
    for (let i = 0; i < 3; i++) {
      const before = targetLine(frame);
      stdin.write(KEYS.right);
      frame = await waitForFrame(lastFrame, (f) => targetLine(f) !== before);
    }
    expect(frame).toMatch(/backup\s+✓ b1/);
    const chosen = targetLine(frame)!;
    expect(Date.parse(chosen)).toBeGreaterThan(min(12));
    expect(Date.parse(chosen)).toBeLessThan(min(45));
    stdin.write(KEYS.enter);
    frame = await waitForFrame(lastFrame, 'parameters (pitr)');
    expect(frame).toMatch(new RegExp(`target\\s*\\*\\s+${chosen.replace(/[.:]/g, '\\$&')}`));
    expect(frame).toMatch(/› target-action/);
  });

  it('validates a target typed by hand, and Esc leaves the form as it was', async () => {
    const app = renderPitrForm(repoUrl);
    const { lastFrame, stdin } = app;
    await openForm(app);
    stdin.write('2026-01-01T10:30:00Z');
    await waitForFrame(lastFrame, /target\s*\*\s+2026-01-01T10:30:00Z/);

    // Ctrl-T opens the picker on the field's time.
    stdin.write(KEYS.ctrlT);
    let frame = await waitForFrame(lastFrame, (f) => targetLine(f) === '2026-01-01T10:30:00Z');
    expect(frame).toMatch(/backup\s+✓ b1/);

    // e: the editor, prefilled with the cursor's time.
    stdin.write('e');
    await waitForFrame(lastFrame, /target>\s+2026-01-01T10:30:00Z/);
    stdin.write(KEYS.ctrlU);
    stdin.write('lsn:zz');
    frame = await waitForFrame(lastFrame, (f) => flat(f).includes('✗ --target lsn:zz: "zz" is not an LSN'));
    stdin.write(KEYS.enter);
    frame = await waitForFrame(lastFrame, (f) => f.split('is not an LSN').length > 2); // the check line and the refusal
    expect(frame).toMatch(/target>\s+lsn:zz/);
    stdin.write(KEYS.ctrlU);
    stdin.write('lsn:0/6800000');
    frame = await waitForFrame(lastFrame, (f) => flat(f).includes('✗ LSN 0/6800000 is in a gap of the WAL archive'));
    stdin.write(KEYS.ctrlU);
    stdin.write('lsn:0/3000000');
    await waitForFrame(lastFrame, (f) => flat(f).includes('✓ LSN 0/3000000 from base backup b1'));
    stdin.write(KEYS.ctrlU);
    stdin.write('xid:1234');
    await waitForFrame(lastFrame, (f) => flat(f).includes('✓ transaction 1234: the preflight step finds it in the archived WAL'));
    stdin.write(KEYS.enter);
    frame = await waitForFrame(lastFrame, 'parameters (pitr)');
    expect(frame).toMatch(/target\s*\*\s+xid:1234/);

    // Back on the field: Ctrl-T, then Esc twice (editor, picker): the value stays.
    stdin.write('\x1B[A'); // up
    await waitForFrame(lastFrame, /› target\s/);
    stdin.write(KEYS.ctrlT);
    await waitForFrame(lastFrame, /target>\s+xid:1234/); // an xid opens in the editor
    stdin.write(KEYS.esc);
    await waitForFrame(lastFrame, '←→ move');
    stdin.write(KEYS.esc);
    frame = await waitForFrame(lastFrame, 'parameters (pitr)');
    expect(frame).toMatch(/target\s*\*\s+xid:1234/);
  });

  it('without a readable catalog shows why and still takes a typed target', async () => {
    const app = renderPitrForm(undefined);
    const { lastFrame, stdin } = app;
    await openForm(app);
    stdin.write(KEYS.enter);
    let frame = await waitForFrame(lastFrame, 'could not read the catalog');
    expect(frame).toContain('no backup repository: pass --repo URL');
    expect(frame).toContain('Type the target by hand');
    stdin.write('name:before-migration');
    frame = await waitForFrame(lastFrame, (f) => flat(f).includes('✓ restore point "before-migration"; not checked against the catalog'));
    stdin.write(KEYS.enter);
    frame = await waitForFrame(lastFrame, 'parameters (pitr)');
    expect(frame).toMatch(/target\s*\*\s+name:before-migration/);
  });
});

// ---------------------------------------------------------------------------------------
// the replay panel and the promote question

const MiB = 1024 * 1024;

function replayProcedure(hold: Promise<void>, answers: boolean[]): Procedure {
  return {
    id: 'pitr-demo',
    title: 'Point-in-time recovery (demo)',
    summary: 'replays and asks to promote',
    group: 'restore',
    params: [
      { name: 'target', type: 'string', description: 'target' },
      { name: 'targetAction', type: 'choice', choices: ['pause', 'promote'], default: 'pause', description: 'action' },
    ],
    steps: [
      {
        id: 'replay',
        title: 'Start PostgreSQL and replay WAL to the target',
        kind: 'action',
        describe: () => 'Starting the server in recovery; progress is the replayed LSN against 0/2000000.',
        async run(ctx) {
          ctx.log('started: pg_ctl start');
          // Typed replay progress, as pitr reports it; the log lines say nothing the panel reads.
          ctx.progress({ done: 8 * MiB, total: 16 * MiB, unit: 'bytes', replay: { lsn: '0/1000000', targetLsn: '0/2000000' } });
          await hold;
          ctx.progress({
            done: 16 * MiB,
            total: 16 * MiB,
            unit: 'bytes',
            replay: { lsn: '0/2000028', targetLsn: '0/2000000', commitTime: '2026-01-01T10:29:58.000Z', paused: true },
          });
          ctx.log('recovery is waiting at the target');
        },
      },
      { id: 'verify-connect', title: 'Verify: connect', kind: 'verify', async run(ctx) { ctx.check('connects', true); } },
      {
        id: 'promote',
        title: 'Promote the recovered server',
        kind: 'action',
        async run(ctx) {
          const ok = await ctx.confirm({ message: `Recovery is paused at ${String(ctx.params.target)}. Promote the server now (read-write, new timeline)?` });
          answers.push(ok);
          if (ok) ctx.progress({ done: 1, total: 1, unit: 'bytes', replay: { lsn: '0/2000100', targetLsn: '0/2000000', promoted: true } });
          else ctx.log('left paused for inspection', 'warn');
        },
      },
    ],
  };
}

function renderRun(procedure: Procedure, onFinished: (s: RunSummary) => void) {
  return render(
    <AppThemeProvider color={false}>
      <KeysProvider>
        <RunScreen
          procedure={procedure}
          params={{ target: '2026-01-01T10:30:00Z', targetAction: 'pause' }}
          stateDir={stateDir}
          signal={new AbortController().signal}
          onFinished={onFinished}
          progressIntervalMs={0}
        />
      </KeysProvider>
    </AppThemeProvider>,
  );
}

describe('replay view', () => {
  for (const [answer, allowed] of [
    ['y', true],
    ['n', false],
  ] as const) {
    it(`shows the replay panel, then asks to promote; ${answer} gives allowed=${allowed}`, async () => {
      const hold = gate();
      const answers: boolean[] = [];
      let summary: RunSummary | undefined;
      const { lastFrame, stdin } = renderRun(replayProcedure(hold.promise, answers), (s) => (summary = s));

      let frame = await waitForFrame(lastFrame, '50%');
      expect(frame).toContain('WAL replay → 2026-01-01T10:30:00Z, then pause');
      expect(frame).toMatch(/█+░+\s+50%\s+8\.0 MiB of 16\.0 MiB WAL/);
      expect(frame).toContain('progress is the replayed LSN against 0/2000000'); // the step's about text
      expect(frame).toMatch(/Start PostgreSQL and replay WAL to the target\s+running/);

      hold.release();
      frame = await waitForFrame(lastFrame, 'Promote the server now');
      expect(frame).toContain('Paused at 0/2000028, last replayed commit 2026-01-01T10:29:58.000Z');
      expect(frame).toMatch(/Promote the recovered server\s+waiting/);
      expect(frame).toContain('y yes · n no');
      expect(answers).toEqual([]);

      stdin.write(answer);
      await waitFor(() => summary, () => `the run did not end; last frame:\n${stripAnsi(lastFrame() ?? '')}`);
      expect(answers).toEqual([allowed]);
      expect(summary!.status).toBe('ok');
      frame = await waitForFrame(lastFrame, /Promote the recovered server\s+ok/);
      expect(frame).not.toContain('Promote the server now');
    });
  }

  it('reads the replayed position, commit time and promotion from typed progress, never from logs', () => {
    const at = '2026-01-01T00:00:00Z';
    const progress = (stepId: string, replay?: Extract<RunEvent, { type: 'progress' }>['replay']): RunEvent => ({ type: 'progress', time: at, runId: 'r', stepId, done: 1, total: 2, unit: 'bytes', replay });
    let info = replayInfoReducer({}, [{ type: 'run-start', time: at, runId: 'r', procedure: 'pitr', title: 'PITR', params: { target: 'latest' }, steps: [], dryRun: false }]);
    expect(info).toEqual({ target: 'latest', targetAction: undefined });
    info = replayInfoReducer(info, [progress('replay', { lsn: '0/3000060', targetLsn: '0/3000000', commitTime: '2026-01-01T10:29:58.123Z', paused: true })]);
    expect(info).toMatchObject({ lsn: '0/3000060', commitTime: '2026-01-01T10:29:58.123Z', paused: true });
    info = replayInfoReducer(info, [progress('promote', { lsn: '0/4000000', targetLsn: '0/3000000', commitTime: '2026-01-01T10:31:00.000Z', promoted: true })]);
    expect(info).toMatchObject({ target: 'latest', lsn: '0/4000000', commitTime: '2026-01-01T10:31:00.000Z', promoted: true });
    expect(info.paused).toBeFalsy();
    // Progress without a replay, and log text that reads like one, change nothing.
    const log: RunEvent = { type: 'log', time: at, runId: 'r', stepId: 'replay', level: 'info', message: 'paused at the target: replayed to 0/9000000' };
    expect(replayInfoReducer({}, [progress('replay'), log])).toEqual({});
    expect(labelledProgressText({ stepId: 'replay', done: 8 * MiB, total: 16 * MiB, unit: 'bytes', ratePerSec: 2 * MiB, etaSec: 4 }, 'WAL')).toBe(
      '8.0 MiB of 16.0 MiB WAL · 2.0 MiB/s · about 4.0 s left',
    );
  });

  it('draws the panel from fed events: replaying, paused at the target, asked to promote, promoted', () => {
    const at = '2026-01-01T00:00:00Z';
    const base = { time: at, runId: 'r' };
    const steps = [
      { id: 'replay', title: 'Replay WAL to the target', kind: 'action' as const, destructive: false },
      { id: 'promote', title: 'Promote the recovered server', kind: 'action' as const, destructive: false },
    ];
    const replay = (stepId: string, done: number, r: Extract<RunEvent, { type: 'progress' }>['replay']): RunEvent => ({ ...base, type: 'progress', stepId, done, total: 16 * MiB, unit: 'bytes', replay: r });
    let state = initialRunState();
    const show = (...events: RunEvent[]) => {
      state = runReducer(state, { type: 'events', events });
      const { lastFrame, unmount } = render(
        <AppThemeProvider color={false}>
          <RunView state={state} now={Date.parse(at)} size={{ columns: 100, rows: 30 }} />
        </AppThemeProvider>,
      );
      const frame = stripAnsi(lastFrame() ?? '');
      unmount();
      return frame;
    };

    let frame = show(
      { ...base, type: 'run-start', procedure: 'pitr', title: 'PITR', params: { target: '2026-01-01T10:30:00Z', targetAction: 'promote' }, steps, dryRun: false },
      { ...base, type: 'step-start', stepId: 'replay', title: 'Replay WAL to the target', index: 0, kind: 'action' },
      // Log text that looks like a replay report is not read.
      { ...base, type: 'log', stepId: 'replay', level: 'info', message: 'paused at the target: replayed to 0/9999999' },
    );
    expect(frame).not.toContain('WAL replay');
    expect(frame).not.toContain('replayed to 0/9999999,');

    frame = show(replay('replay', 4 * MiB, { lsn: '0/1400000', targetLsn: '0/2000000' }));
    expect(frame).toContain('WAL replay → 2026-01-01T10:30:00Z, then promote');
    expect(frame).toMatch(/25%\s+4\.0 MiB of 16\.0 MiB WAL/);
    expect(frame).toContain('replayed to 0/1400000 of 0/2000000');

    frame = show(replay('replay', 16 * MiB, { lsn: '0/2000028', targetLsn: '0/2000000', commitTime: '2026-01-01T10:29:58.000123Z', paused: true }));
    expect(frame).toContain('paused at the target: replayed to 0/2000028, last replayed commit 2026-01-01T10:29:58.000123Z');

    frame = show(
      { ...base, type: 'step-end', stepId: 'replay', status: 'ok', durationMs: 5 },
      { ...base, type: 'step-start', stepId: 'promote', title: 'Promote the recovered server', index: 1, kind: 'action' },
      { ...base, type: 'confirm-request', stepId: 'promote', message: 'Promote the server now?' },
    );
    expect(frame).not.toContain('WAL replay →');
    expect(frame).toContain('Paused at 0/2000028, last replayed commit 2026-01-01T10:29:58.000123Z');

    frame = show({ ...base, type: 'confirm-answer', stepId: 'promote', allowed: true }, replay('promote', 16 * MiB, { lsn: '0/2000100', targetLsn: '0/2000000', promoted: true }));
    expect(frame).toContain('promoted: replayed to 0/2000100');
    expect(frame).not.toContain('Paused at');
  });
});
