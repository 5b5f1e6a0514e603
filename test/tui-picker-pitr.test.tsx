// The target picker on a real archive with two timelines (the second made by an earlier pitr):
// one sparkline row per timeline, a restore point, the server's unarchived last WAL and the
// "switch WAL now" key; then ← to the bad transaction, Enter, and a real pitr to "just before
// xid N" (exclusive) brings back the rows committed before it and none from it on.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanup, render } from 'ink-testing-library';
import { runCli, tempDir, serverWritableDir, serverOwnedRepoDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { waitForFrame } from './helpers/ink.js';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { walCommandLine } from '../src/procedures/pgrunbook-command.js';
import { walKey } from '../src/repo/walarchive.js';
import { loadRecoveryTimeline } from '../src/services/recovery-timeline.js';
import { KeysProvider } from '../src/screens/keys.js';
import { AppThemeProvider } from '../src/screens/theme.js';
import { TargetPicker } from '../src/screens/target-picker.js';
import type { PickAlso } from '../src/screens/target-picker-state.js';

const KEYS = { enter: '\r', left: '\x1B[D', right: '\x1B[C' };
/** A frame with line breaks and padding collapsed (wrapped lines read as one). */
const flat = (frame: string) => frame.replace(/\s+/g, ' ');

describe('target picker on two timelines, then pitr just before an xid', () => {
  let cluster: SandboxCluster;
  let repoDir: string;
  let repoUrl: string;
  let env: Record<string, string>;
  let conn: string[];

  const rows = async () => (await cluster.query<{ v: number }>('SELECT v FROM events ORDER BY v', [], 'app')).map((r) => r.v);
  const insert = async (v: number) => (await cluster.query<{ xid: string }>(`INSERT INTO events (v) VALUES (${v}) RETURNING xmin::text AS xid`, [], 'app'))[0].xid;
  const walFile = (name: string) => path.join(repoDir, walKey(name, 'zstd'));
  const switchAndArchive = async () => {
    const [{ name }] = await cluster.query<{ name: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS name`);
    await waitFor(`${name} archived`, () => fs.existsSync(walFile(name)), 60_000);
    return name;
  };
  const pitr = (target: string, extra: string[] = []) =>
    runCli(['--procedure', 'pitr', ...conn, '--pgdata', cluster.dataDir, '--repo', repoUrl, '--target', target, '--target-action', 'promote', '--confirm', path.basename(cluster.dataDir), '--json', ...extra], env);

  beforeAll(async () => {
    const work = await serverWritableDir('pgrunbook-pick-');
    repoDir = await serverOwnedRepoDir(work);
    repoUrl = `file://${repoDir}`;
    cluster = await createSandboxCluster({
      name: 'pick',
      settings: { archive_mode: 'on', archive_command: walCommandLine('wal-push', repoUrl, {}).command, wal_keep_size: '256MB', track_commit_timestamp: 'on' },
    });
    conn = ['--host', cluster.host, '--port', String(cluster.port), '--user', 'postgres'];
    env = { PGRUNBOOK_STATE_DIR: path.join(tempDir(), 'state') };
    await cluster.query('CREATE DATABASE app');
    await cluster.query('CREATE TABLE events (v int PRIMARY KEY)', [], 'app');
    const b = await runCli(['--procedure', 'backup-base', ...conn, '--repo', repoUrl, '--checkpoint', 'fast', '--json'], env);
    expect(b.exitCode, b.stdout.slice(-3000) + b.stderr).toBe(0);
    for (const v of [1, 2, 3]) await insert(v);
    await switchAndArchive();
    // An earlier pitr (to latest, promoted) makes timeline 2.
    const r = await pitr('latest');
    expect(r.exitCode, r.stdout.slice(-3000)).toBe(0);
  }, 300_000);

  afterAll(async () => {
    cleanup();
    await cluster?.remove();
  });

  it('draws a row per timeline, says the last WAL is not archived, switches it, steps to the bad commit; pitr then stops just before it', async () => {
    await insert(4);
    await cluster.query(`SELECT pg_create_restore_point('before-cleanup')`);
    const good = await insert(5);
    const bad = await insert(6); // the "incident": everything from here on must go
    await insert(7);
    expect(Number(bad)).toBeGreaterThan(Number(good));
    // Not switched: the last commits are only in the server's current WAL.

    const source = loadRecoveryTimeline(repoUrl, {}, { connection: { host: cluster.host, port: cluster.port, user: 'postgres', database: 'postgres' } });
    const picks: { target?: string; also?: PickAlso }[] = [];
    const { lastFrame, stdin } = render(
      <AppThemeProvider color={false}>
        <KeysProvider>
          <TargetPicker source={source} size={{ columns: 80, rows: 24 }} onDone={(target, also) => picks.push({ target, also })} />
        </KeysProvider>
      </AppThemeProvider>,
    );
    let frame = await waitForFrame(lastFrame, (f) => flat(f).includes('is not archived yet') && /just before xid \d+/.test(f), 60_000);
    for (const l of frame.split('\n')) expect(l.length).toBeLessThanOrEqual(80);
    expect(frame.split('\n').length).toBeLessThanOrEqual(24);
    expect(frame).toMatch(/^.tl 1\s+[▁▂▃▄▅▆▇█·]+\s*$/m);
    expect(flat(frame)).toContain("s switch WAL now: the server's current WAL");

    // s: switch WAL now; the archive then has the last commits, and the cursor is on the newest (xid of 7).
    stdin.write('s');
    frame = await waitForFrame(lastFrame, (f) => flat(f).includes('is archived') && /^›tl 2\s+\S/m.test(f) && /just before xid \d+/.test(f) && !f.includes('reading commits'), 90_000);
    // Each timeline on its own line: 1 (up to the first pitr, and its abandoned rest) and 2 (after it).
    expect(frame).toMatch(/^ tl 1\s+[▁▂▃▄▅▆▇█·]+\s*$/m);
    expect(frame).toMatch(/^›tl 2\s+[▁▂▃▄▅▆▇█·]+\s*$/m);
    expect(frame).toMatch(/^points\s+.*R/m);
    const xidOf = (f: string) => /just before xid (\d+) \(commit at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}Z\)/.exec(f)?.[1];
    const newest = xidOf(frame);
    expect(Number(newest)).toBeGreaterThan(Number(bad));

    // ← steps back by commit until the bad one; → then ← is back where it was (symmetric).
    for (let i = 0; i < 10 && xidOf(frame) !== bad; i++) {
      const before = xidOf(frame);
      stdin.write(KEYS.left);
      frame = await waitForFrame(lastFrame, (f) => xidOf(f) !== before);
    }
    expect(xidOf(frame)).toBe(bad);
    stdin.write(KEYS.right);
    frame = await waitForFrame(lastFrame, (f) => xidOf(f) !== bad);
    stdin.write(KEYS.left);
    frame = await waitForFrame(lastFrame, (f) => xidOf(f) === bad);
    expect(frame).toMatch(new RegExp(`xid:${bad}, exclusive`));
    stdin.write(KEYS.enter);
    await waitFor('the pick', () => picks.length > 0, 5000);
    expect(picks[0]).toEqual({ target: `xid:${bad}`, also: { exclusive: true, timeline: '' } });
    cleanup();

    // The pitr the form would run: --target xid:N --exclusive.
    const r = await pitr(picks[0].target!, ['--exclusive']);
    expect(r.exitCode, r.stdout.slice(-3000)).toBe(0);
    expect(await rows()).toEqual([1, 2, 3, 4, 5]);
  });
});
