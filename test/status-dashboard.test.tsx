// The status in the TUI through ink-testing-library: the dashboard screen rendering the checks,
// and Home's compact panel, loaded in the background from a real (file) repository while the
// menu is already usable; `s` opens the dashboard, a failure is one line.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cleanup, render } from 'ink-testing-library';
import { App } from '../src/app.js';
import type { Procedure } from '../src/engine/types.js';
import { KeysProvider } from '../src/screens/keys.js';
import { AppThemeProvider } from '../src/screens/theme.js';
import { StatusDashboard, feedReducer, type StatusFeed } from '../src/screens/status-dashboard.js';
import { evaluateStatus } from '../src/monitoring/evaluate.js';
import { resolveThresholds } from '../src/monitoring/status.js';
import { buildServices } from '../src/procedures/services.js';
import { openRepository } from '../src/repo/repository.js';
import type { Catalog } from '../src/repo/catalog.js';
import type { RestoreTestRecord } from '../src/repo/restore-tests.js';
import type { StatusReport } from '../src/monitoring/types.js';

const KEYS = { down: '\x1B[B', esc: '\x1B' };
// eslint-disable-next-line no-control-regex
const stripAnsi = (s: string) => s.replace(/\x1B\[[0-9;?]*[A-Za-z]/g, '');

async function waitForFrame(lastFrame: () => string | undefined, predicate: string | RegExp | ((f: string) => boolean), timeoutMs = 10_000): Promise<string> {
  const test = typeof predicate === 'string' ? (f: string) => f.includes(predicate) : predicate instanceof RegExp ? (f: string) => predicate.test(f) : predicate;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const frame = stripAnsi(lastFrame() ?? '');
    if (test(frame)) return frame;
    if (Date.now() > deadline) throw new Error(`no frame matched ${String(predicate)}; last frame:\n${frame}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const HOUR = 3600_000;
const now = new Date('2026-11-24T12:00:00Z');

/** A passed restore-test two days before `now`. */
const restoreTestRecord: RestoreTestRecord = {
  version: 1,
  runId: 'rt-1',
  host: 'restore-host',
  startedAt: '2026-11-22T11:58:00Z',
  finishedAt: '2026-11-22T12:00:00Z',
  ok: true,
  backup: { id: '20261124T020000Z' },
  rpoSeconds: 42,
  timings: { totalSeconds: 120 },
  checks: [],
};

/** A report as `pgrunbook status` would make it: a stale dump, a failing archiver, the rest fine. */
function sampleReport(extraDatabases = 0): StatusReport {
  const dump = (database: string, hoursAgo: number, size: number, id: string) => ({
    database,
    id,
    complete: true,
    objects: 2,
    bytes: size,
    meta: { id, database, stopTime: new Date(now.getTime() - hoursAgo * HOUR).toISOString(), size },
  });
  const dumps = [dump('app', 5, 1000, '20261124T070000Z'), dump('billing', 1, 1000, '20261124T110000Z')];
  for (let i = 0; i < extraDatabases; i++) dumps.push(dump(`db${i}`, 1, 1000, '20261124T110000Z'));
  const catalog: Catalog = {
    store: 'file:///backups/main',
    baseBackups: [
      {
        id: '20261124T020000Z',
        complete: true,
        objects: 2,
        bytes: 5000,
        meta: { id: '20261124T020000Z', startLsn: '0/2000028', stopLsn: '0/2000100', startTime: '2026-11-24T02:00:00Z', stopTime: '2026-11-24T02:10:00Z', timeline: 1, size: 5000 },
      },
    ],
    dumps,
    wal: {
      timelines: [{ timeline: 1, segments: 3, first: '000000010000000000000002', last: '000000010000000000000004', firstArchivedAt: '2026-11-24T02:00:00Z', lastArchivedAt: '2026-11-24T11:00:00Z', gaps: [] }],
      histories: [],
      files: 3,
      bytes: 3000,
    },
    gaps: [],
    windows: [{ backupId: '20261124T020000Z', timeline: 1, fromLsn: '0/2000100', fromTime: '2026-11-24T02:10:00Z', toLsn: '0/5000000', timelines: [1], runs: [{ timeline: 1, first: '000000010000000000000002', last: '000000010000000000000004' }] }],
    segmentSize: 16 * 1024 * 1024,
  };
  return evaluateStatus({
    repository: {
      url: 'file:///backups/main',
      catalog,
      restoreTests: {
        unreadable: [],
        newest: restoreTestRecord,
        newestSuccess: restoreTestRecord,
      },
    },
    server: {
      endpoint: 'db1:5432 (database "postgres", user "postgres")',
      facts: {
        version: '15.18',
        inRecovery: false,
        archiveMode: 'on',
        walSegmentSize: 16 * 1024 * 1024,
        timeline: 1,
        currentLsn: '0/9000060',
        currentWalFile: '000000010000000000000009',
        archiver: {
          archivedCount: 3,
          lastArchivedWal: '000000010000000000000004',
          lastArchivedTime: new Date('2026-11-24T11:00:00Z'),
          failedCount: 12,
          lastFailedWal: '000000010000000000000005',
          lastFailedTime: new Date('2026-11-24T11:59:00Z'),
          statsReset: null,
        },
      },
    },
    thresholds: resolveThresholds(undefined),
    now,
  });
}

function feedOf(report: StatusReport | undefined, extra: Partial<StatusFeed> = {}): StatusFeed & { refreshes: number } {
  const feed = { loading: false, report, refreshes: 0, refresh: () => feed.refreshes++, ...extra };
  return feed;
}

function renderDashboard(feed: StatusFeed) {
  const backs: number[] = [];
  const app = render(
    <AppThemeProvider color={false}>
      <KeysProvider>
        <StatusDashboard feed={feed} onBack={() => backs.push(1)} />
      </KeysProvider>
    </AppThemeProvider>,
  );
  return { ...app, backs };
}

afterEach(() => {
  cleanup();
});

describe('status dashboard screen', () => {
  it('renders every check with its status, the selected one in detail, and takes r and Esc', async () => {
    const report = sampleReport();
    expect(report.status).toBe('critical');
    const feed = feedOf(report);
    const { lastFrame, stdin, backs } = renderDashboard(feed);
    let frame = await waitForFrame(lastFrame, 'pgrunbook status');
    expect(frame).toContain('pgrunbook status · CRITICAL · exit 2 · checked 2026-11-24 12:00:00Z');
    expect(frame).toContain('repository file:///backups/main');
    expect(frame).toContain('server db1:5432');
    for (const c of report.checks) expect(frame).toMatch(new RegExp(`${c.status.toUpperCase()}\\s+${c.title.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    expect(frame).toMatch(/✗ CRITICAL\s+dump app\s+20261124T070000Z ended 5 h ago/);
    expect(frame).toMatch(/✓ OK\s+dump billing/);
    expect(frame).toMatch(/✗ CRITICAL\s+WAL archiver\s+failing: 12 failures, last 000000010000000000000005/);
    expect(frame).toMatch(/✓ OK\s+WAL archive lag\s+4 segments waiting/);
    expect(frame).toMatch(/✓ OK\s+last restore test\s+passed 2 d(ays)? ago on restore-host/);
    // The first check is selected; its summary is the detail line.
    expect(frame).toMatch(/› ✓ OK\s+repository/);
    expect(frame).toContain('repository: 1 base backup, 2 dumps, 3 WAL files');

    // Move to the stale dump: its hint shows.
    const index = report.checks.findIndex((c) => c.id === 'dump_age' && c.database === 'app');
    for (let i = 0; i < index; i++) stdin.write(KEYS.down);
    frame = await waitForFrame(lastFrame, /› ✗ CRITICAL\s+dump app/);
    expect(frame).toContain('→ the dump of app schedule is behind');

    stdin.write('r');
    await waitForFrame(lastFrame, () => feed.refreshes === 1);
    stdin.write(KEYS.esc);
    await waitForFrame(lastFrame, () => backs.length === 1);
  });

  it('fits 24 rows with many checks (scrolls), and shows loading and failure states', async () => {
    const many = renderDashboard(feedOf(sampleReport(20)));
    const frame = await waitForFrame(many.lastFrame, 'pgrunbook status');
    expect(frame.split('\n').length).toBeLessThanOrEqual(24);
    expect(frame).toContain('↑↓ move · r refresh · Esc back');
    cleanup();

    // An OK check with a long summary and a hint (the moved-aside directories): both shown, in 24 rows.
    const report = sampleReport();
    report.checks.splice(0, 4); // 12 checks, as a report without dumps has: room for a longer detail
    const long = `2: ${'/srv/pg/data.pgrunbook-staged-pitr-20261201T000000Z-abcdef (a backup unpacked for /srv/pg/data by run pitr-20261201T000000Z-abcdef, kept for --resume); '.repeat(2)}`;
    report.checks.push({ id: 'moved_aside', kind: 'server', title: 'moved-aside data directories', status: 'ok', summary: long, hint: 'when no longer needed: pgrunbook --procedure retention --data-dirs --pgdata /srv/pg/data (asks for each directory\'s name)' });
    const withHint = renderDashboard(feedOf(report));
    await waitForFrame(withHint.lastFrame, 'pgrunbook status');
    for (let i = 0; i < report.checks.length - 1; i++) withHint.stdin.write(KEYS.down);
    const detail = await waitForFrame(withHint.lastFrame, /› ✓ OK\s+moved-aside/);
    expect(detail.split('\n').length).toBeLessThanOrEqual(24);
    expect(detail.replace(/\s+/g, ' ')).toContain("→ when no longer needed: pgrunbook --procedure retention --data-dirs --pgdata /srv/pg/data (asks for each directory's name)");
    expect(detail.replace(/\s+/g, ' ')).toContain('kept for --resume');
    cleanup();

    const loading = renderDashboard(feedOf(undefined, { loading: true }));
    await waitForFrame(loading.lastFrame, 'Checking the repository and the server…');
    cleanup();

    const failed = renderDashboard(feedOf(undefined, { error: 'invalid repository URL: unknown scheme' }));
    await waitForFrame(failed.lastFrame, 'status unavailable: invalid repository URL: unknown scheme');
  });

  it('feedReducer ignores results of a superseded check and refreshes only when idle', () => {
    let s = feedReducer({ generation: 0, loading: true }, { type: 'refresh' });
    expect(s.generation).toBe(0); // a check is already running
    const report = sampleReport();
    s = feedReducer(s, { type: 'done', generation: 0, report });
    expect(s).toMatchObject({ loading: false, report });
    s = feedReducer(s, { type: 'refresh' });
    expect(s).toMatchObject({ generation: 1, loading: true, report });
    s = feedReducer(s, { type: 'failed', generation: 0, error: 'late' });
    expect(s.error).toBeUndefined();
    s = feedReducer(s, { type: 'failed', generation: 1, error: 'now' });
    expect(s).toMatchObject({ loading: false, error: 'now' });
  });
});

