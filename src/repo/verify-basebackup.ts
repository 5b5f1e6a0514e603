// Base backups under verify: backup.json's objects present, backup_manifest and the data tar
// against the SHA-256s backup.json recorded, then every file in the tar against backup_manifest's
// size and checksum, and the WAL the backup needs to be consistent inside the tar.
import type { Duplex } from 'node:stream';
import { decompressStream } from './codec.js';
import { ManifestReader, manifestChecksummer, type ManifestFile } from '../postgres/formats/backup_manifest.js';
import { TarReader, type TarEntrySink } from '../postgres/formats/tar.js';
import { drainedOrClosed } from '../postgres/streams.js';
import type { BaseBackupMeta } from './catalog.js';
import { BASEBACKUP_PREFIX } from './layout.js';
import { parseLsn, segmentName, segnoOfLsn } from './walnames.js';
import { readHashed, readMeta, takeListed, verifyPlain, type Group, type VerifyRun } from './verify-run.js';

export async function verifyBaseBackup(run: VerifyRun, g: Group): Promise<void> {
  const metaKey = g.meta!.key;
  const meta = await readMeta<BaseBackupMeta>(run, metaKey);
  const listed = new Map(g.entries.map((e) => [e.key, e]));
  const recorded = meta?.objects;
  let manifestFiles: Map<string, ManifestFile> | undefined;
  if (recorded?.manifest) {
    const key = recorded.manifest.key;
    if (takeListed(run, listed, key, `backup.json of ${g.id}`)) manifestFiles = await checkManifest(run, key, recorded.manifest.sha256);
  } else if (meta?.objects) {
    run.addBad({ key: `${BASEBACKUP_PREFIX}${g.id}/backup_manifest`, problem: 'missing', detail: 'backup.json lists no backup_manifest' });
  }
  if (recorded?.data) {
    const key = recorded.data.key;
    if (takeListed(run, listed, key, `backup.json of ${g.id}`)) await checkBackupData(run, key, recorded.data, manifestFiles, meta!);
  }
  for (const e of listed.values()) await verifyPlain(run, e.key);
}

export async function checkManifest(run: VerifyRun, key: string, sha256: string): Promise<Map<string, ManifestFile> | undefined> {
  const reader = new ManifestReader({ keepFiles: true });
  let readerError: Error | undefined;
  return run.checkObject(key, async () => {
    const r = await readHashed(run, key, (c) => {
      if (readerError) return;
      try {
        reader.write(c);
      } catch (err) {
        readerError = err as Error;
      }
    });
    if (r.sha256 !== sha256) {
      run.addBad({ key, problem: 'checksum-mismatch', detail: `SHA-256 is ${r.sha256}, backup.json recorded ${sha256}` });
      return undefined;
    }
    if (!readerError) {
      try {
        reader.end();
      } catch (err) {
        readerError = err as Error;
      }
    }
    if (readerError) {
      run.addBad({ key, problem: 'corrupt', detail: readerError.message });
      return undefined;
    }
    run.counts.verified++;
    return reader.files;
  });
}

/** The data tar: SHA-256 of the stored bytes, and (when the manifest was good) every file in it against backup_manifest. */
export async function checkBackupData(run: VerifyRun, key: string, rec: NonNullable<NonNullable<BaseBackupMeta['objects']>['data']>, expected: Map<string, ManifestFile> | undefined, meta: BaseBackupMeta): Promise<void> {
  const problems: string[] = [];
  const seen = new Set<string>();
  const walNames = new Set<string>();
  let checked = 0;
  const reader = new TarReader((entry): TarEntrySink | undefined => {
    if (entry.type !== 'file') return undefined;
    if (entry.name.startsWith('pg_wal/')) walNames.add(entry.name.slice('pg_wal/'.length));
    if (!expected || entry.name === 'backup_manifest') return undefined;
    const want = expected.get(entry.name);
    if (!want) {
      if (!entry.name.startsWith('pg_wal/')) problems.push(`${entry.name}: in the tar but not in backup_manifest`);
      return undefined;
    }
    seen.add(entry.name);
    if (want.size !== entry.size) {
      problems.push(`${entry.name}: ${entry.size} bytes in the tar, ${want.size} in backup_manifest`);
      return undefined;
    }
    const sum = want.checksum ? manifestChecksummer(want.algorithm) : undefined;
    return {
      data: (c) => sum?.update(c),
      end: () => {
        if (!sum) return;
        const actual = sum.digestHex();
        if (actual === want.checksum) checked++;
        else problems.push(`${entry.name}: ${want.algorithm} ${actual}, backup_manifest says ${want.checksum}`);
      },
    };
  });
  // gzip (written before zstd), zstd (its content checksum checked by zstd -d) or none.
  const decoder: Duplex = decompressStream(rec.compression);
  let contentError: Error | undefined;
  const consumer = (async () => {
    for await (const c of decoder) reader.write(c as Buffer);
    reader.end();
  })().catch((err: unknown) => {
    contentError ??= err as Error;
    decoder.destroy();
  });
  const feed = async (chunk: Buffer) => {
    if (contentError || decoder.destroyed) return;
    if (decoder.write(chunk)) return;
    await drainedOrClosed(decoder);
  };
  await run.checkObject(key, async () => {
    let r: { sha256: string; size: number };
    try {
      r = await readHashed(run, key, feed);
    } finally {
      if (!decoder.destroyed) decoder.end();
      await consumer;
    }
    // No zstd program here: not the object's fault; exit 2 naming the package.
    if ((contentError as { procedureExitCode?: number } | undefined)?.procedureExitCode === 2) throw contentError;
    if (r.sha256 !== rec.sha256) {
      run.addBad({ key, problem: 'checksum-mismatch', detail: `SHA-256 is ${r.sha256}, backup.json recorded ${rec.sha256}${contentError ? ` (and reading it fails: ${contentError.message})` : ''}` });
      return;
    }
    if (contentError) {
      run.addBad({ key, problem: 'corrupt', detail: `its SHA-256 matches backup.json, but its contents are not a complete ${rec.compression !== 'none' ? `${rec.compression}-compressed ` : ''}tar: ${contentError.message}` });
      return;
    }
    if (expected) {
      const missing = [...expected.keys()].filter((p) => !seen.has(p));
      for (const p of missing) problems.push(`${p}: in backup_manifest but not in the tar`);
      run.counts.manifestFiles += checked;
    }
    if (meta.includesWal) {
      const segSize = meta.walSegmentSize ?? 16 * 1024 * 1024;
      try {
        for (const range of meta.walRanges ?? [{ timeline: meta.timeline, startLsn: meta.startLsn, endLsn: meta.stopLsn }]) {
          const start = parseLsn(range.startLsn);
          const end = parseLsn(range.endLsn);
          const last = end > start ? end - 1n : end;
          for (let s = segnoOfLsn(start, segSize); s <= segnoOfLsn(last, segSize); s++) {
            const name = segmentName(range.timeline, s, segSize);
            if (!walNames.has(name)) problems.push(`pg_wal/${name}: needed to make the backup consistent, not in the tar`);
          }
        }
      } catch (err) {
        run.warnings.push(`${key}: the WAL range in backup.json cannot be read (${(err as Error).message}); the WAL inside was not checked`);
      }
    }
    if (problems.length) {
      run.addBad({ key, problem: 'corrupt', detail: `${problems.length} file(s) do not match backup_manifest: ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? '; ...' : ''}` });
      return;
    }
    run.counts.verified++;
  });
}
