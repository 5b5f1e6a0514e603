// One table as the catalog describes it: whether it exists and what it is, its partitions, its
// columns, the foreign keys that touch it, its triggers, its rows (counted, or fingerprinted by an
// order-independent checksum), and what the connected user may do to it.
import type pg from 'pg';
import type { ConnectionSettings } from '../config/connection.js';
import { withPg } from './client.js';
import { ident } from './sql.js';

export interface Column {
  name: string;
  type: string;
  notNull: boolean;
  generated: boolean;
  collation: string | null;
}

export interface Leaf {
  schema: string;
  table: string;
}

/** A foreign key that touches the table (or its partitions), from either side. */
export interface ForeignKey {
  name: string;
  /** The referencing table, schema-qualified and quoted. */
  child: string;
  childOid: string;
  childCols: string[];
  childTypes: string[];
  parent: string;
  parentOid: string;
  parentCols: string[];
  /** pg_constraint.confdeltype: a (no action), r (restrict), c (cascade), n (set null), d (set default). */
  onDelete: string;
}

export interface Trigger {
  /** The table it is on, schema-qualified and quoted. */
  table: string;
  name: string;
  /** pg_trigger.tgenabled: O (origin and local), A (always), R (replica). */
  enabled: string;
}

export interface Relation {
  oid: string;
  relkind: string;
}

/** "schema"."table", quoted. */
export function qualifiedName(schema: string, table: string): string {
  return `${ident(schema)}.${ident(table)}`;
}

export async function findRelation(c: pg.Client, schema: string, table: string): Promise<Relation | undefined> {
  const r = await c.query<Relation>(
    `SELECT c.oid::text AS oid, c.relkind::text AS relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
    [schema, table],
  );
  return r.rows[0];
}

export async function countRowsOn(c: pg.Client, schema: string, table: string): Promise<number> {
  return Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${qualifiedName(schema, table)}`)).rows[0].n);
}

export async function countRows(conn: ConnectionSettings, schema: string, table: string): Promise<number> {
  return withPg(conn, (c) => countRowsOn(c, schema, table));
}

/** The table and every partition under it (pg_partition_tree), as oids. */
async function familyOids(c: pg.Client, oid: string): Promise<string[]> {
  // pg_partition_tree returns no rows for a table that is not partitioned.
  const tree = (await c.query<{ oid: string }>(`SELECT relid::oid::text AS oid FROM pg_partition_tree($1::oid::regclass)`, [oid])).rows.map((r) => r.oid);
  return tree.length ? tree : [oid];
}

const QNAME = (alias: string) => `quote_ident(${alias}n.nspname) || '.' || quote_ident(${alias}c.relname)`;

/** Foreign keys (the top-level constraint, not its per-partition clones) that reference or are declared on any of `oids`. */
async function foreignKeys(c: pg.Client, oids: string[]): Promise<ForeignKey[]> {
  const cols = (rel: string, key: string, what: string) =>
    `ARRAY(SELECT ${what} FROM unnest(k.${key}) WITH ORDINALITY u(n, i) JOIN pg_attribute a ON a.attrelid = k.${rel} AND a.attnum = u.n ORDER BY u.i)::text[]`;
  const r = await c.query<{
    name: string;
    child_oid: string;
    parent_oid: string;
    on_delete: string;
    child: string;
    parent: string;
    child_cols: string[];
    child_types: string[];
    parent_cols: string[];
  }>(
    `SELECT k.conname AS name, k.conrelid::text AS child_oid, k.confrelid::text AS parent_oid, k.confdeltype::text AS on_delete,
            ${QNAME('c')} AS child, ${QNAME('p')} AS parent,
            ${cols('conrelid', 'conkey', 'a.attname')} AS child_cols,
            ${cols('conrelid', 'conkey', 'format_type(a.atttypid, a.atttypmod)')} AS child_types,
            ${cols('confrelid', 'confkey', 'a.attname')} AS parent_cols
       FROM pg_constraint k
       JOIN pg_class cc ON cc.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
       JOIN pg_class pc ON pc.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
      WHERE k.contype = 'f' AND k.conparentid = 0 AND (k.confrelid::text = ANY($1::text[]) OR k.conrelid::text = ANY($1::text[]))
      ORDER BY k.conname`,
    [oids],
  );
  return r.rows.map((x) => ({
    name: x.name,
    child: x.child,
    childOid: x.child_oid,
    childCols: x.child_cols,
    childTypes: x.child_types,
    parent: x.parent,
    parentOid: x.parent_oid,
    parentCols: x.parent_cols,
    onDelete: x.on_delete,
  }));
}

