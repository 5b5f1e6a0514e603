// `pgrunbook status` for real: a sandbox cluster archiving into a file repository through
// `pgrunbook wal-push`, real `pg_dump -Fc` dumps and real `pg_basebackup` base backups written
// with the Repository API; the CLI as a subprocess. Each alert is reached: old backups (the
// check's "now" injected), a deviating size (a much larger dataset), archive lag and failures
// (archive_command switched to /bin/false while WAL segments are switched), unreachable parts.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, runCli, tempDir, serverWritableDir, serverOwnedRepoDir } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { findPgBinary } from '../src/postgres/binaries.js';
import { libpqEnv } from '../src/postgres/libpq.js';
import { openRepository, type Repository } from '../src/repo/repository.js';
import { openProfileStore } from '../src/config/store.js';
import { evaluateStatus, gradeDeviation } from '../src/monitoring/evaluate.js';
import { prometheusText, escapeLabelValue } from '../src/monitoring/prometheus.js';
import { resolveThresholds } from '../src/monitoring/status.js';
import { DEFAULT_THRESHOLDS } from '../src/config/profile.js';
import type { Catalog } from '../src/repo/catalog.js';
import type { StatusReport } from '../src/monitoring/types.js';
import { parseExposition, sample } from './helpers/prometheus.js';

// ---------------------------------------------------------------------------------------
// The cluster, the repository and real backups written into it.

const HOUR = 3600_000;

