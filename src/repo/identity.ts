// The repository's format record: which cluster the repository belongs to. Written once, by the
// first writer, at the root (pgrunbook.json), with a conditional create; never overwritten.
// Every writer (wal-push, backup-base, backup-logical) checks its cluster against it: a repository
// holds one cluster's backups and WAL. Repositories made before the record existed are adopted
// by their first writer (no migration).
//
// wal-push loads this for every segment: no SDK imports, one small read per push.
import { createIfAbsent } from './lock.js';
import type { ObjectStore } from '../storage/types.js';
import { readObjectIfExists } from './objects.js';

import { IDENTITY_KEY } from './layout.js';
import { RepoKeyError, encryptionOf, type EncryptionRecord } from './encryption.js';

export { IDENTITY_KEY };
export const FORMAT_VERSION = 1;

export interface RepositoryIdentity {
  formatVersion: number;
  systemIdentifier: string;
  pgMajor?: number;
  walSegmentSize?: number;
  createdAt: string;
  compression?: string;
  /** Present when the repository is encrypted (encryption.ts): salt, scrypt parameters, key check value. */
  encryption?: EncryptionRecord;
}

export class IdentityMismatchError extends Error {
  readonly hint: string;
  constructor(
    readonly repositorySystemIdentifier: string,
    readonly clusterSystemIdentifier: string,
    store: string,
    what = 'this server',
  ) {
    const hint =
      `use another --repo for this cluster (each cluster needs its own repository), or check that the connection points at the cluster this repository belongs to`;
    super(
      `the repository ${store} belongs to the cluster with system identifier ${repositorySystemIdentifier}; ` +
        `${what} is system identifier ${clusterSystemIdentifier}. Refusing to mix two clusters in one repository; nothing was stored. ` +
        `What to do: ${hint}`,
    );
    this.name = 'IdentityMismatchError';
    this.hint = hint;
  }
}

/** The record is there but cannot be understood: never guess which cluster it names. */
export class IdentityRecordError extends Error {
  readonly hint = `inspect ${IDENTITY_KEY} at the repository's root; it must be JSON with formatVersion and systemIdentifier`;
  constructor(store: string, why: string) {
    super(`the repository's format record ${IDENTITY_KEY} in ${store} is unreadable: ${why}. Nothing was stored`);
    this.name = 'IdentityRecordError';
  }
}

/** The record, or undefined for an encrypted repository no cluster has written to yet (encryption.ts). */
function parse(raw: Buffer, store: string): RepositoryIdentity | undefined {
  let rec: RepositoryIdentity;
  try {
    rec = JSON.parse(raw.toString('utf8')) as RepositoryIdentity;
  } catch (err) {
    throw new IdentityRecordError(store, (err as Error).message);
  }
  if (rec && typeof rec === 'object' && rec.systemIdentifier === undefined && rec.encryption !== undefined) return undefined;
  if (!rec || typeof rec !== 'object' || typeof rec.systemIdentifier !== 'string' || !/^\d+$/.test(rec.systemIdentifier)) {
    throw new IdentityRecordError(store, 'no systemIdentifier');
  }
  if (typeof rec.formatVersion !== 'number') throw new IdentityRecordError(store, 'no formatVersion');
  if (rec.formatVersion > FORMAT_VERSION) {
    throw new IdentityRecordError(store, `format version ${rec.formatVersion} is newer than this pgrunbook understands (${FORMAT_VERSION}); upgrade pgrunbook`);
  }
  return rec;
}

export async function readRepositoryIdentity(store: ObjectStore): Promise<RepositoryIdentity | undefined> {
  const raw = await readObjectIfExists(store, IDENTITY_KEY);
  if (!raw) return undefined;
  return parse(raw, store.describe());
}

/**
 * Throws IdentityMismatchError when the record names another cluster, and an Error when the WAL
 * segment size differs (WAL file names and positions would not mean the same). Returns warnings
 * (another major version: the same cluster upgraded; older backups cannot be restored with it).
 */
export function checkRepositoryIdentity(
  store: ObjectStore,
  record: RepositoryIdentity,
  systemIdentifier: string,
  cluster: { pgMajor?: number; walSegmentSize?: number } = {},
): string[] {
  if (record.systemIdentifier !== systemIdentifier) throw new IdentityMismatchError(record.systemIdentifier, systemIdentifier, store.describe());
  if (record.walSegmentSize !== undefined && cluster.walSegmentSize !== undefined && record.walSegmentSize !== cluster.walSegmentSize) {
    throw Object.assign(
      new Error(
        `the repository ${store.describe()} holds WAL of ${record.walSegmentSize}-byte segments; this server's wal_segment_size is ${cluster.walSegmentSize} (changed with pg_resetwal?). Nothing was stored`,
      ),
      { hint: 'use a new repository (--repo) for the cluster as it is now' },
    );
  }
  const warnings: string[] = [];
  if (record.pgMajor !== undefined && cluster.pgMajor !== undefined && record.pgMajor !== cluster.pgMajor) {
    warnings.push(
      `the repository was started by PostgreSQL ${record.pgMajor}; this server is ${cluster.pgMajor}: backups taken before the upgrade restore only with PostgreSQL ${record.pgMajor}`,
    );
  }
  return warnings;
}

