// table-restore --at TARGET --tables a,b: several tables from the scratch cluster at once, keeping
// the foreign keys between them consistent. The single-table steps run per table where they
// only look (counts, columns, keys other tables reference); the copy is ONE transaction for all
// of them: live rows deleted child-to-parent, restored rows inserted parent-to-child (the order
// comes from the foreign keys between them, pg_constraint), every key touching them checked
// before COMMIT, after one typed confirmation naming them all.
import { errorMessage, shellQuote } from '../../engine/runner.js';
import { formatBytes } from '../../engine/format.js';
import { copyTables, tableFingerprint } from '../../postgres/table-copy.js';
import { countRows, liveShape, tableColumnsAndRows, tableLeaves, triggersAndKeys, triggersToDisable, type ForeignKey, type Trigger } from '../../postgres/tables.js';
import { refusal, throwIfInterrupted } from '../logical-restore/steps-common.js';
import { checkColumns, checkReferencedKeys } from './compare.js';
import { canonical } from './names.js';
import { ensureTempRestored, sourceConnection } from './temp-database.js';
import { confirmText, label, planOf, sourceWords, type Restored, type TableRestoreContext, type TableRestorePlan } from './types.js';

type Member = NonNullable<TableRestorePlan['set']>[number];

function setOf(ctx: TableRestoreContext): Member[] {
  const set = planOf(ctx).set;
  if (!set) throw new Error('this table restore is of one table (--table), not --tables');
  return set;
}

/** Each table as it was at the target, read from the scratch cluster (recovered first when needed). */
export async function ensureSetRestored(ctx: TableRestoreContext): Promise<Record<string, Restored>> {
  const p = planOf(ctx);
  await ensureTempRestored(ctx);
  if (ctx.state.restoredSet) return ctx.state.restoredSet;
  const conn = sourceConnection(ctx);
  const out: Record<string, Restored> = {};
  for (const t of setOf(ctx)) {
    const shape = await tableLeaves(conn, t.schema, t.table);
    if (!shape) throw new Error(`${label(t.schema, t.table)} did not exist in ${p.database} at ${p.at}: pick a target before it was dropped (pgrunbook find-target lists the incidents)`);
    out[label(t.schema, t.table)] = { ...(await tableColumnsAndRows(conn, t.schema, t.table)), partitioned: shape.partitioned, leaves: shape.leaves };
  }
  ctx.state.restoredSet = out;
  return out;
}

/** The compare step for a set: per table the counts, and replacing, its columns and the keys tables outside the set reference. */
export async function compareSet(ctx: TableRestoreContext): Promise<boolean> {
  const p = planOf(ctx);
  const restored = await ensureSetRestored(ctx);
  const set = setOf(ctx);
  const names = new Set(set.map((t) => label(t.schema, t.table)));
  let ok = true;
  for (const t of set) {
    const name = label(t.schema, t.table);
    const r = restored[name];
    const live = await liveShape({ ...ctx.services.connection, database: p.database }, t.schema, t.table);
    ctx.log(`${name} in ${p.database} now: ${live ? `${live.rows} rows` : 'does not exist'}; in ${sourceWords(p)}: ${r.rows} rows`);
    ctx.check(`restored rows of ${name}`, true, `${r.rows} rows in ${sourceWords(p)}`);
    if (r.partitioned || live?.partitioned) {
      ctx.check(`partitions of ${name}`, false, `${name} is partitioned: --tables restores plain tables; restore it alone with --table`);
      ok = false;
      continue;
    }
    if (p.mode !== 'replace') continue;
    if (!live) {
      ctx.check('columns', false, `${name} does not exist in ${p.database} any more; nothing to replace. Use --mode new-table`);
      ok = false;
      continue;
    }
    ok = checkColumns(ctx, r, live) && ok;
    if (ok) ok = await checkReferencedKeys(ctx, t.schema, t.table, names);
  }
  return ok;
}

/** Parent-to-child order of the set from the foreign keys between its tables (a cycle keeps the order given). */
export function parentFirst<T extends { schema: string; table: string }>(set: T[], fks: Pick<ForeignKey, 'child' | 'parent'>[]): T[] {
  const names = set.map((t) => label(t.schema, t.table));
  const parentsOf = new Map(names.map((n) => [n, new Set<string>()]));
  for (const k of fks) {
    const c = canonical(k.child);
    const pa = canonical(k.parent);
    if (c !== pa && parentsOf.has(c) && parentsOf.has(pa)) parentsOf.get(c)!.add(pa);
  }
  const out: T[] = [];
  const placed = new Set<string>();
  while (out.length < set.length) {
    const next = set.find((_t, i) => !placed.has(names[i]) && [...parentsOf.get(names[i])!].every((x) => placed.has(x))) ?? set.find((_, i) => !placed.has(names[i]))!;
    placed.add(label(next.schema, next.table));
    out.push(next);
  }
  return out;
}

