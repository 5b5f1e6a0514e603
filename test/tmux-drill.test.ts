// A person's first run: `npm start` in a real 80x24 terminal (tmux), from the home screen
// through the whole drill to its final report, reading the screen at each stage.
import fs from 'node:fs';
import path from 'node:path';
import { execa, execaSync } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, serverWritableDir, tempDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { pgCtlStop } from '../src/postgres/pgctl.js';

const SOCKET = `pgrunbook-test-${process.pid}`;
const tmux = (...args: string[]) => execa('tmux', ['-L', SOCKET, ...args], { reject: false });
const screen = async () => String((await tmux('capture-pane', '-p', '-t', 'app')).stdout);
const keys = (...k: string[]) => tmux('send-keys', '-t', 'app', ...k);

async function screenShows(what: string, pattern: RegExp, timeoutMs = 60_000): Promise<string> {
  let last = '';
  try {
    return await waitFor(what, async () => {
      last = await screen();
      return pattern.test(last) ? last : undefined;
    }, timeoutMs, 200);
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

describe.skipIf(!hasTmux)('npm start in a terminal', () => {
  let tmp: string;
  let state: string;

  beforeAll(async () => {
    // The drill's sandbox goes under TMPDIR: ours, so nothing is left behind whatever happens.
    tmp = await serverWritableDir('pgrunbook-tmux-');
    state = path.join(tempDir(), 'state');
  });

  afterAll(async () => {
    await tmux('kill-server');
    for (const dir of fs.existsSync(tmp) ? fs.readdirSync(tmp) : []) {
      const data = path.join(tmp, dir, 'data');
      if (fs.existsSync(path.join(data, 'postmaster.pid'))) await pgCtlStop({ pgdata: data, mode: 'immediate' }).catch(() => undefined);
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('goes from the home screen through the drill to its final report', async () => {
    const env = [`TMPDIR=${tmp}`, `PGRUNBOOK_STATE_DIR=${state}`, 'TERM=xterm-256color'].join(' ');
    const started = await tmux('new-session', '-d', '-s', 'app', '-x', '80', '-y', '24', `cd ${ROOT} && env -u CI ${env} npm start --silent; echo EXIT=$?; sleep 600`);
    expect(started.exitCode, String(started.stderr)).toBe(0);

    const home = await screenShows('the home screen', /pgrunbook · guided PostgreSQL backup/, 120_000);
    expect(home).toMatch(/Drill/);
    expect(home).toMatch(/q quit/);

    // Nothing is configured: the drill is selected from the start.
    expect(home).toMatch(/› drill/);
    await keys('?');
    const help = await screenShows('the help overlay', /pgrunbook keys/);
    expect(help).toMatch(/Ctrl-C/);
    await keys('x');
    await screenShows('the home screen again', /› drill/);
    await keys('Enter');
    const form = await screenShows('the drill parameters', /incident/);
    expect(form).toMatch(/bad-delete/);
    expect(form).toMatch(/Run drill/);

    // Enter moves from field to field (incident, rows, keep, via); on the last one it runs.
    await keys('Enter');
    await screenShows('the rows field focused', /› rows/);
    await keys('Enter');
    await screenShows('the keep field focused', /› keep/);
    await keys('Enter');
    await screenShows('the via field focused', /› via/);
    await keys('Enter');
    const running = await screenShows('the drill running', /Create a sandbox cluster/, 60_000);
    expect(running).toMatch(/1\/10/);

    const prompt = await screenShows('the clean-up question', /Remove the drill sandbox/, 240_000);
    expect(prompt).toMatch(/Report RTO and RPO/);
    await keys('y');

    const report = await screenShows('the final report', /(DONE|done) in .*\(exit 0\)/i, 60_000);
    expect(report).toMatch(/RTO: [\d.]+ (ms|s)/);
    expect(report).toMatch(/RPO: data lost: [\d.]+ s of commits/);
    // The report scrolls (it no longer cuts what does not fit): the journal's path is at its end.
    await keys('End');
    await screenShows('the end of the report', /journal:/);
    await keys('q');
    await screenShows('the app to exit', /EXIT=0/, 30_000);
  });
});