/**
 * The record, created from `cluster` when the repository has none (a new repository, or one from
 * before records existed); IdentityMismatchError when it names another cluster.
 */
export async function ensureRepositoryIdentity(
  store: ObjectStore,
  cluster: { systemIdentifier: string; pgMajor?: number; walSegmentSize?: number; compression?: string },
): Promise<RepositoryIdentity> {
  const systemIdentifier = String(cluster.systemIdentifier);
  const encryption = encryptionOf(store);
  for (let attempt = 0; attempt < 3; attempt++) {
    const existing = await readRepositoryIdentity(store);
    if (existing) {
      checkRepositoryIdentity(store, existing, systemIdentifier);
      checkSameEncryption(store, existing, encryption);
      return existing;
    }
    const record: RepositoryIdentity = {
      formatVersion: FORMAT_VERSION,
      systemIdentifier,
      ...(cluster.pgMajor !== undefined ? { pgMajor: cluster.pgMajor } : {}),
      ...(cluster.walSegmentSize !== undefined ? { walSegmentSize: cluster.walSegmentSize } : {}),
      createdAt: new Date().toISOString(),
      ...(cluster.compression !== undefined ? { compression: cluster.compression } : {}),
      ...(encryption ? { encryption } : {}),
    };
    const body = Buffer.from(`${JSON.stringify(record, null, 2)}\n`);
    if (encryption && (await readObjectIfExists(store, IDENTITY_KEY))) {
      // An encrypted repository no cluster has claimed yet: its record gets the cluster, the same
      // encryption entry kept. Read back below: another cluster claiming it at the same time is refused.
      await store.put(IDENTITY_KEY, body, { contentLength: body.length });
      const now = await readRepositoryIdentity(store);
      if (now?.systemIdentifier === systemIdentifier) return now;
      continue;
    }
    if (await createIfAbsent(store, IDENTITY_KEY, body)) return record;
    // Someone else created it first: read theirs and check against it.
  }
  const final = await readRepositoryIdentity(store);
  if (!final) throw new IdentityRecordError(store.describe(), 'it could not be created, and is not there');
  checkRepositoryIdentity(store, final, systemIdentifier);
  checkSameEncryption(store, final, encryption);
  return final;
}

/** Another writer created the record first (the store was opened before it existed): its key must be ours. */
function checkSameEncryption(store: ObjectStore, record: RepositoryIdentity, ours: EncryptionRecord | undefined): void {
  const theirs = record.encryption;
  if ((theirs?.keyCheck ?? '') === (ours?.keyCheck ?? '') && (theirs?.kdf.salt ?? '') === (ours?.kdf.salt ?? '')) return;
  throw new RepoKeyError(
    `the repository ${store.describe()} was started by another run at the same time ${theirs ? 'with another key or salt' : 'without a key'}; nothing was stored`,
    'run again: the repository is now opened with its own format record',
  );
}

const XLP_LONG_HEADER = 0x0002;

/**
 * The system identifier from a WAL segment's first page (its long header), or undefined when the
 * bytes do not start with one. Layout (little endian on every platform PostgreSQL runs on here):
 * xlp_magic u16 @0, xlp_info u16 @2, xlp_tli u32 @4, xlp_pageaddr u64 @8, xlp_rem_len u32 @16,
 * padding to 24; long header: xlp_sysid u64 @24, xlp_seg_size u32 @32, xlp_xlog_blcksz u32 @36.
 */
export function systemIdentifierFromSegment(buf: Buffer): { systemIdentifier: string; segmentSize: number; pageMagic: number } | undefined {
  if (buf.length < 40) return undefined;
  const pageMagic = buf.readUInt16LE(0);
  const info = buf.readUInt16LE(2);
  if ((info & XLP_LONG_HEADER) === 0) return undefined;
  const sysid = buf.readBigUInt64LE(24);
  const segmentSize = buf.readUInt32LE(32);
  const blcksz = buf.readUInt32LE(36);
  const pow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;
  // wal_segment_size: 1 MB .. 1 GB, a power of two; XLOG_BLCKSZ: 1 kB .. 64 kB, a power of two.
  if (!pow2(segmentSize) || segmentSize < 1024 * 1024 || segmentSize > 1024 * 1024 * 1024) return undefined;
  if (!pow2(blcksz) || blcksz < 1024 || blcksz > 65536) return undefined;
  if (sysid === 0n) return undefined;
  return { systemIdentifier: sysid.toString(), segmentSize, pageMagic };
}