// ---------------------------------------------------------------------------------------
// Home with the panel, against a real file repository (the server is unreachable on purpose).

describe('status on Home', () => {
  let dir: string;
  let repoUrl: string;
  const procedures: Procedure[] = ['alpha', 'bravo'].map((id) => ({
    id,
    title: `Procedure ${id}`,
    summary: `the ${id} summary`,
    group: 'backup',
    params: [],
    steps: [{ id: 'only', title: 'Only', kind: 'action', run: async () => {} }],
  }));

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrunbook-status-tui-'));
    repoUrl = `file://${path.join(dir, 'repo')}`;
    fs.mkdirSync(path.join(dir, 'repo'));
    const repo = await openRepository(repoUrl);
    try {
      const id = '20261124T110000Z';
      const rec = await repo.putObject(repo.dumpKey('app', id, 'app.dump'), Buffer.alloc(4096, 1));
      await repo.commitDump({ id, database: 'app', startTime: '2026-11-24T10:59:00Z', stopTime: '2026-11-24T11:00:00Z', size: rec.size, sha256: rec.sha256 });
    } finally {
      await repo.close();
    }
  });
  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function renderHome(repo: string) {
    const env = { NO_COLOR: '1', PGRUNBOOK_NOW: '2026-11-24T12:00:00Z' } as NodeJS.ProcessEnv;
    const services = buildServices({ repo, host: path.join(dir, 'no-server-here'), port: '5432', user: 'postgres' }, env, {}, undefined);
    const exits: number[] = [];
    const app = render(<App procedures={procedures} stateDir={dir} env={env} services={services} onExit={(c) => exits.push(c)} />);
    return { ...app, exits };
  }

  it('shows the menu at once, then the status panel; s opens the dashboard and Esc comes back', async () => {
    const { lastFrame, stdin, frames, exits } = renderHome(repoUrl);
    // The first frame already has the menu: the status check runs in the background.
    const first = stripAnsi(frames[0]);
    expect(first).toContain('› alpha');
    expect(first).toContain('Status: checking the repository and the server… (s details)');

    let frame = await waitForFrame(lastFrame, 'Status: CRITICAL');
    expect(frame).toMatch(/Status: CRITICAL · \d+ critical(, \d+ unknown)? · s details/);
    // The worst problems on the second line: no base backup, server unreachable.
    expect(frame).toMatch(/✗ last base backup missing/);
    expect(frame).toMatch(/✗ server unreachable/);
    expect(frame).toContain('Enter choose · s status · c connect · p profile · r resume · ? help · q quit');
    expect(frame.split('\n').length).toBeLessThanOrEqual(24);
    // The menu still works with the panel there; ↓ and s typed at once: s sees the moved selection.
    stdin.write(KEYS.down);
    stdin.write('s');
    frame = await waitForFrame(lastFrame, 'pgrunbook status · CRITICAL');
    expect(frame).toMatch(/✓ OK\s+dump app\s+20261124T110000Z ended 1 h ago/);
    expect(frame).toMatch(/✗ CRITICAL\s+server\s+unreachable: could not connect/);
    expect(frame).toMatch(/\? UNKNOWN\s+WAL archiver/);
    expect(frame.split('\n').length).toBeLessThanOrEqual(24);

    stdin.write(KEYS.esc);
    frame = await waitForFrame(lastFrame, 'Enter choose');
    expect(frame).toMatch(/› bravo/); // the selection was kept
    stdin.write('q');
    await waitForFrame(lastFrame, () => exits.length === 1);
    expect(exits).toEqual([0]);
  });

  it('a failure is one line, and the menu works as before', async () => {
    const { lastFrame, stdin, exits } = renderHome('ftp://nowhere/x');
    const frame = await waitForFrame(lastFrame, 'status unavailable:');
    const line = frame.split('\n').find((l) => l.includes('status unavailable:'))!;
    expect(line).toMatch(/^status unavailable: invalid repository URL: unknown scheme 'ftp:'/);
    expect(frame).toContain('› alpha');
    stdin.write('q');
    await waitForFrame(lastFrame, () => exits.length === 1);
  });

  it('without a repository there is no panel and no s key', async () => {
    const env = { NO_COLOR: '1' } as NodeJS.ProcessEnv;
    const services = buildServices({ host: path.join(dir, 'no-server-here') }, env, {}, undefined);
    const { lastFrame } = render(<App procedures={procedures} stateDir={dir} env={env} services={services} />);
    const frame = await waitForFrame(lastFrame, 'Enter choose');
    expect(frame).not.toContain('Status');
    expect(frame).toContain('Enter choose · c connect · p profile · r resume · ? help · q quit');
    expect(frame).not.toContain('s status');
  });
});
