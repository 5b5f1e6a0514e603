// What the wal-archiving procedure takes, what its steps share (journaled, so JSON), and the
// context its steps and helpers receive.
import type { StepContext } from '../../engine/types.js';
import type { ArchiverStats } from '../../postgres/archiver.js';
import type { Typed } from '../define.js';

export type WalArchivingParams = {
  archiveCommand?: string;
  archiveTimeout?: string;
  serverEnvFile?: string;
  asyncArchive?: boolean;
  spoolDir?: string;
  timeout?: number;
  serverLog?: string;
};

/** Settings this procedure manages; archive_library only exists from PostgreSQL 15. */
export type SettingName = 'wal_level' | 'archive_mode' | 'archive_command' | 'archive_timeout' | 'archive_library';

export type LiveSetting = {
  setting: string;
  /** The configured value (pg_settings.reset_val): archive_command shows "(disabled)" while archive_mode is off. */
  configured: string;
  pendingRestart: boolean;
  /** The value the configuration files give it (pg_file_settings, superusers only): what the next restart brings. */
  fileValue?: string;
};

export type Inspection = {
  endpoint: string;
  version: string;
  versionNum: number;
  superuser: boolean;
  inRecovery: boolean;
  clusterName: string;
  port: number;
  /** The server's data_directory, when this user may read it. */
  serverDataDirectory?: string;
  /** pg_current_logfile(), when logging_collector is on and this user may call it. */
  currentLogfile?: string;
  postmasterStart: string;
  live: Partial<Record<SettingName, LiveSetting>>;
  archiver: ArchiverStats;
  missingPrivileges: string[];
};

export type Change = {
  name: SettingName;
  /** As shown to the operator. */
  from: string;
  /** As shown; archive_command's real value is recomputed from the parameters when applied (the journal masks secrets). */
  to: string;
  /** Takes effect only after a restart. */
  restart: boolean;
  why: string;
};

export type Proposal = {
  changes: Change[];
  restartNeeded: boolean;
};

export type ServerUser = {
  name: string;
  uid: number;
  gid: number;
  groupName: string;
  groups: number[];
};

export type RepoPrep = {
  kind: 'file' | 's3' | 'azure';
  root?: string;
  /** Directories to create (outermost first), owned by the server's OS user. */
  create?: string[];
  serverUser?: ServerUser;
  /** The server's env file must be (re)written: missing, or its contents, mode or owner differ. */
  writeEnvFile?: boolean;
};

/** The env file archive_command names (journaled: the path and variable names only, never values). */
export type EnvFilePlan = {
  path: string;
  names: string[];
};

export type WalArchivingState = {
  inspection?: Inspection;
  /** Fingerprint of the server, repository and data directory inspected (see targetFingerprint). */
  target?: string;
  envFile?: EnvFilePlan;
  /** The spool of asynchronous archiving that archive_command names (undefined: synchronous). */
  spool?: string;
  proposal?: Proposal;
  repoPrep?: RepoPrep;
};

export type WalArchivingTypes = Typed<WalArchivingParams, WalArchivingState>;
export type WalCtx = StepContext<WalArchivingTypes>;

/** A line the inspect and repository steps log. */
export type Finding = {
  text: string;
  level?: 'info' | 'warn' | 'error';
};
