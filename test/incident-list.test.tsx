// The target picker's "find the incident" list (ink-testing-library): it renders the incidents
// a source hands it, newest first; ↓ and Enter choose one and the target is the text "just
// before it"; Esc goes back to the picker; w asks the source again over a longer window. The
// source is plain data here: the WAL scan behind it is tested in find-target.test.ts.
import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, render } from 'ink-testing-library';
import { key, poll, waitForFrame } from './helpers/ink.js';
import { AppThemeProvider } from '../src/screens/theme.js';
import { KeysProvider } from '../src/screens/keys.js';
import { IncidentList } from '../src/screens/incident-list.js';
import { TargetPicker } from '../src/screens/target-picker.js';
import { incidentListReducer, initialIncidentListState } from '../src/screens/incident-list-state.js';
import type { Incident, IncidentSource } from '../src/services/incident-source.js';
import type { RecoveryTimelineSource } from '../src/services/recovery-timeline.js';

const KEYS = { enter: '\r', down: '\x1B[B', up: '\x1B[A', esc: '\x1B' };

const INCIDENTS: Incident[] = [
  { kind: 'drop-table', database: 'app', relation: 'public.orders', xid: '912', lsn: '0/5A1B2C8', time: '2026-12-02T04:10:00.000001Z', rows: null, target: 'lsn:0/5A1B290' },
  { kind: 'truncate', database: 'app', relation: 'public.carts', xid: '901', lsn: '0/5900A10', time: '2026-12-02T04:05:00.000002Z', rows: null, target: 'lsn:0/59009D8' },
  { kind: 'delete', database: 'app', relation: 'public.users', xid: '877', lsn: '0/5803F00', time: '2026-12-02T04:00:00.000003Z', rows: 500, target: 'lsn:0/5803EC8' },
];

function source(incidents: Incident[] = INCIDENTS): IncidentSource & { windows: number[] } {
  const windows: number[] = [];
  return {
    describe: 'file:///backups/main',
    windows,
    async find({ since, until }) {
      windows.push(Math.round((until.getTime() - since.getTime()) / 3_600_000));
      return incidents;
    },
  };
}

function wrap(node: React.ReactNode) {
  return render(
    <AppThemeProvider color={false}>
      <KeysProvider>{node}</KeysProvider>
    </AppThemeProvider>,
  );
}

afterEach(() => {
  cleanup();
});

describe('find the incident', () => {
  it('lists the incidents with what, where and how many; ↓ Enter fills the target just before the chosen one', async () => {
    const done: (string | undefined)[] = [];
    const src = source();
    const { lastFrame, stdin } = wrap(<IncidentList source={src} onDone={(t) => done.push(t)} />);
    const frame = await waitForFrame(lastFrame, 'public.users');
    expect(frame).toContain('drop-table    public.orders in app');
    expect(frame).toContain('truncate      public.carts in app');
    expect(frame).toContain('delete        public.users in app · 500 rows');
    expect(frame).toContain('target lsn:0/5A1B290');
    expect(src.windows).toEqual([24]);
    stdin.write(KEYS.down);
    stdin.write(KEYS.down);
    await waitForFrame(lastFrame, 'target lsn:0/5803EC8');
    stdin.write(KEYS.enter);
    await poll(() => done.length > 0, () => 'onDone was not called');
    expect(done).toEqual(['lsn:0/5803EC8']);
  });

  it('no incident: says so; w looks a week back; a failing source shows its error; Esc goes back', async () => {
    const done: (string | undefined)[] = [];
    const src = source([]);
    const { lastFrame, stdin } = wrap(<IncidentList source={src} onDone={(t) => done.push(t)} />);
    await waitForFrame(lastFrame, 'No incident in the last 24 hours');
    stdin.write('w');
    await waitForFrame(lastFrame, 'No incident in the last 7 days');
    expect(src.windows).toEqual([24, 168]);
    stdin.write(KEYS.esc);
    await poll(() => done.length > 0, () => 'onDone was not called');
    expect(done).toEqual([undefined]);
    cleanup();

    const failing: IncidentSource = { describe: 'x', find: async () => Promise.reject(new Error('the repository cannot be read')) };
    const f = wrap(<IncidentList source={failing} onDone={() => {}} />);
    await waitForFrame(f.lastFrame, 'Could not read the incidents: the repository cannot be read');
  });

  it('in the target picker: f opens the list, Esc comes back, Enter on an incident is the picked target', async () => {
    // The catalog is still loading: the picker's keys are live all the same.
    const timeline: RecoveryTimelineSource = { describe: 'file:///backups/main', catalog: () => new Promise(() => {}) };
    const done: (string | undefined)[] = [];
    const { lastFrame, stdin } = wrap(<TargetPicker source={timeline} incidents={source()} onDone={(t) => done.push(t)} size={{ columns: 100, rows: 30 }} />);
    await waitForFrame(lastFrame, 'Recovery target');
    await waitForFrame(lastFrame, 'f find the incident');
    stdin.write('f');
    await waitForFrame(lastFrame, 'Find the incident');
    await waitForFrame(lastFrame, 'public.orders');
    stdin.write(KEYS.esc);
    await waitForFrame(lastFrame, 'Recovery target');
    expect(done).toEqual([]);
    stdin.write('f');
    await waitForFrame(lastFrame, 'public.orders');
    stdin.write(KEYS.down);
    await waitForFrame(lastFrame, 'target lsn:0/59009D8');
    stdin.write(KEYS.enter);
    await poll(() => done.length > 0, () => 'onDone was not called');
    expect(done).toEqual(['lsn:0/59009D8']);
  });

  it('the reducer: keys before the incidents arrive do nothing; the cursor stays inside the list', () => {
    let s = incidentListReducer(initialIncidentListState, { type: 'key', input: '', key: key({ return: true }) });
    expect(s.result).toBeUndefined();
    s = incidentListReducer(s, { type: 'loaded', incidents: INCIDENTS });
    for (let i = 0; i < 5; i++) s = incidentListReducer(s, { type: 'key', input: 'j', key: key() });
    expect(s.cursor).toBe(2);
    s = incidentListReducer(s, { type: 'key', input: '', key: key({ upArrow: true }) });
    s = incidentListReducer(s, { type: 'key', input: '', key: key({ return: true }) });
    expect(s.result).toBe('lsn:0/59009D8');
  });
});
