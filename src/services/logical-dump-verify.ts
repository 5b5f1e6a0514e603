// A committed dump checked in the repository. A dump made by this very run was hashed as it was
// written and its archive walked block by block on the way (the row counts come from it): the
// stored object's size is checked against what was written and pg_restore --list reads the start
// of it (its table of contents), without reading the rest a second time, as backup-base's verify
// does; `catalog --verify` reads everything back when asked. A dump committed by an earlier
// attempt of a resumed run is read back whole: its SHA-256 and size against dump.json, and
// pg_restore --list on the way (when pg_restore is there) as proof that the archive parses.
import { formatBytes } from '../engine/format.js';
import { errorMessage } from '../engine/runner.js';
import { readThroughRestoreList } from '../postgres/programs/pg_dump.js';
import { decompressStream } from '../repo/codec.js';
import type { Repository } from '../repo/repository.js';
import type { DumpRecord } from './logical-dump.js';
import type { RunIO } from './run-repository.js';

/** Checks each database's dump (one check per database); an interruption throws. */
export async function verifyDumps(io: RunIO, repo: Repository, records: [string, DumpRecord][], opts: { pgRestore?: string; env: NodeJS.ProcessEnv }): Promise<void> {
  const totalBytes = records.reduce((n, [, rec]) => n + rec.size, 0);
  let doneBytes = 0;
  for (const [db, rec] of records) {
    io.signal.throwIfAborted();
    try {
      if (!(await repo.store.head(rec.metaKey))) {
        io.check(`dump ${db}`, false, `${rec.metaKey} is missing: the dump is not committed`);
        continue;
      }
      if (rec.walked) {
        const info = await repo.store.head(rec.key);
        if (!info) {
          io.check(`dump ${db}`, false, `${rec.key} is not in the repository after it was written`);
          continue;
        }
        if (info.size !== rec.size) {
          io.check(`dump ${db}`, false, `${rec.key} is ${info.size} bytes in the repository, ${rec.size} were written`);
          continue;
        }
      }
      const body = await repo.getVerified(rec.key, rec.walked ? undefined : rec.sha256, io.signal);
      const before = doneBytes;
      const r = await readThroughRestoreList(body, {
        pgRestore: opts.pgRestore,
        ...(rec.compression && rec.compression !== 'none' ? { decode: decompressStream(rec.compression) } : {}),
        signal: io.signal,
        env: opts.env,
        onBytes: (n) => io.progress({ done: before + n, total: totalBytes, unit: 'bytes' }),
        untilListed: rec.walked && Boolean(opts.pgRestore),
      });
      doneBytes = before + (rec.walked ? rec.size : r.bytes);
      if (rec.walked) {
        if (r.exit && !r.exit.ok) io.check(`dump ${db}`, false, `${rec.key} does not parse as a pg_dump archive: ${r.exit.failure}`);
        else {
          const toc = r.toc ? `; pg_restore --list: ${r.toc.entries} entries, ${r.toc.tableData} with table data` : '';
          io.check(`dump ${db}`, true, `${formatBytes(rec.size)} stored, SHA-256 taken while writing, every data block read as it streamed, ${rec.tables} tables, ${rec.rows} rows${toc}`);
        }
      } else if (r.bytes !== rec.size) {
        io.check(`dump ${db}`, false, `${rec.key} holds ${r.bytes} bytes, dump.json says ${rec.size}`);
      } else if (r.exit && !r.exit.ok) {
        io.check(`dump ${db}`, false, `${rec.key} does not parse as a pg_dump archive: ${r.exit.failure}`);
      } else {
        const toc = r.toc ? `; pg_restore --list: ${r.toc.entries} entries, ${r.toc.tableData} with table data` : '; not parsed (no pg_restore)';
        io.check(`dump ${db}`, true, `${formatBytes(r.bytes)}, SHA-256 matches, ${rec.tables} tables, ${rec.rows} rows${toc}`);
      }
    } catch (err) {
      if (io.signal.aborted) throw err;
      io.check(`dump ${db}`, false, `reading ${rec.key} back failed: ${errorMessage(err)}`);
    }
  }
  if (doneBytes !== totalBytes) io.progress({ done: doneBytes, total: doneBytes, unit: 'bytes' });
}
