// restore-test on a real source cluster (data checksums on) whose WAL pgrunbook archives and
// whose base backup and dump pgrunbook made while pgbench wrote: it passes (with --dumps the
// newest dump also restores, its counts exact) and records RTO and RPO in the repository; status
// (JSON and Prometheus) reports it on this host and on another;
// nine days later status warns; a table dropped after the newest dump is reported missing
// (exit 3); with --dumps, counts that differ from dump.json fail that dump's check (exit 3).
// SIGINT and damaged backups: restore-test-faults.test.ts.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempDir } from './helpers/cli.js';
import { parseExposition, sample } from './helpers/prometheus.js';
import { checksOf, expectNothingLeft, restoreTestSource, type RestoreTestSource } from './helpers/restore-test-setup.js';

describe('restore-test', () => {
  let s: RestoreTestSource;

  beforeAll(async () => {
    s = await restoreTestSource('restore-test');
    await s.backup();
    await s.backupLogical();
    await s.cluster.query('INSERT INTO orders SELECT g, md5(g::text), 1 FROM generate_series(3001, 3500) g', [], 'app');
  }, 180_000);

  afterAll(async () => {
    await s?.noise.stop();
    await s?.cluster.remove();
  });

  const gauges = ['pgrunbook_restore_test_last_success_timestamp_seconds', 'pgrunbook_restore_test_ok', 'pgrunbook_restore_test_duration_seconds', 'pgrunbook_restore_test_rpo_seconds'];

  it('passes (with --dumps: the newest dump restored into the scratch cluster, its counts exact), records RTO and RPO in the repository; status reports it OK with its gauges, here and on another host', async () => {
    const before = Date.now();
    const r = await s.restoreTest(['--dumps']);
    expect(r.exitCode, r.stdout.slice(-4000) + r.stderr).toBe(0);
    const checks = checksOf(r.stdout);
    for (const name of ['recovery stopped where planned', 'database app answers', 'rows of app', 'pg_amcheck', 'pg_checksums --check', 'scratch cluster removed']) {
      expect(checks.find((c) => c.name === name)?.ok, `${name}: ${JSON.stringify(checks)}`).toBe(true);
    }
    const dumpCheck = checks.find((c) => /^dump app \S+ restores$/.test(c.name));
    expect(dumpCheck, JSON.stringify(checks)).toMatchObject({ ok: true });
    expect(dumpCheck?.detail).toMatch(/exactly the rows/);
    expectNothingLeft(s);

    const [rec] = s.records();
    expect(rec.checks.find((c: any) => c.name === dumpCheck?.name)).toMatchObject({ ok: true });
    expect(rec).toMatchObject({ ok: true, backup: { id: expect.any(String) }, wal: { segments: expect.any(Number) } });
    expect(rec.timings.totalSeconds).toBeGreaterThan(0);
    expect(rec.timings.unpackSeconds).toBeGreaterThanOrEqual(0);
    expect(rec.timings.replaySeconds).toBeGreaterThanOrEqual(0);
    expect(rec.timings.checksSeconds).toBeGreaterThan(0);
    expect(rec.rpoSeconds).toBeGreaterThanOrEqual(0);
    // pgbench kept writing until the test began: the last commit recovered is recent.
    expect(rec.rpoSeconds).toBeLessThan(120);
    expect(Date.parse(rec.recoveredTo)).toBeGreaterThan(before - 120_000);
    expect(rec.checks.length).toBeGreaterThanOrEqual(5);

    const { exitCode, report } = await s.statusJson();
    expect(exitCode, JSON.stringify(report.checks.filter((c: any) => c.status !== 'ok'))).toBe(0);
    expect(report.checks.find((c: any) => c.id === 'last_restore_test')).toMatchObject({ status: 'ok' });
    expect(report.measurements.restoreTest).toMatchObject({ lastOk: true, rpoSeconds: rec.rpoSeconds, durationSeconds: rec.timings.totalSeconds });

    const prom = await s.status(['--prometheus']);
    const e = parseExposition(`${prom.stdout}\n`);
    for (const g of gauges) expect(e.type.get(g), g).toBe('gauge');
    expect(sample(e, 'pgrunbook_restore_test_ok')).toBe(1);
    expect(sample(e, 'pgrunbook_restore_test_last_success_timestamp_seconds')).toBe(Date.parse(rec.finishedAt) / 1000);
    expect(sample(e, 'pgrunbook_restore_test_duration_seconds')).toBe(rec.timings.totalSeconds);
    expect(sample(e, 'pgrunbook_restore_test_rpo_seconds')).toBe(rec.rpoSeconds);
    expect(sample(e, 'pgrunbook_check_status', { check: 'last_restore_test' })).toBe(0);

    // Another host: its own state directory, the repository alone (no server).
    const other = await runCli(['status', '--repo', s.repoUrl, '--skip', 'server', '--json'], { PGRUNBOOK_STATE_DIR: tempDir('pgrunbook-other-host-') });
    const otherReport = JSON.parse(other.stdout);
    expect(otherReport.checks.find((c: any) => c.id === 'last_restore_test'), other.stdout).toMatchObject({ status: 'ok' });
    expect(otherReport.measurements.restoreTest).toMatchObject({ lastOk: true, lastSuccessAt: rec.finishedAt });
  }, 240_000);

  it('nine days without a restore test: status warns and the Prometheus output parses', async () => {
    const [rec] = s.records();
    const later = new Date(Date.parse(rec.finishedAt) + 9 * 86_400_000).toISOString();
    const limits = ['--max-dump-age-hours', '1000', '--max-base-backup-age-hours', '1000', '--max-wal-age-hours', '1000'];
    const { report } = await s.statusJson([...limits, '--skip', 'server', '--now', later]);
    expect(report.checks.find((c: any) => c.id === 'last_restore_test'), JSON.stringify(report.checks)).toMatchObject({ status: 'warning' });
    const prom = await s.status([...limits, '--skip', 'server', '--prometheus'], { PGRUNBOOK_NOW: later });
    const e = parseExposition(`${prom.stdout}\n`);
    expect(sample(e, 'pgrunbook_check_status', { check: 'last_restore_test' })).toBe(1);
    expect(sample(e, 'pgrunbook_restore_test_ok')).toBe(1);
    expect(sample(e, 'pgrunbook_threshold_restore_test_age_seconds')).toBe(8 * 86_400);
  }, 60_000);

  it('a table dropped after the newest dump: the counts check reports it missing, exit 3, the record says failed (the dump itself still restores it)', async () => {
    await s.cluster.query('DROP TABLE notes', [], 'app');
    const r = await s.restoreTest(['--dumps']);
    expect(r.exitCode, r.stdout.slice(-4000) + r.stderr).toBe(3);
    const rows = checksOf(r.stdout).find((c) => c.name === 'rows of app');
    expect(rows).toMatchObject({ ok: false });
    expect(rows?.detail).toMatch(/missing: public\.notes/);
    expect(r.stdout + r.stderr).toMatch(/public\.notes/);
    // The loss is production's, not the dump's: restored, the dump has notes with its 300 rows.
    expect(checksOf(r.stdout).find((c) => /^dump app \S+ restores$/.test(c.name)), r.stdout.slice(-3000)).toMatchObject({ ok: true });
    expectNothingLeft(s);
    const rec = s.records().at(-1)!;
    expect(rec.ok).toBe(false);
    expect(rec.failure).toMatch(/public\.notes/);
    const { exitCode, report } = await s.statusJson();
    expect(report.checks.find((c: any) => c.id === 'last_restore_test')).toMatchObject({ status: 'critical' });
    expect(exitCode).toBe(2);
  }, 240_000);

  it('--dumps: a dump whose restore does not give dump.json\'s counts fails its check naming the table, exit 3', async () => {
    // dump.json claims one row more in public.orders than the dump holds (its stored SHA-256 made to match).
    const dir = path.join(s.repoDir, 'dumps', 'app');
    const id = fs.readdirSync(dir).sort().at(-1)!;
    const metaFile = path.join(dir, id, 'dump.json');
    const meta = JSON.parse(fs.readFileSync(metaFile, 'utf8'));
    const claimed = meta.rowCounts['public.orders'] + 1;
    meta.rowCounts['public.orders'] = claimed;
    const text = JSON.stringify(meta);
    fs.writeFileSync(metaFile, text);
    const sidecar = path.join(dir, id, '.pgrunbook-meta-dump.json.json');
    const side = JSON.parse(fs.readFileSync(sidecar, 'utf8'));
    side.metadata.sha256 = crypto.createHash('sha256').update(text).digest('hex');
    fs.writeFileSync(sidecar, JSON.stringify(side));

    const r = await s.restoreTest(['--dumps']);
    expect(r.exitCode, r.stdout.slice(-4000) + r.stderr).toBe(3);
    const check = checksOf(r.stdout).find((c) => c.name === `dump app ${id} restores`);
    expect(check, r.stdout.slice(-4000)).toMatchObject({ ok: false });
    expect(check?.detail).toContain(`public.orders ${claimed - 1} (dump.json: ${claimed})`);
    expect(s.records().at(-1)!.failure).toContain(`dump app ${id} restores`);
    expectNothingLeft(s);
  }, 240_000);
});
