// The comparison before anything changes in production: the live table's rows, the restored
// rows and dump.json's count side by side (the restored count must equal dump.json's); replacing,
// the columns and partitions must match, and every key other tables reference now must be among
// the dumped rows.
import { dropKeyScratch, missingReferencedKeys, resetKeyScratch } from '../../postgres/table-copy.js';
import { liveShape, referencingKeys } from '../../postgres/tables.js';
import { describeDump } from '../../repo/dump-files.js';
import { ensureTempRestored, sourceConnection } from './temp-database.js';
import { canonical } from './names.js';
import { label, planOf, sourceWords, type Restored, type TableRestoreContext } from './types.js';

type LiveShape = NonNullable<Awaited<ReturnType<typeof liveShape>>>;

export async function compare(ctx: TableRestoreContext): Promise<boolean> {
  const p = planOf(ctx);
  const restored = await ensureTempRestored(ctx);
  const live = await liveShape({ ...ctx.services.connection, database: p.database }, p.schema, p.table);
  const name = label(p.schema, p.table);
  ctx.state.counts = { live: live?.rows ?? null, restored: restored.rows, dumpJson: p.dumpRows ?? null };
  ctx.log(`${name} in ${p.database} now: ${live ? `${live.rows} rows` : 'does not exist'}`);
  ctx.log(`${name} in ${p.dump ? describeDump(p.dump) : sourceWords(p)}: ${restored.rows} rows`);
  if (p.dump) ctx.log(`${name} in dump.json: ${p.dumpRows !== undefined ? `${p.dumpRows} rows` : 'no count recorded'}`);
  if (live) {
    const d = restored.rows - live.rows;
    ctx.log(d === 0 ? 'the live table has as many rows as the dump' : `the live table has ${Math.abs(d)} ${d > 0 ? 'fewer' : 'more'} rows than the dump`);
  }
  let ok = checkRestoredCount(ctx, restored);
  if (p.mode === 'replace') {
    if (!live) {
      ctx.check('columns', false, `${name} does not exist in ${p.database} any more; nothing to replace. Use --mode new-table`);
      return false;
    }
    ok = checkColumns(ctx, restored, live) && ok;
    ok = checkPartitions(ctx, restored, live) && ok;
    if (ok) ok = await checkReferencedKeys(ctx, p.schema, p.table, new Set());
  }
  return ok;
}

/** The restored rows against dump.json's count (a partitioned table's: its partitions' counts added up). */
function checkRestoredCount(ctx: TableRestoreContext, restored: Restored): boolean {
  const p = planOf(ctx);
  let dumpRows = p.dumpRows;
  if (dumpRows === undefined && restored.partitioned && p.dumpCounts) {
    const counts = p.dumpCounts;
    const keys = (restored.leaves ?? []).map((l) => label(l.schema, l.table));
    const missing = keys.filter((k) => !(k in counts));
    if (missing.length) ctx.log(`dump.json has no count for these partitions: ${missing.join(', ')}`, 'warn');
    else {
      dumpRows = keys.reduce((a, k) => a + counts[k], 0);
      ctx.log(`${label(p.schema, p.table)} in dump.json: ${dumpRows} rows in its ${keys.length} partitions`);
    }
  }
  if (p.at) {
    ctx.check('restored rows', true, `${restored.rows} rows in ${sourceWords(p)}`);
    return true;
  }
  if (dumpRows === undefined) {
    ctx.check('restored rows', true, `${restored.rows} rows (dump.json has no count to compare with)`);
    return true;
  }
  const same = restored.rows === dumpRows;
  ctx.check('restored rows', same, same ? `${restored.rows} rows, as dump.json records` : `${restored.rows} rows restored, dump.json says ${dumpRows}: the dump does not hold what was counted; choose another --dump`);
  return same;
}

