// What retention reads of a repository before deciding: the catalog, when each incomplete
// backup was last written to, and the catalog slimmed to what a journal should hold.
import type { Repository } from './repository.js';
import type { Catalog } from './catalog.js';
import { baseBackupPrefix, dumpPrefix } from './retention.js';

/** The catalog, and when each incomplete backup was last written to (its newest object). */
export async function readRepositoryState(repo: Repository): Promise<{ catalog: Catalog; lastWrite: Record<string, string> }> {
  const catalog = await repo.catalog();
  const lastWrite: Record<string, string> = {};
  const prefixes = [
    ...catalog.baseBackups.filter((b) => !b.complete && !b.problem).map((b) => baseBackupPrefix(b.id)),
    ...catalog.dumps.filter((d) => !d.complete && !d.problem).map((d) => dumpPrefix(d.database, d.id)),
  ];
  for (const prefix of prefixes) {
    let newest = -Infinity;
    for await (const entry of repo.store.list(prefix)) newest = Math.max(newest, entry.lastModified.getTime());
    if (newest > -Infinity) lastWrite[prefix] = new Date(newest).toISOString();
  }
  return { catalog, lastWrite };
}

/** Only what planning and verification read: a dump.json may carry per-table row counts, which
 *  have no place in a journaled state. */
export function slimCatalog(c: Catalog): Catalog {
  return {
    ...c,
    baseBackups: c.baseBackups.map((b) => ({
      ...b,
      meta: b.meta && {
        id: b.meta.id,
        startLsn: b.meta.startLsn,
        stopLsn: b.meta.stopLsn,
        startTime: b.meta.startTime,
        stopTime: b.meta.stopTime,
        timeline: b.meta.timeline,
        walSegmentSize: b.meta.walSegmentSize,
      },
    })),
    dumps: c.dumps.map((d) => ({ ...d, meta: d.meta && { id: d.meta.id, database: d.meta.database, startTime: d.meta.startTime, stopTime: d.meta.stopTime } })),
  };
}
