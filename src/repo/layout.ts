// The repository's key layout: where every kind of object lives, in one place.
//
//   pgrunbook.json                 the format record and the cluster identity (identity.ts)
//   locks/<name>.json              lock records (lock.ts)
//   basebackups/<id>/...           a base backup's objects, backup.json written last (catalog.ts)
//   dumps/<database>/<id>/...      a dump's objects, dump.json written last
//   wal/<file>[.zst|.gz]           archived WAL segments and history files (walarchive.ts)
//   verify/last.json               the last `catalog --verify` result (verify.ts)

import { CODEC_SUFFIX, type Codec } from './codec.js';

export const IDENTITY_KEY = 'pgrunbook.json';

export const LOCK_PREFIX = 'locks/';

export function lockKey(name: string): string {
  return `${LOCK_PREFIX}${name}.json`;
}

export const BASEBACKUP_PREFIX = 'basebackups/';
/** A base backup's metadata file, written after all of its objects: the backup is complete once it exists. */
export const BACKUP_META = 'backup.json';

export function baseBackupPrefix(id: string): string {
  return `${BASEBACKUP_PREFIX}${id}/`;
}

export const DUMP_PREFIX = 'dumps/';
/** A dump's metadata file, written last like backup.json. */
export const DUMP_META = 'dump.json';

export function dumpPrefix(database: string, id: string): string {
  return `${DUMP_PREFIX}${database}/${id}/`;
}

export const WAL_PREFIX = 'wal/';

/** A WAL file's codec (codec.ts): its key's suffix says which. */
export type WalCompression = Codec;

export function walKey(name: string, compression: WalCompression): string {
  return `${WAL_PREFIX}${name}${CODEC_SUFFIX[compression]}`;
}

/** The WAL file name and compression a key in wal/ stands for. */
export function parseWalKey(key: string): { name: string; compression: WalCompression } | undefined {
  if (!key.startsWith(WAL_PREFIX)) return undefined;
  const rest = key.slice(WAL_PREFIX.length);
  if (rest.endsWith('.gz')) return { name: rest.slice(0, -3), compression: 'gzip' };
  if (rest.endsWith('.zst')) return { name: rest.slice(0, -4), compression: 'zstd' };
  return { name: rest, compression: 'none' };
}

export const VERIFY_PREFIX = 'verify/';
export const VERIFY_RESULT_KEY = `${VERIFY_PREFIX}last.json`;