describe('pgrunbook status against a real cluster and repository', () => {
  let work: string;
  let repoDir: string;
  let repoUrl: string;
  let wrapper: string;
  let cluster: SandboxCluster;
  let repo: Repository;
  let connArgs: string[];
  let seq = 0;
  const times: { dump1Stop?: Date; base1Stop?: Date } = {};

  beforeAll(async () => {
    work = await serverWritableDir('pgrunbook-status-');
    repoDir = await serverOwnedRepoDir(work);
    repoUrl = `file://${repoDir}`;
    wrapper = path.join(work, 'archive.sh');
    fs.writeFileSync(wrapper, `#!/bin/sh\nexec '${process.execPath}' '${CLI}' wal-push --repo '${repoUrl}' "$1"\n`, { mode: 0o755 });
    cluster = await createSandboxCluster({ name: 'status', settings: { archive_mode: 'on', archive_command: `${wrapper} %p` } });
    repo = await openRepository(repoUrl);
    connArgs = ['--host', cluster.host, '--port', String(cluster.port), '--user', 'postgres', '--dbname', 'postgres'];
  });

  afterAll(async () => {
    await repo?.close();
    await cluster?.remove();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  const status = (args: string[], env: Record<string, string> = {}) => runCli(['status', '--repo', repoUrl, ...connArgs, ...args], env);
  const statusJson = async (args: string[], env: Record<string, string> = {}) => {
    const r = await status([...args, '--json'], env);
    return { ...r, report: JSON.parse(r.stdout) as StatusReport };
  };
  const check = (r: StatusReport, id: string, database?: string) => {
    const c = r.checks.find((x) => x.id === id && (database === undefined || x.database === database));
    if (!c) throw new Error(`no check ${id}${database ? ` for ${database}` : ''} in ${JSON.stringify(r.checks, null, 2)}`);
    return c;
  };

  function newId(): string {
    seq++;
    return `${new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}-${seq}`;
  }

  /** pg_dump -Fc streamed into the repository, committed with dump.json. */
  async function dumpInto(database: string): Promise<{ id: string; size: number; stop: Date }> {
    const id = newId();
    const start = new Date();
    const child = execa(await findPgBinary('pg_dump'), ['-Fc', '--no-sync'], {
      env: libpqEnv({ ...cluster.connection(database) }),
      extendEnv: false,
      buffer: { stdout: false },
      stdin: 'ignore',
    });
    const [rec] = await Promise.all([repo.putObject(repo.dumpKey(database, id, `${database}.dump`), child.stdout!), child]);
    const stop = new Date();
    await repo.commitDump({ id, database, startTime: start.toISOString(), stopTime: stop.toISOString(), size: rec.size, sha256: rec.sha256, object: `${database}.dump`, format: 'custom' });
    return { id, size: rec.size, stop };
  }

  /** pg_basebackup as a tar on stdout (WAL fetched into it) into the repository, with its real start/stop LSNs. */
  async function baseBackupInto(): Promise<{ id: string; size: number; stop: Date }> {
    const id = newId();
    const start = new Date();
    const child = execa(await findPgBinary('pg_basebackup'), ['-D', '-', '-Ft', '-X', 'fetch', '-c', 'fast', '-v', '--no-manifest'], {
      env: libpqEnv({ ...cluster.connection('postgres') }),
      extendEnv: false,
      buffer: { stdout: false },
      stdin: 'ignore',
    });
    const [rec, done] = await Promise.all([repo.putObject(repo.baseBackupKey(id, 'base.tar'), child.stdout!), child]);
    const stop = new Date();
    const stderr = String(done.stderr);
    const startLsn = /write-ahead log start point: (\S+) on timeline (\d+)/.exec(stderr);
    const stopLsn = /write-ahead log end point: (\S+)/.exec(stderr);
    if (!startLsn || !stopLsn) throw new Error(`pg_basebackup did not report its LSNs:\n${stderr}`);
    await repo.commitBaseBackup({
      id,
      startLsn: startLsn[1],
      stopLsn: stopLsn[1],
      startTime: start.toISOString(),
      stopTime: stop.toISOString(),
      timeline: Number(startLsn[2]),
      size: rec.size,
      includesWal: true,
    });
    return { id, size: rec.size, stop };
  }

  async function switchAndWaitArchived(): Promise<string> {
    await cluster.query(`CREATE TABLE IF NOT EXISTS churn (v text); INSERT INTO churn SELECT md5(g::text) FROM generate_series(1, 100) g`);
    const [{ name }] = await cluster.query<{ name: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS name`);
    await waitFor(
      `${name} archived`,
      async () => {
        const [s] = await cluster.query<{ last_archived_wal: string | null }>(`SELECT last_archived_wal FROM pg_stat_archiver`);
        return s.last_archived_wal !== null && s.last_archived_wal >= name;
      },
      60_000,
    );
    return name;
  }

  async function setArchiveCommand(command: string | undefined): Promise<void> {
    await cluster.query(command === undefined ? `ALTER SYSTEM RESET archive_command` : `ALTER SYSTEM SET archive_command = '${command}'`);
    await cluster.query(`SELECT pg_reload_conf()`);
    const expected = command ?? `${wrapper} %p`;
    await waitFor(`archive_command = ${expected}`, async () => (await cluster.query<{ a: string }>(`SELECT current_setting('archive_command') AS a`))[0].a === expected, 30_000);
  }

  it('a healthy repository and server: OK, exit 0, as text and as JSON', async () => {
    await cluster.query(`CREATE DATABASE app`);
    await cluster.query(`CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 1000) g`, [], 'app');
    const base = await baseBackupInto();
    const dump = await dumpInto('app');
    times.base1Stop = base.stop;
    times.dump1Stop = dump.stop;
    await switchAndWaitArchived();

    const text = await status([]);
    expect(text.exitCode, text.stdout + text.stderr).toBe(0);
    expect(text.stdout.split('\n')[0]).toMatch(/^OK: \d+ checks passed$/);
    expect(text.stdout).toMatch(/✓ OK\s+dump app\s+\S+ ended \d+ s ago \(warning over 2 h, critical over 4 h\)/);

    const { exitCode, report } = await statusJson([]);
    expect(exitCode).toBe(0);
    expect(report.status).toBe('ok');
    expect(report.checks.map((c) => c.id)).toEqual(
      expect.arrayContaining(['repository', 'base_backup_age', 'base_backup_size', 'dump_age', 'dump_size', 'wal_archived_age', 'recovery_window', 'server', 'wal_archiver', 'wal_archive_lag']),
    );
    expect(check(report, 'dump_age', 'app').status).toBe('ok');
    // Base backups younger than --max-restore-test-age-days and no restore test yet: a note, not an alert.
    expect(check(report, 'last_restore_test')).toMatchObject({ status: 'ok', summary: expect.stringMatching(/^none yet/) });
    expect(check(report, 'wal_archive_lag').value).toBe(0);
    expect(report.measurements.wal?.server?.failing).toBe(false);
    expect(report.measurements.baseBackup).toMatchObject({ id: base.id, sizeBytes: base.size, complete: 1 });
    expect(report.measurements.dumps).toEqual([expect.objectContaining({ database: 'app', id: dump.id, sizeBytes: dump.size })]);
  });

  it('old backups: the injected now makes dumps and base backups warn at the threshold and go critical at twice it', async () => {
    const at = (d: Date, hours: number) => new Date(d.getTime() + hours * HOUR).toISOString();
    // Dumps: over 2 h warns, over 4 h is critical.
    let r = await statusJson(['--now', at(times.dump1Stop!, 3)]);
    expect(r.exitCode, r.stderr).toBe(1);
    expect(r.report.status).toBe('warning');
    expect(check(r.report, 'dump_age', 'app')).toMatchObject({ status: 'warning', value: expect.any(Number), warningAt: 7200, criticalAt: 14400 });
    expect(check(r.report, 'base_backup_age').status).toBe('ok');
    expect(r.report.generatedAt).toBe(at(times.dump1Stop!, 3));

    const text = await status(['--now', at(times.dump1Stop!, 5)]);
    expect(text.exitCode).toBe(2);
    expect(text.stdout.split('\n')[0]).toMatch(/^CRITICAL: dump app 5 h old/);
    expect(text.stdout).toContain('the dump of app schedule is behind');

    // The environment variable does the same as --now.
    expect((await status([], { PGRUNBOOK_NOW: at(times.dump1Stop!, 5) })).exitCode).toBe(2);

    // Base backups: over 26 h warns, over 52 h is critical (dump alerts muted by a flag).
    r = await statusJson(['--now', at(times.base1Stop!, 27), '--max-dump-age-hours', '1000']);
    expect(r.exitCode).toBe(1);
    expect(check(r.report, 'base_backup_age').status).toBe('warning');
    r = await statusJson(['--now', at(times.base1Stop!, 53), '--max-dump-age-hours', '1000']);
    expect(r.exitCode).toBe(2);
    expect(check(r.report, 'base_backup_age').status).toBe('critical');

    // Thresholds from a profile's "monitoring"; a flag still overrides the profile.
    const configDir = tempDir('pgrunbook-status-profile-');
    try {
      const store = await openProfileStore({ PGRUNBOOK_CONFIG_DIR: configDir });
      store.set('mon', { repo: repoUrl, connection: { host: cluster.host, port: cluster.port, user: 'postgres', database: 'postgres' }, monitoring: { maxDumpAgeHours: 10 } });
      const env = { PGRUNBOOK_CONFIG_DIR: configDir };
      const viaProfile = await runCli(['status', '--profile', 'mon', '--now', at(times.dump1Stop!, 5), '--json'], env);
      expect(viaProfile.exitCode, viaProfile.stderr).toBe(0);
      expect(check(JSON.parse(viaProfile.stdout), 'dump_age', 'app').warningAt).toBe(36000);
      const flagWins = await runCli(['status', '--profile', 'mon', '--now', at(times.dump1Stop!, 5), '--max-dump-age-hours', '2'], env);
      expect(flagWins.exitCode).toBe(2);
    } finally {
      fs.rmSync(configDir, { recursive: true, force: true });
    }
  });

  it('a much larger dataset: the newest dump and base backup deviate from the median, critical', async () => {
    const small = (await repo.catalog()).dumps.find((d) => d.complete)!.meta!.size!;
    const smallBase = (await repo.catalog()).baseBackups.find((b) => b.complete)!.meta!.size!;
    await cluster.query(`INSERT INTO items SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1001, 1000000) g`, [], 'app');
    const big = await dumpInto('app');
    const bigBase = await baseBackupInto();
    await switchAndWaitArchived();

    const { exitCode, report } = await statusJson([]);
    expect(exitCode, JSON.stringify(report.checks, null, 2)).toBe(2);
    const dumpSize = check(report, 'dump_size', 'app');
    expect(dumpSize.status).toBe('critical');
    expect(dumpSize.value).toBeCloseTo((big.size - small) / small, 6);
    const baseSize = check(report, 'base_backup_size');
    expect(baseSize.status).toBe('critical');
    expect(baseSize.value).toBeCloseTo((bigBase.size - smallBase) / smallBase, 6);
    expect(bigBase.size / smallBase).toBeGreaterThan(2);
    // Only the sizes are wrong: ages, WAL and the archiver are fine.
    expect(report.checks.filter((c) => c.status !== 'ok').map((c) => c.id).sort()).toEqual(['base_backup_size', 'dump_size']);
    expect(report.headline).toMatch(/^CRITICAL: .*dump size app \+\d+%/);

    // The deviation threshold is a flag: a huge one silences it.
    expect((await status(['--size-deviation-percent', '1000000000'])).exitCode).toBe(0);
  });

  it('archive_command failing while WAL is switched: lag grows, failures counted, critical; Prometheus output parses', async () => {
    await setArchiveCommand('/bin/false');
    const [before] = await cluster.query<{ failed: string }>(`SELECT failed_count::text AS failed FROM pg_stat_archiver`);
    const switched: string[] = [];
    for (let i = 0; i < 6; i++) {
      await cluster.query(`INSERT INTO churn SELECT md5(g::text) FROM generate_series(1, 100) g`);
      switched.push((await cluster.query<{ name: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS name`))[0].name);
    }
    await waitFor(
      'the archiver to fail',
      async () => {
        const [s] = await cluster.query<{ failing: boolean; failed: string }>(
          `SELECT last_failed_time IS NOT NULL AND last_failed_time > last_archived_time AS failing, failed_count::text AS failed FROM pg_stat_archiver`,
        );
        return s.failing && Number(s.failed) > Number(before.failed);
      },
      60_000,
    );
    // What waits for archiving, independently of pg_stat_archiver: the .ready files.
    const ready = fs.readdirSync(path.join(cluster.dataDir, 'pg_wal', 'archive_status')).filter((f) => /^[0-9A-F]{24}\.ready$/.test(f));
    expect(ready.length).toBeGreaterThanOrEqual(switched.length);

    const promFile = path.join(work, 'textfile', 'pgrunbook.prom');
    fs.mkdirSync(path.dirname(promFile));
    const r = await status(['--prometheus', '--output', promFile, '--max-archive-lag-segments', '2', '--size-deviation-percent', '1000000000']);
    expect(r.exitCode, r.stderr).toBe(2);
    expect(r.stdout).toBe(''); // all of it went to the file
    expect(fs.readdirSync(path.dirname(promFile))).toEqual(['pgrunbook.prom']); // no temp file left behind

    const e = parseExposition(fs.readFileSync(promFile, 'utf8'));
    for (const s of e.samples) expect(e.help.has(s.name), `HELP for ${s.name}`).toBe(true);
    expect(sample(e, 'pgrunbook_status')).toBe(2);
    expect(e.type.get('pgrunbook_status')).toBe('gauge');
    expect(sample(e, 'pgrunbook_wal_archive_lag_segments')).toBe(ready.length);
    expect(sample(e, 'pgrunbook_wal_repository_lag_segments')).toBe(ready.length);
    expect(sample(e, 'pgrunbook_wal_archive_failing')).toBe(1);
    expect(e.type.get('pgrunbook_wal_archive_failed_total')).toBe('counter');
    expect(sample(e, 'pgrunbook_wal_archive_failed_total')).toBeGreaterThan(Number(before.failed));
    expect(sample(e, 'pgrunbook_check_status', { check: 'wal_archiver' })).toBe(2);
    expect(sample(e, 'pgrunbook_check_status', { check: 'wal_archive_lag' })).toBe(2);
    expect(sample(e, 'pgrunbook_check_status', { check: 'dump_age', database: 'app' })).toBe(0);
    expect(sample(e, 'pgrunbook_repository_up')).toBe(1);
    expect(sample(e, 'pgrunbook_server_up')).toBe(1);
    expect(sample(e, 'pgrunbook_last_dump_age_seconds', { database: 'app' })).toBeGreaterThanOrEqual(0);
    expect(sample(e, 'pgrunbook_last_base_backup_age_seconds')).toBeGreaterThanOrEqual(0);
    expect(sample(e, 'pgrunbook_backup_size_deviation_ratio', { kind: 'dump', database: 'app' })).toBeGreaterThan(1);
    expect(sample(e, 'pgrunbook_backup_size_deviation_ratio', { kind: 'base_backup' })).toBeGreaterThan(1);
    expect(sample(e, 'pgrunbook_threshold_wal_archive_lag_segments')).toBe(2);
    expect(sample(e, 'pgrunbook_status_timestamp_seconds')).toBeGreaterThan(1.7e9);

    const text = await status(['--max-archive-lag-segments', '2', '--size-deviation-percent', '1000000000']);
    expect(text.exitCode).toBe(2);
    expect(text.stdout).toMatch(/✗ CRITICAL\s+WAL archiver\s+failing: \d+ failures?, last [0-9A-F]{24}/);
    expect(text.stdout).toMatch(new RegExp(`✗ CRITICAL\\s+WAL archive lag\\s+${ready.length} segments waiting`));
    // With the default threshold (100) the lag is fine, but a failing archiver is still critical.
    const { report } = await statusJson(['--size-deviation-percent', '1000000000']);
    expect(check(report, 'wal_archive_lag').status).toBe('ok');
    expect(check(report, 'wal_archiver').status).toBe('critical');
    expect(report.status).toBe('critical');
  });

  it('archive_command repaired: the archiver catches up and its old failures are reported as recovered', async () => {
    await setArchiveCommand(undefined);
    await waitFor(
      'the archiver to catch up',
      async () => {
        const [s] = await cluster.query<{ ok: boolean }>(`SELECT last_archived_time > last_failed_time AS ok FROM pg_stat_archiver`);
        const ready = fs.readdirSync(path.join(cluster.dataDir, 'pg_wal', 'archive_status')).filter((f) => f.endsWith('.ready'));
        return s.ok && ready.length === 0;
      },
      90_000,
    );
    const { exitCode, report } = await statusJson(['--size-deviation-percent', '1000000000']);
    expect(exitCode, JSON.stringify(report.checks, null, 2)).toBe(0);
    expect(check(report, 'wal_archiver').summary).toMatch(/earlier failures?, recovered/);
    expect(check(report, 'wal_archive_lag').value).toBe(0);
  });

  it('server unreachable: the repository checks still run and the server ones say why (exit 2); both unreachable: UNKNOWN, exit 3', async () => {
    const noServer = ['--host', path.join(work, 'no-socket-here'), '--port', '5432'];
    const r = await runCli(['status', '--repo', repoUrl, ...noServer, '--size-deviation-percent', '1000000000', '--json']);
    expect(r.exitCode).toBe(2);
    const report = JSON.parse(r.stdout) as StatusReport;
    expect(report.server).toMatchObject({ reachable: false });
    expect(check(report, 'server')).toMatchObject({ status: 'critical', summary: expect.stringMatching(/unreachable: could not connect/) });
    expect(check(report, 'wal_archive_lag').status).toBe('unknown');
    expect(check(report, 'wal_archiver').status).toBe('unknown');
    expect(check(report, 'dump_age', 'app').status).toBe('ok');
    expect(check(report, 'base_backup_age').status).toBe('ok');

    // --skip server: repository only, no connection attempted.
    const repoOnly = await runCli(['status', '--repo', repoUrl, ...noServer, '--size-deviation-percent', '1000000000', '--skip', 'server']);
    expect(repoOnly.exitCode, repoOnly.stdout).toBe(0);
    expect(repoOnly.stdout).toContain('skipped: server');
    expect(repoOnly.stdout).not.toMatch(/^server |WAL archiver|WAL archive lag/m);

    const both = await runCli(['status', '--repo', `file://${path.join(work, 'not-mounted')}`, ...noServer]);
    expect(both.exitCode, both.stdout + both.stderr).toBe(3);
    expect(both.stdout.split('\n')[0]).toMatch(/^UNKNOWN: cannot reach the repository \(directory .*not-mounted does not exist.*\) nor the server/);
    const bothProm = await runCli(['status', '--repo', `file://${path.join(work, 'not-mounted')}`, ...noServer, '--prometheus']);
    expect(bothProm.exitCode).toBe(3);
    const e = parseExposition(`${bothProm.stdout}\n`); // execa strips the final newline
    expect(sample(e, 'pgrunbook_status')).toBe(3);
    expect(sample(e, 'pgrunbook_repository_up')).toBe(0);
    expect(sample(e, 'pgrunbook_server_up')).toBe(0);
  });
});

