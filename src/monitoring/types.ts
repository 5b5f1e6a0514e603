// What `pgrunbook status` measures and decides: checks with a severity each, the measured
// values behind them (for JSON and Prometheus), and the overall verdict with its exit code.
import type { MonitoringThresholds } from '../config/profile.js';

/** Nagios' four states. */
export type Severity = 'ok' | 'warning' | 'critical' | 'unknown';

/** The Nagios plugin convention, so existing alerting can run `pgrunbook status` as a check. */
export const EXIT_CODE: Record<Severity, number> = { ok: 0, warning: 1, critical: 2, unknown: 3 };

/** Worse first when combining checks: critical > warning > unknown > ok (monitoring-plugins' max_state_alt). */
export const SEVERITY_RANK: Record<Severity, number> = { ok: 0, unknown: 1, warning: 2, critical: 3 };

export function worse(a: Severity, b: Severity): Severity {
  return SEVERITY_RANK[b] > SEVERITY_RANK[a] ? b : a;
}

/** What a check looks at; `--skip` takes these names. */
export type CheckKind = 'repository' | 'server' | 'base-backup' | 'dump' | 'wal';
/** The kinds an operator may skip: `server` skips only the checks that need a connection. */
export const SKIPPABLE: readonly CheckKind[] = ['base-backup', 'dump', 'wal', 'server'];

export interface StatusThresholds extends MonitoringThresholds {
  /** Optional: alert when the newest archived WAL segment is older (idle servers may archive rarely). */
  maxWalAgeHours?: number;
}

export interface StatusCheck {
  /** Stable identifier: repository, last_verify, server, base_backup_age, base_backup_size, dump_age, dump_size, wal_archived_age, recovery_window, wal_archive_lag, wal_archiver, wal_pusher. */
  id: string;
  kind: CheckKind;
  database?: string;
  /** Short label: "last base backup", "dump app", "WAL archive lag". */
  title: string;
  status: Severity;
  /** One line: what was measured, against what. */
  summary: string;
  /** What to do about it, when it is not ok. */
  hint?: string;
  value?: number;
  unit?: 'seconds' | 'ratio' | 'segments';
  /** Above this the check warns, above `criticalAt` it is critical (same unit as value). */
  warningAt?: number;
  criticalAt?: number;
}

export interface BackupMeasurement {
  kind: 'base_backup' | 'dump';
  database?: string;
  /** Newest complete backup. */
  id?: string;
  endedAt?: string;
  ageSeconds?: number;
  sizeBytes?: number;
  /** Median size of up to SIZE_HISTORY complete backups before the newest. */
  medianBytes?: number;
  comparedWith: number;
  /** (newest - median) / median: +1 is twice the median, -0.5 half of it. */
  deviationRatio?: number;
  complete: number;
  incomplete: number;
}

export interface ArchiverMeasurement {
  archiveMode: string;
  inRecovery: boolean;
  currentLsn?: string;
  /** pg_walfile_name(pg_current_wal_lsn()). */
  currentWalFile?: string;
  archivedCount: number;
  failedCount: number;
  lastArchivedWal?: string;
  lastArchivedTime?: string;
  lastFailedWal?: string;
  lastFailedTime?: string;
  statsReset?: string;
  /** The last failure is newer than the last success. */
  failing: boolean;
  /** Completed segments the archiver has not archived yet (per pg_stat_archiver). */
  archiverLagSegments?: number;
  /** Completed segments newer than the newest one in the repository. */
  repositoryLagSegments?: number;
}

export interface VerifyMeasurement {
  /** A verify record exists. */
  exists: boolean;
  /** The record exists but cannot be read. */
  error?: string;
  finishedAt?: string;
  ageSeconds?: number;
  ok?: boolean;
  objects?: number;
  bytes?: number;
  badObjects?: number;
  /** The first few bad objects, key and problem. */
  bad?: { key: string; problem: string; detail: string }[];
  since?: string;
  durationMs?: number;
}

export interface RestoreTestMeasurement {
  /** The newest record: when it finished and whether it passed. */
  lastAt?: string;
  lastOk?: boolean;
  lastFailure?: string;
  lastSuccessAt?: string;
  lastSuccessAgeSeconds?: number;
  durationSeconds?: number;
  rpoSeconds?: number;
  backupId?: string;
}

/** Asynchronous archiving's pusher, from its spool. */
export interface PusherMeasurement {
  spool: string;
  alive: boolean;
  pid?: number;
  /** .ready segments (the server's count, else the pusher's last). */
  readySegments?: number;
  /** Segments pushed ahead whose archive_command has not run yet. */
  pushedAhead: number;
  inFlight?: number;
  pushedTotal?: number;
  lastError?: string;
  lastErrorAt?: string;
}

export interface WalMeasurement {
  pusher?: PusherMeasurement;
  repositoryFiles: number;
  lastArchivedSegment?: string;
  lastArchivedAt?: string;
  ageSeconds?: number;
  gaps: number;
  server?: ArchiverMeasurement;
}

export interface StatusReport {
  status: Severity;
  exitCode: number;
  /** The check's notion of now (injectable with --now / PGRUNBOOK_NOW). */
  generatedAt: string;
  /** One line for alerting: "CRITICAL: WAL archiver failing; dump app 5 h old". */
  headline: string;
  repository: { url?: string; reachable: boolean; error?: string };
  /** Absent when no server check ran (--skip server or --skip wal). */
  server?: { endpoint: string; reachable: boolean; error?: string; version?: string };
  thresholds: StatusThresholds;
  skipped: CheckKind[];
  checks: StatusCheck[];
  measurements: { baseBackup?: BackupMeasurement; dumps: BackupMeasurement[]; wal?: WalMeasurement; verify?: VerifyMeasurement; restoreTest?: RestoreTestMeasurement };
}

/** Bad usage (unknown flag, bad URL, no repository): exit 3, nothing measured. */
export class StatusUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StatusUsageError';
  }
}
