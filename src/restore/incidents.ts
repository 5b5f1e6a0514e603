// find-target: the incidents in the archived WAL of a window (DROP TABLE, TRUNCATE, DROP
// DATABASE, mass DELETE/UPDATE of committed transactions), named, each with the recovery
// target that stops just before it.
//
// Names. The WAL knows relations by number only. Relations that still exist are named by the
// live cluster's catalog (pg_filenode_relation for a relfilenode, pg_class for an oid; a
// TRUNCATE keeps the table's oid, which its commit record lists). A dropped relation is named
// by the newest logical dump of its database in the repository: the dump's table of contents
// carries each relation's oid, which never changes in a relation's life, and the commit that
// dropped it lists that oid. A table created and dropped between two dumps stays unnamed
// (shown by oid); a scratch cluster recovered to just before the incident would name it, at
// the cost of a restore. Reading pg_class rows out of full-page images was rejected: they are
// only in the WAL after a checkpoint touched the page, so often absent.
//
// The target. `lsn:<start of the record before the incident>`: replay with that target
// (recovery_target_inclusive on, pitr's default) stops right after the last record before
// the commit (or, for DROP DATABASE, before the record that removes the directory), so
// everything committed before the incident is kept and the incident is not. With pitr's
// --exclusive it stops one record earlier, still before the incident. Replay then stops
// inside the incident's transaction: a server left paused there still holds the
// AccessExclusiveLock a DROP or TRUNCATE took (reads of that table wait) until it is
// promoted, which ends the transaction as aborted. So recover with --target-action promote,
// or promote before reading the table (a scratch cluster must promote before copying it).
import type { ConnectionSettings } from '../config/connection.js';
import { openRepository, type Repository } from '../repo/repository.js';
import type { Catalog, DumpEntry } from '../repo/catalog.js';
import { databasesByOid, relationNames, type RelationName } from '../postgres/relation-names.js';
import { pipeline } from 'node:stream';
import { readTocOids, type TocOids } from '../postgres/programs/toc-oids.js';
import { decompressStream } from '../repo/codec.js';
import { checkRepositoryIdentity, readRepositoryIdentity } from '../repo/identity.js';
import { runningServerIdentity } from '../postgres/identity.js';
import { IncidentScanner, type RawIncident, type RelFile } from './incident-scan.js';
import { scanWindowWal } from './incident-wal.js';
import { formatMicrosIso } from './target.js';

export type IncidentKind = 'drop-table' | 'truncate' | 'drop-database' | 'delete' | 'update';

export interface Incident {
  kind: IncidentKind;
  database: string;
  /** schema.table; absent for drop-database, or when no catalog and no dump names it (see `detail`). */
  relation?: string;
  xid: string;
  /** Where the incident is in the WAL: the commit record (the Database DROP record for drop-database). */
  lsn: string;
  /** Commit time, ISO 8601 UTC to the microsecond. */
  time: string;
  /** Rows deleted or updated; null where the WAL does not say (DROP, TRUNCATE). */
  rows: number | null;
  /** What to pass to pitr --target or table-restore --at to get everything just before it. */
  target: string;
  /** How the name was found, or why it was not. */
  detail?: string;
}

export interface FindIncidentsOptions {
  repoUrl?: string;
  env: NodeJS.ProcessEnv;
  /** The live cluster, to name relations (and to check it is the repository's cluster). */
  connection: ConnectionSettings;
  since: Date;
  until: Date;
  /** Rows one transaction must delete or update in one relation (default 100). */
  minRows?: number;
  /** Only incidents of this relation (name, or schema.name). */
  table?: string;
  signal?: AbortSignal;
  onSegment?: (name: string, done: number, total: number) => void;
}

export interface IncidentReport {
  incidents: Incident[];
  segments: string[];
  timeline: number;
  problems: string[];
}

/** The incidents of a window, newest first. */
export async function findIncidents(opts: FindIncidentsOptions): Promise<Incident[]> {
  return (await scanIncidents(opts)).incidents;
}

