// The verify step of backup-base: what the stream check found while the backup was written
// (base-backup-check.ts: every file against backup_manifest, the WAL inside), plus the stored
// objects as the repository has them: the data object present with the size written, and the
// backup_manifest object read back (small) against its SHA-256 and Manifest-Checksum. The data
// itself is not read a second time; `catalog --verify` reads everything back when asked.
import path from 'node:path';
import { formatBytes } from '../engine/format.js';
import { ManifestError, ManifestReader } from '../postgres/formats/backup_manifest.js';
import type { BaseBackupMeta } from '../repo/catalog.js';
import type { Repository } from '../repo/repository.js';
import { ChecksumMismatchError } from '../storage/types.js';
import { MANIFEST_OBJECT } from './base-backup-repo.js';
import type { StreamCheckResult } from './base-backup-check.js';
import type { RunIO } from './run-repository.js';

/** What was checked, for the run's state. */
export type VerifiedBackup = { files: number; checksummed: number; bytes: number; seconds: number };

/** `failed` when a check failed (the backup is bad); throws when the repository could not be read. */
export async function verifyBaseBackup(ctx: RunIO, repo: Repository, meta: BaseBackupMeta, check: StreamCheckResult): Promise<{ failed: boolean; verified?: VerifiedBackup }> {
  const started = Date.now();
  const data = meta.objects?.data;
  const man = meta.objects?.manifest;
  if (!data || !man) throw new Error(`backup ${meta.id} has no object list in its state; run the backup again`);
  let failed = false;
  const fail = (name: string, detail: string) => {
    failed = true;
    ctx.check(name, false, detail);
  };

  // 1. The manifest object as stored: its bytes, and its own checksum.
  try {
    const reader = new ManifestReader();
    const body = await repo.getVerified(man.key, man.sha256, ctx.signal);
    for await (const chunk of body) reader.write(chunk as Buffer);
    const summary = reader.end();
    if (!check.manifestOk) fail(MANIFEST_OBJECT, `in the stream: ${check.manifestDetail}`);
    else ctx.check(MANIFEST_OBJECT, true, `SHA-256 and Manifest-Checksum ok; ${summary.fileCount} files, ${formatBytes(summary.totalSize)}`);
  } catch (err) {
    if (!(err instanceof ChecksumMismatchError || err instanceof ManifestError)) throw err;
    fail(MANIFEST_OBJECT, (err as Error).message);
    return { failed: true };
  }

  // 2. The data object is there with the size written (its SHA-256 was taken while it was written).
  const name = path.posix.basename(data.key);
  const info = await repo.store.head(data.key);
  if (!info) {
    fail(name, `${data.key} is not in the repository after it was written`);
    return { failed: true };
  }
  if (info.size !== data.size) {
    fail(name, `${data.key} is ${info.size} bytes in the repository, ${data.size} were written`);
    return { failed: true };
  }
  ctx.check(name, true, `${formatBytes(data.size)} stored (${data.compression}), SHA-256 ${data.sha256.slice(0, 16)}... taken while writing; complete tar: ${check.files} files, ${formatBytes(check.bytes)}`);

  // 3. Every file in the tar against backup_manifest, as it streamed past.
  if (check.problemCount) {
    fail('files against backup_manifest', `${check.problemCount} problem(s): ${check.problems.slice(0, 5).join('; ')}`);
  } else {
    ctx.check('files against backup_manifest', true, `all ${check.listed} files present with the listed size; ${check.checksummed} checksums verified as they streamed`);
  }

  // 4. The WAL from the start to the stop LSN, which makes the backup consistent, is inside.
  if (check.missingWal.length) fail('WAL inside the backup', `missing from pg_wal/: ${check.missingWal.join(', ')} (needed for ${meta.startLsn} .. ${meta.stopLsn})`);
  else if (!check.neededWal.length) fail('WAL inside the backup', `backup_manifest names no WAL range (${meta.startLsn} .. ${meta.stopLsn})`);
  else ctx.check('WAL inside the backup', true, `${check.neededWal.join(', ')} (${meta.startLsn} .. ${meta.stopLsn}) in pg_wal/`);

  return { failed, verified: { files: check.files, checksummed: check.checksummed, bytes: check.bytes, seconds: (Date.now() - started) / 1000 } };
}