describe('pgrunbook status: bad usage is UNKNOWN (exit 3) with a message', () => {
  it.each([
    [['--repo', 'file:///tmp/x', '--bogus'], /unknown option --bogus/],
    [['--repo', 'file:///tmp/x', '--now', 'yesterday-ish'], /--now \/ PGRUNBOOK_NOW: "yesterday-ish" is not a date/],
    [['--repo', 'file:///tmp/x', '--max-dump-age-hours', 'two'], /--max-dump-age-hours must be a positive number/],
    [['--repo', 'file:///tmp/x', '--skip', 'everything'], /--skip: "everything" is not a kind of check; valid: base-backup, dump, wal, server/],
    [['--repo', 'file:///tmp/x', '--json', '--prometheus'], /exclude each other/],
    [['--repo', 'ftp://host/x'], /invalid repository URL: unknown scheme/],
    [[], /no backup repository to check: pass --repo URL/],
    [['--profile', 'nope', '--repo', 'file:///tmp/x'], /no profile named "nope"/],
  ])('%j', async (args, message) => {
    const configDir = tempDir('pgrunbook-status-usage-');
    try {
      const r = await runCli(['status', ...args], { PGRUNBOOK_CONFIG_DIR: configDir });
      expect(r.exitCode).toBe(3);
      expect(r.stderr).toMatch(message);
      if (!args.includes('--json')) expect(r.stdout).toMatch(/^UNKNOWN: /);
    } finally {
      fs.rmSync(configDir, { recursive: true, force: true });
    }
  });

  it('--json usage errors are JSON too; --help documents the exit codes', async () => {
    const r = await runCli(['status', '--json', '--max-lag', '3']);
    expect(r.exitCode).toBe(3);
    expect(JSON.parse(r.stdout)).toMatchObject({ status: 'unknown', exitCode: 3, error: expect.stringContaining('--max-lag') });
    const help = await runCli(['status', '--help']);
    expect(help.exitCode).toBe(0);
    expect(help.stdout).toContain('3 UNKNOWN: the status cannot be determined');
  });
});

