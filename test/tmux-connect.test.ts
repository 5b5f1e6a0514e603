// A new on-call engineer's first hour, in a real 80x24 terminal (tmux), from fresh state and
// config directories: `npm start`, connect to a cluster from the app, test and save the
// profile, take a base backup, open the status dashboard, without leaving the app; the saved
// profile is then picked on Home.
import fs from 'node:fs';
import path from 'node:path';
import { execa, execaSync } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, tempDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { useTemporaryCluster } from './helpers/cluster.js';
import { openRepository } from '../src/repo/repository.js';

const SOCKET = `pgrunbook-connect-${process.pid}`;
const tmux = (...args: string[]) => execa('tmux', ['-L', SOCKET, ...args], { reject: false });
const screen = async () => String((await tmux('capture-pane', '-p', '-t', 'app')).stdout);
const keys = (...k: string[]) => tmux('send-keys', '-t', 'app', ...k);
const type = (text: string) => tmux('send-keys', '-t', 'app', '-l', text);

async function screenShows(what: string, pattern: RegExp, timeoutMs = 60_000): Promise<string> {
  let last = '';
  try {
    return await waitFor(
      what,
      async () => {
        last = await screen();
        return pattern.test(last) ? last : undefined;
      },
      timeoutMs,
      100,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- screen ---\n${last}`);
  }
}

const hasTmux = (() => {
  try {
    execaSync('tmux', ['-V']);
    return true;
  } catch {
    return false;
  }
})();

describe.skipIf(!hasTmux)('configuring the app from the app, at 80x24', () => {
  const cluster = useTemporaryCluster({ settings: { wal_level: 'replica', max_wal_senders: 4 } });
  const work = tempDir('pgrunbook-tmux-connect-');

  afterAll(async () => {
    await tmux('kill-server');
  });

  it('connects, saves the profile, backs up and opens the dashboard without leaving the app', async () => {
    const c = cluster();
    const repoDir = path.join(work, 'repo');
    const env = [
      `PGRUNBOOK_STATE_DIR=${path.join(work, 'state')}`,
      `PGRUNBOOK_CONFIG_DIR=${path.join(work, 'config')}`,
      `PGPASSFILE=${path.join(work, 'pgpass')}`,
      `HOME=${work}`,
      'TERM=xterm-256color',
    ].join(' ');
    const started = await tmux(
      'new-session', '-d', '-s', 'app', '-x', '80', '-y', '24',
      `cd ${ROOT} && env -u CI -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE -u PGRUNBOOK_REPO -u PGRUNBOOK_PROFILE ${env} npm start --silent; echo EXIT=$?; sleep 600`,
    );
    expect(started.exitCode, String(started.stderr)).toBe(0);

    let s = await screenShows('the home screen', /c connect/, 120_000);
    expect(s).toMatch(/no profile/);

    await keys('c');
    await screenShows('the connection screen', /Connect to a cluster/);
    // Every field starts selected: what is typed replaces it.
    const fields: [RegExp, string][] = [
      [/› profile name/, 'oncall'],
      [/› host/, c.host],
      [/› port/, String(c.port)],
      [/› user/, 'postgres'],
      [/› database/, 'postgres'],
      [/› password/, ''],
      [/› data directory/, c.dataDir],
      [/› repository/, `file://${repoDir}`],
    ];
    for (const [label, value] of fields) {
      await screenShows(`the ${label.source} field`, label);
      if (value) await type(value);
      await keys('Down');
    }
    s = await screenShows('server control focused', /› server control/);
    expect(s).toMatch(/\[pg_ctl\]/);
    await keys('C-t');
    s = await screenShows('the test result', /identity/, 30_000);
    expect(s).toMatch(/✓ server\s+PostgreSQL 15/);
    expect(s).toMatch(/✓ repository/);
    expect(s).not.toMatch(/✗/);
    await keys('C-s');
    s = await screenShows('Home with the profile', /profile oncall ·/, 30_000);
    expect(s).toMatch(/✓ saved profile oncall/);
    const profiles = JSON.parse(fs.readFileSync(path.join(work, 'config', 'profiles.json'), 'utf8'));
    expect(profiles.profiles.oncall).toMatchObject({ pgdata: c.dataDir, repo: `file://${repoDir}`, connection: { port: c.port } });

    // backup-base: second in the menu; a fast checkpoint.
    await keys('g');
    await keys('j');
    await screenShows('backup-base selected', /› backup-base/);
    await keys('Enter');
    await screenShows('its form', /parameters \(backup-base\)/);
    await keys('Right');
    await screenShows('fast checkpoint', /\[fast\]/);
    await keys('Down');
    await keys('Down');
    await screenShows('the run action', /› ▶ Run backup-base/);
    await keys('Enter');
    s = await screenShows('the report', /Enter back ·/, 180_000);
    expect(s).toMatch(/exit 0/);
    await keys('Enter');

    // The dashboard now has a base backup to judge.
    await screenShows('Home again', /s status/);
    await keys('s');
    s = await screenShows('the dashboard', /pgrunbook status · \w+/, 60_000);
    expect(s).toMatch(/base backup/);
    await keys('Escape');

    // Home shows the profile; the picker has it, in use.
    s = await screenShows('Home', /profile oncall · /);
    await keys('p');
    await screenShows('the profile picker', /› oncall\s+in use/);
    await keys('Escape');
    await screenShows('Home', /q quit/);
    await keys('q');
    // The footer fills the 80 columns: the shell's echo may start on its last cell.
    await screenShows('the app to exit', /E\n?XIT=0/, 30_000);

    const repo = await openRepository(`file://${repoDir}`, {});
    try {
      const catalog = await repo.catalog();
      expect(catalog.baseBackups.filter((b) => b.complete)).toHaveLength(1);
    } finally {
      await repo.close();
    }
    }, 300_000);
});