/** Replace mode: the live counts now, and one typed confirmation naming every table. */
async function confirmSet(ctx: TableRestoreContext, set: Member[], restored: Record<string, Restored>): Promise<void> {
  const p = planOf(ctx);
  const parts: string[] = [];
  for (const t of set) {
    const n = await countRows({ ...ctx.services.connection, database: p.database }, t.schema, t.table);
    parts.push(`${label(t.schema, t.table)}: delete ${n} rows, insert ${restored[label(t.schema, t.table)].rows}`);
  }
  const what = `replace the rows of ${set.length} tables in ${p.database} with those from ${sourceWords(p)}, in one transaction (${parts.join('; ')})`;
  const expected = confirmText(p);
  if (await ctx.confirm({ message: `${what}? Type "${expected}" to continue.`, destructive: { what, expected, means: 'the tables, as DATABASE.SCHEMA.T1,SCHEMA.T2' } })) return;
  throwIfInterrupted(ctx.signal);
  throw refusal(`not confirmed: ${what}. Nothing was changed; the scratch cluster is removed`, `to allow it, run the table restore again with --confirm ${shellQuote(expected)}`);
}

export async function copySet(ctx: TableRestoreContext): Promise<void> {
  const p = planOf(ctx);
  const restored = await ensureSetRestored(ctx);
  const replacing = p.mode === 'replace';
  const prod = { ...ctx.services.connection, database: p.database };
  const temp = sourceConnection(ctx);
  if (replacing) await confirmSet(ctx, setOf(ctx), restored);
  const triggers = new Map<string, Trigger[]>();
  const fks: ForeignKey[] = [];
  for (const t of setOf(ctx)) {
    const live = replacing ? await triggersAndKeys(prod, t.schema, t.table, true) : { triggers: [], fks: [] };
    if (!live) throw new Error(`${label(t.schema, t.table)} does not exist in ${p.database} any more; nothing was changed`);
    triggers.set(label(t.schema, t.table), triggersToDisable(live.triggers, Boolean(p.replica)));
    fks.push(...live.fks);
  }
  const order = parentFirst(setOf(ctx), fks);
  if (replacing) ctx.log(`order: rows deleted ${order.slice().reverse().map((t) => label(t.schema, t.table)).join(', ')}; inserted ${order.map((t) => label(t.schema, t.table)).join(', ')}`);
  const tables = [];
  for (const t of order) {
    const r = restored[label(t.schema, t.table)];
    const columns = replacing ? r.columns.filter((c) => !c.generated) : r.columns;
    const into = { schema: t.schema, table: replacing ? t.table : t.newTable! };
    tables.push({ from: { schema: t.schema, table: t.table }, into, columns, expected: await tableFingerprint(temp, t.schema, t.table, columns.map((c) => c.name)), triggers: triggers.get(label(t.schema, t.table)) ?? [] });
  }
  const total = tables.reduce((a, t) => a + t.expected.rows, 0);
  ctx.log(`copying ${total} rows of ${tables.length} tables from the scratch cluster into ${p.database}, in one transaction`);
  ctx.progress({ done: 0, total, unit: 'rows' });
  const r = await copyTables({
    psql: p.psql,
    source: temp,
    target: prod,
    tables,
    // Replica: every foreign key touching the set is checked before COMMIT (none fired); otherwise the server checks them.
    replace: replacing ? { replica: Boolean(p.replica), fks: p.replica ? fks : [] } : undefined,
    clientEncoding: p.encoding,
    env: ctx.services.env,
    signal: ctx.signal,
    applicationName: `pgrunbook table-restore ${ctx.runId}`,
    onRows: (n) => ctx.progress({ done: Math.min(n, total), total, unit: 'rows' }),
  }).catch((err: unknown) => {
    if (ctx.signal.aborted) throw err;
    throw new Error(`${errorMessage(err).replace(/\.+$/, '')}. The transaction was rolled back: ${replacing ? 'the live rows of every table are unchanged' : 'no new table was created'}`);
  });
  ctx.progress({ done: r.rows, total, unit: 'rows' });
  const deleted = r.tags.filter((t) => t.startsWith('DELETE ')).map((t) => t.slice(7));
  ctx.log(`committed: ${deleted.length ? `deleted ${deleted.join(' + ')} rows, ` : ''}inserted ${r.rows} rows (${formatBytes(r.bytes)})`);
  ctx.state.copiedSet = tables.map((t) => ({ from: t.from, into: t.into, columns: t.columns.map((c) => c.name) }));
  if (!replacing) ctx.log(`new tables: ${ctx.state.copiedSet.map((c) => label(c.into.schema, c.into.table)).join(', ')} (columns, types and NOT NULL; no defaults, indexes, constraints or triggers): compare them with the live tables and merge what you need.`);
}

/** After COMMIT: every table's rows counted and checksummed again against the scratch cluster's. */
export async function verifySet(ctx: TableRestoreContext): Promise<boolean> {
  const p = planOf(ctx);
  await ensureTempRestored(ctx);
  const copied = ctx.state.copiedSet;
  if (!copied) throw new Error('the copy step has not run in this run');
  let ok = true;
  for (const c of copied) {
    const { into: to, from } = c;
    const name = label(to.schema, to.table);
    const [prodFp, tempFp] = await Promise.all([
      tableFingerprint({ ...ctx.services.connection, database: p.database }, to.schema, to.table, c.columns),
      tableFingerprint(sourceConnection(ctx), from.schema, from.table, c.columns),
    ]);
    const good = prodFp.rows === tempFp.rows && prodFp.sum === tempFp.sum;
    ok &&= good;
    ctx.check(
      `contents of ${name}`,
      good,
      good
        ? `${prodFp.rows} rows, every row as in ${sourceWords(p)}`
        : `${prodFp.rows} rows (checksum ${prodFp.sum}) in ${p.database}, ${tempFp.rows} (checksum ${tempFp.sum}) in ${sourceWords(p)}: changed after COMMIT by another session or a deferred trigger`,
    );
  }
  return ok;
}