// ---------------------------------------------------------------------------------------
// The judgement on its own: levels at their edges (no I/O, any clock).

function catalogWith(parts: Partial<Catalog>): Catalog {
  return { store: 'file:///r', baseBackups: [], dumps: [], wal: { timelines: [], histories: [], files: 0, bytes: 0 }, gaps: [], windows: [], segmentSize: 16 * 1024 * 1024, ...parts };
}

function dumpEntry(database: string, id: string, stopTime: string, size: number) {
  return { database, id, complete: true, objects: 2, bytes: size + 300, meta: { id, database, stopTime, size } };
}

describe('evaluateStatus levels', () => {
  const now = new Date('2026-11-24T12:00:00Z');
  const t = resolveThresholds(undefined);

  it('uses the seed defaults and lets a profile override them', () => {
    expect(t).toEqual(DEFAULT_THRESHOLDS);
    expect(resolveThresholds({ monitoring: { maxDumpAgeHours: 6 } }, { sizeDeviationPercent: 20 })).toMatchObject({ maxDumpAgeHours: 6, sizeDeviationPercent: 20, maxBaseBackupAgeHours: 26 });
  });

  it('ages: ok at the threshold, warning over it, critical over twice it', () => {
    const at = (hoursAgo: number) => {
      const r = evaluateStatus({
        repository: { url: 'file:///r', catalog: catalogWith({ dumps: [dumpEntry('app', 'a', new Date(now.getTime() - hoursAgo * HOUR).toISOString(), 100)] }) },
        thresholds: t,
        now,
        skip: ['base-backup', 'wal'],
      });
      return r.checks.find((c) => c.id === 'dump_age')!.status;
    };
    expect([at(1), at(2), at(2.01), at(4), at(4.01)]).toEqual(['ok', 'ok', 'warning', 'warning', 'critical']);
  });

  it('sizes: warning beyond ±50%, critical over +100% or under -90%; the median of up to 10 earlier ones', () => {
    expect([gradeDeviation(0.5, 50), gradeDeviation(0.51, 50), gradeDeviation(1, 50), gradeDeviation(1.01, 50)]).toEqual(['ok', 'warning', 'warning', 'critical']);
    expect([gradeDeviation(-0.5, 50), gradeDeviation(-0.51, 50), gradeDeviation(-0.9, 50), gradeDeviation(-0.91, 50)]).toEqual(['ok', 'warning', 'warning', 'critical']);
    expect([gradeDeviation(-0.41, 20), gradeDeviation(0.41, 20)]).toEqual(['critical', 'critical']);
    // 12 dumps: the newest (1500) against the median of the 10 before it (1000, one outlier 9000), not all 11.
    const dumps = Array.from({ length: 12 }, (_, i) => dumpEntry('app', `d${String(i).padStart(2, '0')}`, new Date(now.getTime() - (12 - i) * 60_000).toISOString(), i === 0 ? 1 : i === 11 ? 1500 : i === 5 ? 9000 : 1000));
    const r = evaluateStatus({ repository: { url: 'file:///r', catalog: catalogWith({ dumps }) }, thresholds: t, now, skip: ['base-backup', 'wal'] });
    const size = r.checks.find((c) => c.id === 'dump_size')!;
    expect(size.value).toBeCloseTo(0.5, 10);
    expect(r.measurements.dumps[0]).toMatchObject({ comparedWith: 10, medianBytes: 1000, sizeBytes: 1500 });
  });

  it('no backup at all is critical; expected databases without dumps are named', () => {
    const r = evaluateStatus({ repository: { url: 'file:///r', catalog: catalogWith({ dumps: [dumpEntry('app', 'a', now.toISOString(), 1)] }) }, thresholds: t, now, databases: ['app', 'billing'], skip: ['wal'] });
    expect(r.checks.find((c) => c.id === 'base_backup_age')!.status).toBe('critical');
    expect(r.checks.find((c) => c.id === 'dump_age' && c.database === 'billing')).toMatchObject({ status: 'critical', summary: 'no complete dump of billing in the repository' });
    expect(r.exitCode).toBe(2);
  });

  it('Prometheus label values are escaped', () => {
    expect(escapeLabelValue('a"b\\c\nd')).toBe('a\\"b\\\\c\\nd');
    const r = evaluateStatus({ repository: { url: 'file:///r', catalog: catalogWith({ dumps: [dumpEntry('we"ird\\db', 'a', now.toISOString(), 1)] }) }, thresholds: t, now, skip: ['base-backup', 'wal'] });
    const e = parseExposition(prometheusText(r));
    expect(sample(e, 'pgrunbook_last_dump_age_seconds', { database: 'we"ird\\db' })).toBe(0);
  });
});