/** Enabled user triggers (not the internal ones that implement foreign keys) on any of `oids`. */
async function userTriggers(c: pg.Client, oids: string[]): Promise<Trigger[]> {
  const r = await c.query<Trigger>(
    `SELECT ${QNAME('')} AS table, t.tgname AS name, t.tgenabled::text AS enabled
       FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE t.tgrelid::text = ANY($1::text[]) AND NOT t.tgisinternal AND t.tgenabled <> 'D'
      ORDER BY n.nspname, c.relname, t.tgname`,
    [oids],
  );
  return r.rows;
}

/** The triggers to disable for the copy: all of them, or with session_replication_role = replica only those that fire in it (ALWAYS, REPLICA). */
export function triggersToDisable(triggers: Trigger[], replica: boolean): Trigger[] {
  return replica ? triggers.filter((t) => t.enabled === 'A' || t.enabled === 'R') : triggers;
}

/** What the preflight needs to know about the live table and the names around it. */
export interface LiveTableInfo {
  encoding: string;
  schemaExists: boolean;
  rel?: Relation;
  rows?: number;
  /** Foreign keys of other tables that reference the table (or its partitions). */
  refs: ForeignKey[];
  triggers: Trigger[];
  newTaken: boolean;
  /** The user may alter the table (its owner, or a superuser): disable its triggers. */
  mayAlter: boolean;
  /** The user may SET session_replication_role. */
  mayReplica: boolean;
}

export async function inspectLiveTable(
  conn: ConnectionSettings,
  where: { schema: string; table: string; newTable?: string },
  server: { versionNum: number; superuser: boolean },
): Promise<LiveTableInfo> {
  const { schema, table, newTable } = where;
  return withPg(conn, async (c) => {
    const encoding = (await c.query<{ e: string }>(`SELECT pg_encoding_to_char(encoding) AS e FROM pg_database WHERE datname = current_database()`)).rows[0].e;
    const schemaExists = (await c.query(`SELECT 1 FROM pg_namespace WHERE nspname = $1`, [schema])).rows.length > 0;
    const rel = await findRelation(c, schema, table);
    const info: LiveTableInfo = { encoding, schemaExists, rel, refs: [], triggers: [], newTaken: false, mayAlter: false, mayReplica: false };
    if (rel && (rel.relkind === 'r' || rel.relkind === 'p')) {
      info.rows = await countRowsOn(c, schema, table);
      const family = await familyOids(c, rel.oid);
      info.refs = (await foreignKeys(c, family)).filter((k) => !family.includes(k.childOid));
      info.triggers = await userTriggers(c, family);
      const priv = await c.query<{ owner: boolean; replica: boolean }>(
        `SELECT pg_has_role(current_user, c.relowner, 'USAGE') AS owner,
                (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) ${server.versionNum >= 150000 ? `OR has_parameter_privilege('session_replication_role', 'SET')` : ''} AS replica
           FROM pg_class c WHERE c.oid = $1::oid`,
        [rel.oid],
      );
      info.mayAlter = priv.rows[0].owner || server.superuser;
      info.mayReplica = priv.rows[0].replica;
    }
    if (newTable) info.newTaken = Boolean(await findRelation(c, schema, newTable));
    return info;
  });
}

