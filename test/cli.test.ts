// The real CLI as a subprocess, with the small demo procedures from test/fixtures.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEMO_PROCEDURES, jsonLines, runCli, startCli, tempDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';

function setup() {
  const dir = tempDir();
  const stateDir = path.join(dir, 'state');
  const work = path.join(dir, 'work');
  fs.mkdirSync(work);
  const env = { PGRUNBOOK_PROCEDURES_MODULE: DEMO_PROCEDURES, PGRUNBOOK_STATE_DIR: stateDir };
  return { dir, stateDir, work, env, marker: (name: string) => fs.existsSync(path.join(work, name)) };
}

describe('headless CLI', () => {
  it('a destructive step without --confirm stops with exit 4 and names the exact --confirm', async () => {
    const t = setup();
    const r = await runCli(['--procedure', 'demo', '--dir', t.work, '--yes', '--json'], t.env);
    expect(r.exitCode).toBe(4);
    const events = jsonLines(r.stdout);
    const last = events.at(-1)!;
    expect(last.type).toBe('run-end');
    expect(last.summary.status).toBe('refused');
    expect(last.summary.hint).toContain('--confirm sandbox-1');
    expect(t.marker('prepared')).toBe(true);
    expect(t.marker('wiped')).toBe(false);

    const wrong = await runCli(['--procedure', 'demo', '--dir', t.work, '--confirm', 'sandbox-2'], t.env);
    expect(wrong.exitCode).toBe(4);
    expect(wrong.stdout).toContain('does not match');
    expect(t.marker('wiped')).toBe(false);

    const ok = await runCli(['--procedure', 'demo', '--dir', t.work, '--confirm', 'sandbox-1'], t.env);
    expect(ok.exitCode).toBe(0);
    expect(t.marker('wiped')).toBe(true);
    expect(t.marker('verified')).toBe(true);
  });

  it('the journal and the output mask a password given in a connection string and a secret param', async () => {
    const t = setup();
    const r = await runCli(
      ['--procedure', 'demo', '--dir', t.work, '--confirm', 'sandbox-1', '--json', '--dsn', 'host=db user=app password=TopSecret99 dbname=app', '--password', 'Hunter2222'],
      t.env,
    );
    expect(r.exitCode).toBe(0);
    const runId = jsonLines(r.stdout)[0].runId as string;
    const journal = fs.readFileSync(path.join(t.stateDir, 'runs', `${runId}.jsonl`), 'utf8');
    for (const text of [journal, r.stdout, r.stderr]) {
      expect(text).not.toContain('TopSecret99');
      expect(text).not.toContain('Hunter2222');
    }
    expect(journal).toContain('password=***');
    const start = JSON.parse(journal.split('\n')[0]);
    expect(start).toMatchObject({ rec: 'run-start', procedure: 'demo', params: { password: '***' } });
    expect(start.who).toBeTruthy();
    expect(start.host).toBeTruthy();
  });

  it('--dry-run prints the plan and changes nothing', async () => {
    const t = setup();
    const r = await runCli(['--procedure', 'demo', '--dir', t.work, '--dry-run'], t.env);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(`would: write ${t.work}/prepared`);
    expect(r.stdout).toContain('--confirm sandbox-1');
    expect(fs.readdirSync(t.work)).toEqual([]);
    expect(fs.existsSync(t.stateDir)).toBe(false);
  });

  it('SIGINT stops the run with exit 130, and --resume continues at the unfinished step', async () => {
    const t = setup();
    fs.writeFileSync(path.join(t.work, 'hold'), '');
    const child = startCli(['--procedure', 'demo', '--dir', t.work, '--confirm', 'sandbox-1', '--json'], t.env);
    await waitFor('the slow step to start', () => t.marker('slow-started'));
    child.kill('SIGINT');
    const r = await child;
    expect(r.exitCode).toBe(130);
    const events = jsonLines(String(r.stdout));
    const runId = events[0].runId as string;
    const end = events.at(-1)!;
    expect(end.summary.status).toBe('interrupted');
    expect(end.summary.steps.map((s: { status: string }) => s.status)).toEqual(['ok', 'ok', 'interrupted', 'pending']);
    expect(end.summary.hint).toBe(`continue with: pgrunbook --resume ${runId}`);
    expect(t.marker('slow-aborted')).toBe(true);
    const preparedAt = fs.readFileSync(path.join(t.work, 'prepared'), 'utf8');

    fs.rmSync(path.join(t.work, 'hold'));
    const resumed = await runCli(['--resume', runId, '--json'], t.env);
    expect(resumed.exitCode).toBe(0);
    const resumedEvents = jsonLines(resumed.stdout);
    expect(resumedEvents[0]).toMatchObject({ type: 'run-start', runId, resumedAt: 'slow' });
    const final = resumedEvents.at(-1)!.summary;
    expect(final.steps.map((s: { status: string }) => s.status)).toEqual(['skipped', 'skipped', 'ok', 'ok']);
    // The state journaled by the first attempt reached the verification of the second.
    expect(final.checks.find((c: { name: string }) => c.name === 'prepared earlier').ok).toBe(true);
    expect(fs.readFileSync(path.join(t.work, 'prepared'), 'utf8')).toBe(preparedAt);
    expect(t.marker('slow-done')).toBe(true);

    const again = await runCli(['--resume', runId], t.env);
    expect(again.exitCode).toBe(2);
    expect(again.stderr).toContain('already finished successfully');
  });

  it('a failed step exits 1 and says how to resume; a failed verification exits 3', async () => {
    const t = setup();
    const failed = await runCli(['--procedure', 'demo', '--dir', t.work, '--fail', 'prepare'], t.env);
    expect(failed.exitCode).toBe(1);
    expect(failed.stdout).toContain('prepare failed on purpose');
    expect(failed.stdout).toMatch(/next: fix the cause, then continue with: pgrunbook --resume demo-/);
    const verify = await runCli(['--procedure', 'demo', '--dir', t.work, '--fail', 'verify', '--confirm', 'sandbox-1'], t.env);
    expect(verify.exitCode).toBe(3);
    expect(verify.stdout).toContain('VERIFICATION FAILED');
  });

  it('usage errors exit 2 naming the valid choices', async () => {
    const t = setup();
    const unknown = await runCli(['--procedure', 'nope'], t.env);
    expect(unknown.exitCode).toBe(2);
    expect(unknown.stderr).toMatch(/unknown procedure "nope"; valid procedures: verify, .*\bdemo\b/);

    const badParam = await runCli(['--procedure', 'demo', '--dir', t.work, '--fail', 'sometimes', '--colour', 'x'], t.env);
    expect(badParam.exitCode).toBe(2);
    expect(badParam.stderr).toContain('--fail: "sometimes" is not one of: none, prepare, verify');
    expect(badParam.stderr).toContain('unknown option --colour');

    const missing = await runCli(['--procedure', 'demo'], t.env);
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toContain('missing --dir');

    const noTty = await runCli([], t.env);
    expect(noTty.exitCode).toBe(2);
    expect(noTty.stderr).toContain('pgrunbook --procedure NAME');
    expect(noTty.stderr).toMatch(/procedures: verify, .*\bdemo\b/);

    const badResume = await runCli(['--resume', 'demo-20990101T000000Z-ffffff'], t.env);
    expect(badResume.exitCode).toBe(2);
    expect(badResume.stderr).toContain('no journal for run');

    const list = await runCli(['--list'], t.env);
    expect(list.exitCode).toBe(0);
    expect(list.stdout).toMatch(/^verify\s+verify\s+/m);
    const help = await runCli(['--procedure', 'verify', '--help'], t.env);
    expect(help.stdout).toContain('--critical-tables');
  });
});
