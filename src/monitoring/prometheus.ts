// The status in Prometheus' text exposition format (version 0.0.4), for node_exporter's
// textfile collector, and the atomic file write the collector needs: it reads *.prom files at
// any moment, so a file must appear whole (temp file in the same directory, fsync, rename).
import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { EXIT_CODE, type StatusReport } from './types.js';

type Labels = Record<string, string | undefined>;

interface Family {
  name: string;
  help: string;
  type: 'gauge' | 'counter';
  samples: { labels: Labels; value: number }[];
}

export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function sampleLine(name: string, labels: Labels, value: number): string {
  const pairs = Object.entries(labels).filter((e): e is [string, string] => e[1] !== undefined);
  const l = pairs.length ? `{${pairs.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',')}}` : '';
  return `${name}${l} ${formatValue(value)}`;
}

export function prometheusText(r: StatusReport): string {
  const families: Family[] = [];
  const family = (name: string, type: Family['type'], help: string): Family => {
    const f: Family = { name, help, type, samples: [] };
    families.push(f);
    return f;
  };
  const put = (f: Family, value: number | undefined, labels: Labels = {}) => {
    if (value !== undefined && value !== null) f.samples.push({ labels, value });
  };

  put(family('pgrunbook_status', 'gauge', 'Overall backup status: 0 ok, 1 warning, 2 critical, 3 unknown (the exit code of pgrunbook status).'), EXIT_CODE[r.status]);
  const checkStatus = family('pgrunbook_check_status', 'gauge', 'Status of each check: 0 ok, 1 warning, 2 critical, 3 unknown.');
  for (const c of r.checks) put(checkStatus, EXIT_CODE[c.status], { check: c.id, database: c.database });
  put(family('pgrunbook_status_timestamp_seconds', 'gauge', 'When the status was determined (Unix time).'), Date.parse(r.generatedAt) / 1000);
  put(family('pgrunbook_repository_up', 'gauge', 'Whether the backup repository could be read (1) or not (0).'), r.repository.reachable ? 1 : 0);
  if (r.server) put(family('pgrunbook_server_up', 'gauge', 'Whether the PostgreSQL server answered (1) or not (0).'), r.server.reachable ? 1 : 0);

  const m = r.measurements;
  const base = m.baseBackup;
  put(family('pgrunbook_base_backups', 'gauge', 'Complete base backups in the repository.'), base?.complete);
  put(family('pgrunbook_last_base_backup_age_seconds', 'gauge', 'Age of the newest complete base backup (since it ended).'), base?.ageSeconds);
  put(family('pgrunbook_last_base_backup_size_bytes', 'gauge', 'Size of the newest complete base backup.'), base?.sizeBytes);

  const dumpCount = family('pgrunbook_dumps', 'gauge', 'Complete dumps in the repository, per database.');
  const dumpAge = family('pgrunbook_last_dump_age_seconds', 'gauge', "Age of each database's newest complete dump (since it ended).");
  const dumpSize = family('pgrunbook_last_dump_size_bytes', 'gauge', "Size of each database's newest complete dump.");
  for (const d of m.dumps) {
    put(dumpCount, d.complete, { database: d.database });
    put(dumpAge, d.ageSeconds, { database: d.database });
    put(dumpSize, d.sizeBytes, { database: d.database });
  }
  const deviation = family(
    'pgrunbook_backup_size_deviation_ratio',
    'gauge',
    'Size of the newest backup against the median of the ones before it: (newest - median) / median.',
  );
  put(deviation, base?.deviationRatio, { kind: 'base_backup' });
  for (const d of m.dumps) put(deviation, d.deviationRatio, { kind: 'dump', database: d.database });

  const wal = m.wal;
  put(family('pgrunbook_last_archived_wal_age_seconds', 'gauge', 'Age of the newest WAL segment in the repository.'), wal?.ageSeconds);
  put(family('pgrunbook_wal_archive_gaps', 'gauge', 'Gaps (runs of missing segments) in the WAL archive.'), wal?.gaps);
  const s = wal?.server;
  put(family('pgrunbook_wal_archive_lag_segments', 'gauge', "Completed WAL segments not yet archived (current position vs pg_stat_archiver's last archived)."), s?.archiverLagSegments);
  put(family('pgrunbook_wal_repository_lag_segments', 'gauge', 'Completed WAL segments newer than the newest one in the repository.'), s?.repositoryLagSegments);
  put(family('pgrunbook_wal_archived_total', 'counter', 'Segments archived since the statistics were reset (pg_stat_archiver.archived_count).'), s?.archivedCount);
  put(family('pgrunbook_wal_archive_failed_total', 'counter', 'Failed archive_command runs since the statistics were reset (pg_stat_archiver.failed_count).'), s?.failedCount);
  put(family('pgrunbook_wal_archive_failing', 'gauge', "1 when the archiver's last failure is newer than its last success."), s ? (s.failing ? 1 : 0) : undefined);

  const pu = wal?.pusher;
  put(family('pgrunbook_wal_pusher_up', 'gauge', 'Whether the pusher of asynchronous archiving runs (1) or not (0; archive_command then pushes itself and starts one).'), pu ? (pu.alive ? 1 : 0) : undefined);
  put(family('pgrunbook_wal_ready_segments', 'gauge', 'WAL segments PostgreSQL has marked ready to archive.'), pu?.readySegments);
  put(family('pgrunbook_wal_pushed_ahead_segments', 'gauge', 'Segments the pusher stored ahead whose archive_command has not run yet.'), pu?.pushedAhead);

  const v = m.verify;
  put(family('pgrunbook_last_verify_age_seconds', 'gauge', 'Age of the last catalog --verify (since it finished); absent when the repository was never verified.'), v?.ageSeconds);
  put(family('pgrunbook_last_verify_ok', 'gauge', 'Whether the last catalog --verify found the repository intact (1) or found bad objects (0).'), v?.ok === undefined ? undefined : v.ok ? 1 : 0);
  put(family('pgrunbook_last_verify_bad_objects', 'gauge', 'Bad objects (checksum mismatch, missing, unreadable, gap) the last catalog --verify found.'), v?.badObjects);
  put(family('pgrunbook_verified', 'gauge', 'Whether the repository has a readable verify record (1) or was never verified (0).'), v ? (v.exists && !v.error ? 1 : 0) : undefined);

  const rt = m.restoreTest;
  const rtSuccess = rt?.lastSuccessAt ? Date.parse(rt.lastSuccessAt) / 1000 : undefined;
  put(family('pgrunbook_restore_test_last_success_timestamp_seconds', 'gauge', 'When the newest passed restore-test finished (Unix time); absent when none passed.'), rtSuccess);
  put(family('pgrunbook_restore_test_ok', 'gauge', 'Whether the newest restore-test passed (1) or failed (0); absent when there is none.'), rt?.lastOk === undefined ? undefined : rt.lastOk ? 1 : 0);
  put(family('pgrunbook_restore_test_duration_seconds', 'gauge', 'How long the newest restore-test took, download to checks: the measured RTO.'), rt?.durationSeconds);
  put(family('pgrunbook_restore_test_rpo_seconds', 'gauge', "The newest restore-test's RPO: its start to the last commit it recovered."), rt?.rpoSeconds);

  const t = r.thresholds;
  put(family('pgrunbook_threshold_dump_age_seconds', 'gauge', 'Dump age above which status warns (critical at twice).'), t.maxDumpAgeHours * 3600);
  put(family('pgrunbook_threshold_base_backup_age_seconds', 'gauge', 'Base backup age above which status warns (critical at twice).'), t.maxBaseBackupAgeHours * 3600);
  put(family('pgrunbook_threshold_size_deviation_ratio', 'gauge', 'Size deviation beyond which status warns.'), t.sizeDeviationPercent / 100);
  put(family('pgrunbook_threshold_wal_archive_lag_segments', 'gauge', 'WAL archive lag above which status warns (critical at twice).'), t.maxArchiveLagSegments);
  put(family('pgrunbook_threshold_restore_test_age_seconds', 'gauge', 'Age of the newest passed restore-test above which status warns.'), t.maxRestoreTestAgeDays !== undefined ? t.maxRestoreTestAgeDays * 86_400 : undefined);
  put(family('pgrunbook_threshold_verify_age_seconds', 'gauge', 'Age of the last catalog --verify above which status warns.'), t.maxVerifyAgeDays !== undefined ? t.maxVerifyAgeDays * 86_400 : undefined);

  const out: string[] = [];
  for (const f of families) {
    if (!f.samples.length) continue;
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`);
    out.push(`# TYPE ${f.name} ${f.type}`);
    for (const sm of f.samples) out.push(sampleLine(f.name, sm.labels, sm.value));
  }
  return `${out.join('\n')}\n`;
}

/**
 * Write `content` to `file` so that a reader sees either the old file or the whole new one: a
 * temp file next to it (not ending in .prom, so the collector skips it), fsync, rename.
 */
export async function writeFileAtomic(file: string, content: string, mode = 0o644): Promise<void> {
  const dir = path.dirname(path.resolve(file));
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', mode);
  try {
    try {
      await fh.writeFile(content);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  // Make the rename itself durable; best effort (some filesystems refuse to fsync a directory).
  try {
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    /* not fatal */
  }
}