/** Every dumped column (but generated ones) must be a plain column of the live table. */
export function checkColumns(ctx: TableRestoreContext, restored: Restored, live: LiveShape): boolean {
  const liveCols = new Map(live.columns.map((c) => [c.name, c]));
  const copied = restored.columns.filter((c) => !c.generated);
  const missing = copied.filter((c) => !liveCols.has(c.name)).map((c) => c.name);
  const generatedNow = copied.filter((c) => liveCols.get(c.name)?.generated).map((c) => c.name);
  const extra = live.columns.filter((c) => !c.generated && !restored.columns.some((r) => r.name === c.name)).map((c) => c.name);
  const good = missing.length === 0 && generatedNow.length === 0;
  ctx.check(
    'columns',
    good,
    good
      ? `${copied.length} columns copied: ${copied.map((c) => c.name).join(', ')}${extra.length ? `; columns only the live table has get their defaults: ${extra.join(', ')}` : ''}`
      : `the live table's columns differ from the dump's (${[missing.length ? `not in the live table: ${missing.join(', ')}` : '', generatedNow.length ? `generated in the live table: ${generatedNow.join(', ')}` : ''].filter(Boolean).join('; ')}); use --mode new-table and merge by hand`,
  );
  return good;
}

/** A partitioned table is replaced partition by partition: the dump's partitions must be the live ones. */
function checkPartitions(ctx: TableRestoreContext, restored: Restored, live: LiveShape): boolean {
  const p = planOf(ctx);
  if (restored.partitioned) {
    const dumped = (restored.leaves ?? []).map((l) => label(l.schema, l.table)).sort();
    const now = live.leaves.slice().sort();
    const same = dumped.length === now.length && dumped.every((x, i) => x === now[i]);
    ctx.check(
      'partitions',
      same,
      same
        ? `${dumped.length} partitions, the same in the dump and in ${p.database}: all are replaced in one transaction`
        : `the partitions differ (in the dump: ${dumped.join(', ') || 'none'}; in ${p.database}: ${now.join(', ') || 'none'}); use --mode new-table and merge by hand`,
    );
    return same;
  }
  if (live.partitioned) {
    ctx.check('partitions', false, `${label(p.schema, p.table)} is partitioned in ${p.database} but not in the dump; use --mode new-table and merge by hand`);
    return false;
  }
  return true;
}

/**
 * Replace mode, before anything changes: every key that other tables reference now must be among
 * the dumped rows. The referencing keys are streamed from production into the temporary database
 * (never into memory) and looked up there.
 */
export async function checkReferencedKeys(ctx: TableRestoreContext, schema: string, table: string, restoredToo: Set<string>): Promise<boolean> {
  const p = { ...planOf(ctx), schema, table };
  const prod = { ...ctx.services.connection, database: p.database };
  const temp = sourceConnection(ctx);
  // Tables restored in the same transaction (--tables) are checked before COMMIT instead.
  const fks = (await referencingKeys(prod, p.schema, p.table)).filter((k) => !restoredToo.has(canonical(k.child)));
  if (!fks.length) return true;
  await resetKeyScratch(temp);
  let ok = true;
  for (const [i, fk] of fks.entries()) {
    ctx.signal.throwIfAborted();
    const r = await missingReferencedKeys({
      psql: p.psql,
      prod,
      temp,
      fk,
      scratchTable: `keys_${i}`,
      clientEncoding: p.encoding,
      env: ctx.services.env,
      signal: ctx.signal,
      applicationName: `pgrunbook table-restore ${ctx.runId}`,
    });
    const good = r.missing === 0;
    ok &&= good;
    ctx.check(
      `keys referenced by ${fk.child} (${fk.name})`,
      good,
      good
        ? `every ${fk.parentCols.join(', ')} that ${fk.child} references is in the dump`
        : `${r.missing} ${fk.parentCols.join(', ')} value(s) that ${fk.child} references (foreign key ${fk.name}) are not in the dump, e.g. ${r.sample}: ` +
            `replacing ${label(p.schema, p.table)} would leave those rows pointing at nothing. Nothing was changed. Use --mode new-table and merge by hand, or choose another --dump`,
    );
  }
  await dropKeyScratch(temp);
  return ok;
}