describe('pgrunbook status on an S3 repository', () => {
  it('reports a fresh dump OK and the same dump five hours later critical', async () => {
    const { startS3rver } = await import('./helpers/storage-servers.js');
    const { sharedCluster } = await import('./helpers/cluster.js');
    const server = await startS3rver({ prefix: 'status' });
    try {
      const cluster = sharedCluster();
      const db = await cluster.createDatabase('status_s3');
      await cluster.query('CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g', [], db);
      const env = { ...server.env, PGRUNBOOK_STATE_DIR: path.join(tempDir(), 'state') };
      const conn = ['--host', cluster.host, '--port', String(cluster.port), '--user', cluster.user];
      const dumped = await runCli(['--procedure', 'backup-logical', ...conn, '--databases', db, '--repo', server.url, '--json'], env);
      expect(dumped.exitCode, dumped.stdout.slice(-2000)).toBe(0);
      const args = ['status', '--repo', server.url, '--skip', 'base-backup,wal,server', '--databases', db, '--json'];
      const fresh = await runCli(args, env);
      expect(fresh.exitCode, fresh.stdout + fresh.stderr).toBe(0);
      const later = await runCli(args, { ...env, PGRUNBOOK_NOW: new Date(Date.now() + 5 * HOUR).toISOString() });
      expect(later.exitCode, later.stdout).toBe(2);
      expect(later.stdout).toContain(db);
    } finally {
      await server.stop();
    }
  });
});

