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

  it('a step failing on bad usage exits 2 and says to resume with the corrected option, which the resume takes', async () => {
    const t = setup();
    const failed = await runCli(['--procedure', 'demo', '--dir', t.work, '--fail', 'usage', '--confirm', 'sandbox-1'], t.env);
    expect(failed.exitCode).toBe(2);
    expect(failed.stdout).toContain('bad usage on purpose');
    const runId = /pgrunbook --resume (demo-\S+)/.exec(failed.stdout)?.[1];
    expect(failed.stdout).toMatch(/next: give what the error asks for, then continue with: pgrunbook --resume demo-\S+ <the missing or corrected options>/);
    expect(runId).toBeTruthy();
    expect(t.marker('prepared')).toBe(false);

    const again = await runCli(['--resume', runId!, '--fail', 'none', '--confirm', 'sandbox-1'], t.env);
    expect(again.exitCode).toBe(0);
    expect(t.marker('prepared')).toBe(true);
    expect(t.marker('verified')).toBe(true);
  });

  it('usage errors exit 2 naming the valid choices', async () => {
    const t = setup();
    const unknown = await runCli(['--procedure', 'nope'], t.env);
    expect(unknown.exitCode).toBe(2);
    expect(unknown.stderr).toMatch(/unknown procedure "nope"; valid procedures: verify, .*\bdemo\b/);

    const badParam = await runCli(['--procedure', 'demo', '--dir', t.work, '--fail', 'sometimes'], t.env);
    expect(badParam.exitCode).toBe(2);
    expect(badParam.stderr).toContain('--fail: "sometimes" is not one of: none, prepare, usage, verify');
    // Parsing is strict: an unknown option is refused before the parameters are read.
    const badOption = await runCli(['--procedure', 'demo', '--dir', t.work, '--fail', 'sometimes', '--colour', 'x'], t.env);
    expect(badOption.exitCode).toBe(2);
    expect(badOption.stderr).toContain('unknown option --colour for procedure demo');
    expect(badOption.stderr).toContain('hint: see the valid options: pgrunbook --procedure demo --help');

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

describe('resume from the journal alone', () => {
  it('the journal holds the connection, data directory and repository without secrets; --resume RUN_ID alone uses them and refuses others', async () => {
    const t = setup();
    fs.writeFileSync(path.join(t.work, 'hold'), '');
    const pgdata = path.join(t.dir, 'data');
    const child = startCli(
      [
        '--procedure', 'demo', '--dir', t.work, '--confirm', 'sandbox-1', '--json',
        '--dbname', 'postgresql://app:S3cretPw99@db.example:6543/appdb',
        '--pgdata', pgdata,
        '--repo', 's3://bkt/prefix?region=eu-west-1&accessKeyId=AKIDEXAMPLE7&secretAccessKey=AbcSecret999',
      ],
      t.env,
    );
    await waitFor('the slow step to start', () => t.marker('slow-started'));
    child.kill('SIGINT');
    const first = await child;
    expect(first.exitCode).toBe(130);
    const runId = jsonLines(String(first.stdout))[0].runId as string;
    const journal = fs.readFileSync(path.join(t.stateDir, 'runs', `${runId}.jsonl`), 'utf8');
    for (const secret of ['S3cretPw99', 'AbcSecret999', 'AKIDEXAMPLE7']) expect(journal).not.toContain(secret);
    const start = JSON.parse(journal.split('\n')[0]);
    expect(start.context).toMatchObject({
      connection: { host: 'db.example', port: 6543, user: 'app', dbname: 'appdb' },
      pgdata,
      repo: 's3://bkt/prefix?region=eu-west-1',
      repoCredentialsDropped: true,
      confirm: ['sandbox-1'],
    });

    // Another data directory, port (from the environment) or repository: refused, naming both.
    const otherData = await runCli(['--resume', runId, '--pgdata', path.join(t.dir, 'other')], t.env);
    expect(otherData.exitCode).toBe(2);
    expect(otherData.stderr).toContain(`--pgdata ${path.join(t.dir, 'other')} differs from the data directory run ${runId} used, ${pgdata}`);
    expect(otherData.stderr).toMatch(/drop the flag .*or start a new run/);
    const otherPort = await runCli(['--resume', runId], { ...t.env, PGPORT: '7000' });
    expect(otherPort.exitCode).toBe(2);
    expect(otherPort.stderr).toContain('PGPORT=7000 differs from the server port');
    expect(otherPort.stderr).toContain('6543');
    const otherHost = await runCli(['--resume', runId, '--host', 'db2.example'], t.env);
    expect(otherHost.exitCode).toBe(2);
    expect(otherHost.stderr).toContain('--host db2.example differs from the server host');
    expect(otherHost.stderr).toContain('db.example.');
    const otherRepo = await runCli(['--resume', runId, '--repo', 's3://bkt/elsewhere'], t.env);
    expect(otherRepo.exitCode).toBe(2);
    expect(otherRepo.stderr).toContain('--repo s3://bkt/elsewhere differs from the repository');
    expect(otherRepo.stderr).toContain('s3://bkt/prefix?region=eu-west-1');
    expect(t.marker('slow-done')).toBe(false);

    // The same values given again are fine; here: nothing but the run id.
    fs.rmSync(path.join(t.work, 'hold'));
    const resumed = await runCli(['--resume', runId, '--json'], t.env);
    expect(resumed.exitCode, resumed.stderr).toBe(0);
    const summary = jsonLines(resumed.stdout).at(-1)!.summary;
    expect(summary.steps.map((s: { status: string }) => s.status)).toEqual(['skipped', 'skipped', 'ok', 'ok']);
    const acting = summary.facts.find((f: { label: string }) => f.label === 'acting on').value as string;
    expect(acting).toBe(`host=db.example port=6543 user=app dbname=appdb pgdata=${pgdata} repo=s3://bkt/prefix?region=eu-west-1`);
    expect(resumed.stderr).toContain('carried credentials, which are never journaled');
  });
});

describe('every run ends with a summary', () => {
  const crash = async (how: string, json = true) => {
    const t = setup();
    const r = await runCli(['--procedure', 'crash', '--dir', t.work, '--how', how, ...(json ? ['--json'] : [])], t.env);
    const runs = fs.readdirSync(path.join(t.stateDir, 'runs'));
    expect(runs).toHaveLength(1);
    const records = fs
      .readFileSync(path.join(t.stateDir, 'runs', runs[0]), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
    return { ...r, t, records, last: records.at(-1) };
  };

  it('a step that throws a string: exit 1, the summary, run-end in the journal; the JSON run-end is the last line', async () => {
    const r = await crash('throw-string');
    expect(r.exitCode).toBe(1);
    const end = jsonLines(r.stdout).at(-1)!;
    expect(end.type).toBe('run-end');
    expect(end.summary).toMatchObject({ status: 'failed', exitCode: 1, error: 'step "Go wrong" failed: the disk said no' });
    expect(r.last).toMatchObject({ rec: 'run-end', summary: { status: 'failed', exitCode: 1 } });
    expect(r.t.marker('after')).toBe(false);

    const human = await crash('throw-string', false);
    expect(human.exitCode).toBe(1);
    expect(human.stdout).toContain('FAILED in');
    expect(human.stdout).toContain('the disk said no');
    expect(human.last.rec).toBe('run-end');
  });

  it('a step whose promise never settles (the event loop drains): exit 1, run-end with a message', async () => {
    const r = await crash('hang');
    expect(r.exitCode).toBe(1);
    const end = jsonLines(r.stdout).at(-1)!;
    expect(end.type).toBe('run-end');
    expect(end.summary.error).toBe('step "Go wrong" ended without finishing (internal error); nothing after it ran');
    expect(end.summary.steps.map((s: { status: string }) => s.status)).toEqual(['ok', 'failed', 'pending']);
    expect(r.last).toMatchObject({ rec: 'run-end', summary: { status: 'failed', exitCode: 1, error: end.summary.error } });
    expect(r.t.marker('after')).toBe(false);

    const human = await crash('hang', false);
    expect(human.exitCode).toBe(1);
    expect(human.stdout).toContain('ended without finishing (internal error)');
    expect(human.stdout).toMatch(/next: .*pgrunbook --resume crash-/);
  });

  it('a crash inside a step, an uncaught exception, an unhandled rejection and an exit from a step: exit 1, the cause, no stack trace, run-end', async () => {
    const cases: [string, string][] = [
      ['type-error', `step "Go wrong" failed: Cannot read properties of undefined (reading 'property')`],
      ['uncaught', 'internal error during step "Go wrong": callback blew up; nothing after it ran'],
      ['rejection', 'internal error during step "Go wrong": nobody awaited this; nothing after it ran'],
      ['exit', 'step "Go wrong" ended without finishing (internal error: the process was exiting with code 0); nothing after it ran'],
    ];
    for (const [how, error] of cases) {
      const r = await crash(how);
      expect(r.exitCode, how).toBe(1);
      const end = jsonLines(r.stdout).at(-1)!;
      expect(end.type, how).toBe('run-end');
      expect(end.summary.error, how).toBe(error);
      expect(r.last, how).toMatchObject({ rec: 'run-end', summary: { status: 'failed', error } });
      expect(r.stdout + r.stderr, how).not.toMatch(/\n\s+at /);
      expect(r.t.marker('after'), how).toBe(false);
    }
    // The step was asked to stop (and did) before the run ended.
    const uncaught = await crash('uncaught');
    expect(uncaught.t.marker('crash-aborted')).toBe(true);
  });

  it('SIGTERM, and a second SIGINT while a step ignores the first, still end with run-end and exit 130', async () => {
    const t = setup();
    const child = startCli(['--procedure', 'crash', '--dir', t.work, '--how', 'stubborn', '--json'], t.env);
    await waitFor('the stubborn step to start', () => t.marker('stubborn-started'));
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.kill('SIGINT');
    await waitFor('the first SIGINT to be taken', () => err.includes('SIGINT received'));
    child.kill('SIGINT');
    const r = await child;
    expect(r.exitCode).toBe(130);
    const end = jsonLines(String(r.stdout)).at(-1)!;
    expect(end.type).toBe('run-end');
    expect(end.summary.status).toBe('interrupted');
    expect(end.summary.error).toContain('interrupted by a second SIGINT');
    const runId = end.runId as string;
    const last = JSON.parse(fs.readFileSync(path.join(t.stateDir, 'runs', `${runId}.jsonl`), 'utf8').trim().split('\n').at(-1)!);
    expect(last).toMatchObject({ rec: 'run-end', summary: { status: 'interrupted', exitCode: 130 } });

    const t2 = setup();
    fs.writeFileSync(path.join(t2.work, 'hold'), '');
    const term = startCli(['--procedure', 'demo', '--dir', t2.work, '--confirm', 'sandbox-1', '--json'], t2.env);
    await waitFor('the slow step to start', () => t2.marker('slow-started'));
    term.kill('SIGTERM');
    const tr = await term;
    expect(tr.exitCode).toBe(130);
    expect(jsonLines(String(tr.stdout)).at(-1)!).toMatchObject({ type: 'run-end', summary: { status: 'interrupted', exitCode: 130 } });
  });
});