export async function scanIncidents(opts: FindIncidentsOptions): Promise<IncidentReport> {
  const repo = await openRepository(opts.repoUrl, opts.env);
  try {
    // Names come from the live cluster: it must be the cluster whose WAL this is.
    const record = await readRepositoryIdentity(repo.store);
    if (record) checkRepositoryIdentity(repo.store, record, (await runningServerIdentity(opts.connection)).systemIdentifier);
    const catalog = await repo.catalog();
    const scanner = new IncidentScanner(opts.minRows ?? 100);
    const wal = await scanWindowWal(repo.store, catalog, opts, (r) => scanner.feed(r), { signal: opts.signal, onSegment: opts.onSegment });
    const from = BigInt(opts.since.getTime()) * 1000n;
    const to = BigInt(opts.until.getTime()) * 1000n;
    const raw = scanner.incidents.filter((i) => i.micros >= from && i.micros <= to);
    let incidents = await nameIncidents(raw, { repo, catalog, connection: opts.connection, signal: opts.signal });
    if (opts.table) incidents = incidents.filter((i) => matchesTable(i.relation, opts.table!));
    incidents.sort((a, b) => (a.time < b.time ? 1 : a.time > b.time ? -1 : 0));
    return { incidents, segments: wal.segments, timeline: wal.timeline, problems: wal.problems };
  } finally {
    await repo.close();
  }
}

export function matchesTable(relation: string | undefined, table: string): boolean {
  if (!relation) return false;
  return relation === table || relation.slice(relation.indexOf('.') + 1) === table;
}

const TABLE_KINDS = new Set(['r', 'p', 'm']);
const TOC_TABLE_KINDS = new Set(['TABLE', 'MATERIALIZED VIEW']);
const SYSTEM_SCHEMAS = new Set(['pg_catalog', 'pg_toast', 'information_schema']);

interface Namer {
  repo: Repository;
  catalog: Catalog;
  connection: ConnectionSettings;
  signal?: AbortSignal;
}

async function nameIncidents(raw: RawIncident[], n: Namer): Promise<Incident[]> {
  const databases = await databasesByOid(n.connection);
  const dumps = new DumpNames(n);
  // Per live database: the relations its incidents mention, in one connection.
  const live = new Map<string, { byFile: Map<string, RelationName>; byOid: Map<string, RelationName> }>();
  for (const db of new Set(raw.filter((r) => r.kind !== 'drop-database').map((r) => dbOf(r)))) {
    const name = databases.get(db);
    if (!name) continue;
    const mine = raw.filter((r) => r.kind !== 'drop-database' && dbOf(r) === db);
    const files = mine.flatMap((r) => (r.kind === 'delete' || r.kind === 'update' ? [r.file] : []));
    const oids = mine.flatMap((r) => (r.kind === 'drop' || r.kind === 'truncate' ? r.oids : []));
    live.set(db, await relationNames({ ...n.connection, database: name }, files, oids));
  }

  const out: Incident[] = [];
  const base = (r: RawIncident) => ({ xid: r.xid, lsn: r.lsn, time: formatMicrosIso(r.micros), target: `lsn:${r.before}` });
  for (const r of raw) {
    if (r.kind === 'drop-database') {
      const toc = databases.has(r.database) ? undefined : await dumps.forDatabaseOid(r.database);
      const name = databases.get(r.database) ?? toc?.database?.name;
      out.push({ kind: 'drop-database', database: name ?? `oid ${r.database}`, rows: null, ...base(r), detail: name ? undefined : 'no dump in the repository names this database' });
      continue;
    }
    const dbOid = dbOf(r);
    const dbName = databases.get(dbOid) ?? (await dumps.forDatabaseOid(dbOid))?.database?.name ?? `oid ${dbOid}`;
    const names = live.get(dbOid);
    if (r.kind === 'truncate' || r.kind === 'drop') {
      const tables: { relation: string; detail?: string }[] = [];
      const unnamed: string[] = [];
      for (const oid of r.oids) {
        const l = names?.byOid.get(oid);
        if (l) {
          if (TABLE_KINDS.has(l.kind) && !SYSTEM_SCHEMAS.has(l.schema)) tables.push({ relation: `${l.schema}.${l.name}` });
          continue;
        }
        const t = (await dumps.forDatabase(dbName, dbOid, r.micros))?.relations.get(oid);
        if (t) {
          if (TOC_TABLE_KINDS.has(t.kind) && !SYSTEM_SCHEMAS.has(t.schema)) tables.push({ relation: `${t.schema}.${t.name}`, detail: `named by the dump ${dumps.usedId(dbOid) ?? ''}`.trim() });
          continue;
        }
        unnamed.push(oid);
      }
      const kind: IncidentKind = r.kind === 'truncate' ? 'truncate' : 'drop-table';
      for (const t of tables) out.push({ kind, database: dbName, relation: t.relation, rows: null, ...base(r), detail: t.detail });
      if (!tables.length && unnamed.length) {
        out.push({ kind, database: dbName, rows: null, ...base(r), detail: `relation oid ${unnamed.sort((a, b) => Number(a) - Number(b))[0]} (files ${r.dropped.map(filePath).join(', ')}): not in the live catalog and no dump of ${dbName} names it` });
      }
      continue;
    }
    if (!isChange(r)) continue;
    // delete / update: the file now, or the table a later TRUNCATE or DROP in the window took it from.
    const l = names?.byFile.get(`${r.file.tablespace}/${r.file.relfilenode}`);
    if (l && (SYSTEM_SCHEMAS.has(l.schema) || !TABLE_KINDS.has(l.kind))) continue;
    let relation = l ? `${l.schema}.${l.name}` : undefined;
    let detail: string | undefined;
    if (!relation) {
      const later = out.find((o) => (o.kind === 'truncate' || o.kind === 'drop-table') && o.relation && raw.some((x) => (x.kind === 'truncate' || x.kind === 'drop') && x.xid === o.xid && x.dropped.some((f) => sameFile(f, r.file))));
      relation = later?.relation;
      detail = later ? `its file was later removed by ${later.kind} (transaction ${later.xid})` : `file ${filePath(r.file)}: no longer in the live catalog`;
    }
    out.push({ kind: r.kind, database: dbName, relation, rows: r.rows, ...base(r), detail });
  }
  return out;
}

