// What a verify reports: its result (recorded as verify/last.json), problems, counts and progress.

export type VerifyProblemKind = 'checksum-mismatch' | 'missing' | 'unreadable' | 'gap' | 'corrupt';

export interface VerifyProblem {
  key: string;
  problem: VerifyProblemKind;
  detail: string;
}

export interface VerifyCounts {
  /** Objects in scope (listed), and their bytes. */
  objects: number;
  bytes: number;
  /** Objects read whole and found to match a recorded checksum. */
  verified: number;
  /** Objects read whole that have no recorded checksum to compare with. */
  unverified: number;
  walFiles: number;
  baseBackups: number;
  dumps: number;
  /** Files inside base backups checked against backup_manifest. */
  manifestFiles: number;
  incomplete: number;
  gaps: number;
  bad: number;
}

export interface VerifyResult {
  version: 1;
  store: string;
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  ok: boolean;
  /** `all`, or the objects written since `since`. */
  scope: { all: boolean; since?: string };
  parallel: number;
  counts: VerifyCounts;
  bad: VerifyProblem[];
  /** More bad objects than `bad` lists (only in the recorded copy, which is capped). */
  badTruncated?: number;
  incomplete: { kind: 'base-backup' | 'dump'; id: string; objects: number; bytes: number; lastWritten: string }[];
  /** Objects without a recorded checksum (the first 20). */
  unverifiedKeys: string[];
  warnings: string[];
}

export interface VerifyProgress {
  objectsDone: number;
  objectsTotal: number;
  bytesDone: number;
  bytesTotal: number;
}

export interface VerifyOptions {
  parallel?: number;
  /** Only objects written at or after this time (base backups and dumps: by their metadata file). */
  since?: Date;
  signal?: AbortSignal;
  onProgress?: (p: VerifyProgress) => void;
}

/** The repository could not be listed at all: nothing was verified. */
export class RepositoryUnreadableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RepositoryUnreadableError';
  }
}