describe('evaluateStatus: the last catalog --verify', () => {
  const now = new Date('2026-11-24T12:00:00Z');
  const t = resolveThresholds(undefined);
  const record = (finishedAt: string, bad: { key: string; problem: string; detail: string }[] = []) =>
    ({
      version: 1,
      store: 'file:///r',
      startedAt: finishedAt,
      finishedAt,
      durationMs: 1000,
      ok: bad.length === 0,
      scope: { all: true },
      parallel: 4,
      counts: { objects: 10, bytes: 1000, verified: 10, unverified: 0, walFiles: 8, baseBackups: 1, dumps: 1, manifestFiles: 900, incomplete: 0, gaps: 0, bad: bad.length },
      bad,
      incomplete: [],
      unverifiedKeys: [],
      warnings: [],
    }) as const;
  const judge = (repository: Partial<Parameters<typeof evaluateStatus>[0]['repository']>, thresholds = t) =>
    evaluateStatus({ repository: { url: 'file:///r', catalog: catalogWith({}), ...repository }, thresholds, now, skip: ['base-backup', 'dump', 'wal'] });
  const verifyCheck = (r: StatusReport) => r.checks.find((c) => c.id === 'last_verify')!;

  it('never verified: a note, not an alert (a fresh repository stays OK)', () => {
    const r = judge({});
    expect(verifyCheck(r)).toMatchObject({ status: 'ok', summary: expect.stringMatching(/^never verified \(note\): run pgrunbook catalog --verify/) });
    expect(r.status).toBe('ok');
    expect(r.measurements.verify).toEqual({ exists: false });
    const e = parseExposition(prometheusText(r));
    expect(sample(e, 'pgrunbook_verified')).toBe(0);
    expect(sample(e, 'pgrunbook_last_verify_ok')).toBeUndefined();
  });

  it('intact: ok up to --max-verify-age-days (8 by default), warning past it', () => {
    const at = (days: number) => new Date(now.getTime() - days * 86_400_000).toISOString();
    expect(verifyCheck(judge({ lastVerify: record(at(8)) as any })).status).toBe('ok');
    const stale = judge({ lastVerify: record(at(8.01)) as any });
    expect(verifyCheck(stale)).toMatchObject({ status: 'warning', value: Math.round(8.01 * 86_400), warningAt: 8 * 86_400 });
    expect(stale.exitCode).toBe(1);
    expect(verifyCheck(judge({ lastVerify: record(at(8.01)) as any }, resolveThresholds({ monitoring: { maxVerifyAgeDays: 14 } }))).status).toBe('ok');
  });

  it('corruption found: critical, naming the objects, in the headline and Prometheus; an unreadable record warns', () => {
    const bad = [
      { key: 'wal/000000010000000000000007.gz', problem: 'checksum-mismatch', detail: 'x' },
      { key: 'dumps/app/d1/app.dump', problem: 'missing', detail: 'y' },
    ];
    const r = judge({ lastVerify: record(now.toISOString(), bad) as any });
    expect(verifyCheck(r)).toMatchObject({ status: 'critical', summary: expect.stringContaining('found 2 bad objects: wal/000000010000000000000007.gz (checksum-mismatch), dumps/app/d1/app.dump (missing)') });
    expect(r.exitCode).toBe(2);
    expect(r.headline).toBe('CRITICAL: last verify found 2 bad objects: wal/000000010000000000000007.gz (checksum-mismatch), dumps/app/d1/app.dump (missing)');
    const e = parseExposition(prometheusText(r));
    expect(sample(e, 'pgrunbook_last_verify_ok')).toBe(0);
    expect(sample(e, 'pgrunbook_last_verify_bad_objects')).toBe(2);
    expect(sample(e, 'pgrunbook_last_verify_age_seconds')).toBe(0);

    const unreadable = judge({ lastVerifyError: 'object verify/last.json is corrupt' });
    expect(verifyCheck(unreadable)).toMatchObject({ status: 'warning', summary: 'verify/last.json cannot be read: object verify/last.json is corrupt' });
  });
});