type Change = Extract<RawIncident, { kind: 'delete' | 'update' }>;

function isChange(r: RawIncident): r is Change {
  return r.kind === 'delete' || r.kind === 'update';
}

function dbOf(r: RawIncident): string {
  return isChange(r) ? r.file.database : r.database;
}

function sameFile(a: RelFile, b: RelFile): boolean {
  return a.tablespace === b.tablespace && a.database === b.database && a.relfilenode === b.relfilenode;
}

function filePath(f: RelFile): string {
  return f.tablespace === '1663' ? `base/${f.database}/${f.relfilenode}` : `pg_tblspc/${f.tablespace}/${f.database}/${f.relfilenode}`;
}

/** Tables of contents of the repository's dumps, read once each, newest first. */
class DumpNames {
  private readonly cache = new Map<string, TocOids | undefined>();
  private readonly used = new Map<string, string>();
  constructor(private readonly n: Namer) {}

  usedId(dbOid: string): string | undefined {
    return this.used.get(dbOid);
  }

  private complete(database?: string): DumpEntry[] {
    return this.n.catalog.dumps
      .filter((d) => d.complete && d.meta?.object && (database === undefined || d.database === database))
      .sort((a, b) => String(b.meta?.stopTime ?? b.id).localeCompare(String(a.meta?.stopTime ?? a.id)));
  }

  private async toc(d: DumpEntry): Promise<TocOids | undefined> {
    const k = `${d.database}/${d.id}`;
    if (!this.cache.has(k)) {
      try {
        const body = await this.n.repo.getVerified(this.n.repo.dumpKey(d.database, d.id, d.meta!.object!), d.meta?.sha256, this.n.signal);
        // Dumps are stored in the repository's codec around the archive (dump.json says which; none before).
        const codec = d.meta?.compression;
        this.cache.set(k, await readTocOids(codec && codec !== 'none' ? pipeline(body, decompressStream(codec), () => {}) : body, this.n.signal));
      } catch {
        this.cache.set(k, undefined); // a dump that cannot be read names nothing; the incident stays listed by number
      }
    }
    return this.cache.get(k);
  }

  /** The newest dump of `database` (by name) taken before the incident, else the newest; it must be of the same database oid. */
  async forDatabase(database: string, dbOid: string, micros: bigint): Promise<TocOids | undefined> {
    const all = this.complete(database);
    const before = all.filter((d) => d.meta?.stopTime && BigInt(Date.parse(d.meta.stopTime)) * 1000n <= micros);
    for (const d of [...before, ...all.filter((x) => !before.includes(x))]) {
      const t = await this.toc(d);
      if (t?.database?.oid === dbOid) {
        this.used.set(dbOid, `${d.database}/${d.id}`);
        return t;
      }
    }
    return undefined;
  }

  /** A dump whose database had this oid (a dropped database). */
  async forDatabaseOid(dbOid: string): Promise<TocOids | undefined> {
    const seen = new Set<string>();
    for (const d of this.complete()) {
      if (seen.has(d.database)) continue;
      const t = await this.toc(d);
      if (t?.database?.oid === dbOid) return t;
      seen.add(d.database);
    }
    return undefined;
  }
}