/** The table as it is now, for comparing with the restored one: undefined when it does not exist. */
export async function liveShape(
  conn: ConnectionSettings,
  schema: string,
  table: string,
): Promise<{ rows: number; columns: { name: string; generated: boolean }[]; partitioned: boolean; leaves: string[] } | undefined> {
  return withPg(conn, async (c) => {
    const rel = await findRelation(c, schema, table);
    if (!rel) return undefined;
    const rows = await countRowsOn(c, schema, table);
    const cols = await c.query<{ name: string; generated: boolean }>(
      `SELECT attname AS name, attgenerated <> '' AS generated FROM pg_attribute WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped`,
      [rel.oid],
    );
    const leaves = await c.query<{ name: string }>(
      `SELECT n.nspname || '.' || c.relname AS name FROM pg_partition_tree($1::oid::regclass) t JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.isleaf AND c.relkind = 'r'`,
      [rel.oid],
    );
    return { rows, columns: cols.rows, partitioned: rel.relkind === 'p', leaves: rel.relkind === 'p' ? leaves.rows.map((r) => r.name) : [] };
  });
}

/**
 * Where a table's rows are: in itself, or (partitioned) in its leaf partitions; leaves that hold no
 * rows of their own in a dump (foreign tables...) are listed apart. Undefined when it does not exist.
 */
export async function tableLeaves(conn: ConnectionSettings, schema: string, table: string): Promise<{ partitioned: boolean; leaves: Leaf[]; skipped: string[] } | undefined> {
  return withPg(conn, async (c) => {
    const rel = await findRelation(c, schema, table);
    if (!rel) return undefined;
    if (rel.relkind !== 'p') return { partitioned: false, leaves: [{ schema, table }], skipped: [] };
    const r = await c.query<{ schema: string; table: string; relkind: string }>(
      `SELECT n.nspname AS schema, c.relname AS table, c.relkind::text AS relkind
         FROM pg_partition_tree($1::oid::regclass) t JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE t.isleaf ORDER BY 1, 2`,
      [rel.oid],
    );
    return {
      partitioned: true,
      leaves: r.rows.filter((x) => x.relkind === 'r').map((x) => ({ schema: x.schema, table: x.table })),
      skipped: r.rows.filter((x) => x.relkind !== 'r').map((x) => `${x.schema}.${x.table} (relkind ${x.relkind})`),
    };
  });
}

/** The table's columns (collation only where it differs from the type's) and its row count. */
export async function tableColumnsAndRows(conn: ConnectionSettings, schema: string, table: string): Promise<{ rows: number; columns: Column[] }> {
  return withPg(conn, async (c) => {
    await c.query(`SET search_path = pg_catalog`);
    const cols = await c.query<{ name: string; type: string; not_null: boolean; generated: boolean; collation: string | null }>(
      `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null, a.attgenerated <> '' AS generated,
              CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END AS collation
         FROM pg_attribute a
         JOIN pg_type t ON t.oid = a.atttypid
         LEFT JOIN pg_collation co ON co.oid = a.attcollation
         LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
        WHERE a.attrelid = (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2)
          AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum`,
      [schema, table],
    );
    const rows = await countRowsOn(c, schema, table);
    return { rows, columns: cols.rows.map((r) => ({ name: r.name, type: r.type, notNull: r.not_null, generated: r.generated, collation: r.collation })) };
  });
}

/** The foreign keys of other tables that reference the table (or its partitions); none when it does not exist. */
export async function referencingKeys(conn: ConnectionSettings, schema: string, table: string): Promise<ForeignKey[]> {
  return withPg(conn, async (c) => {
    const rel = await findRelation(c, schema, table);
    if (!rel) return [];
    const family = await familyOids(c, rel.oid);
    return (await foreignKeys(c, family)).filter((k) => !family.includes(k.childOid) && family.includes(k.parentOid));
  });
}

/** The table's user triggers, and (when `withKeys`) every foreign key touching it; undefined when it does not exist. */
export async function triggersAndKeys(conn: ConnectionSettings, schema: string, table: string, withKeys: boolean): Promise<{ triggers: Trigger[]; fks: ForeignKey[] } | undefined> {
  return withPg(conn, async (c) => {
    const rel = await findRelation(c, schema, table);
    if (!rel) return undefined;
    const family = await familyOids(c, rel.oid);
    return { triggers: await userTriggers(c, family), fks: withKeys ? await foreignKeys(c, family) : [] };
  });
}

/** Whether a table of that name exists. */
export async function tableExists(conn: ConnectionSettings, schema: string, table: string): Promise<boolean> {
  return withPg(conn, async (c) => Boolean(await findRelation(c, schema, table)));
}
