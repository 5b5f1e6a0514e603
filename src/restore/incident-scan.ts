// Finding incidents in pg_waldump's lines, before any name is known: pure, fed one record at a
// time in WAL order, holding only the open transactions. What counts as an incident:
// - a committed transaction whose commit record drops relation files and which wrote no data
//   pages into a file it created (that would be VACUUM FULL, CLUSTER or REINDEX rewriting a
//   relation, not losing it): a TRUNCATE when it created new files, a DROP when it created
//   none. Known blind spots: VACUUM FULL of a one-page table, and ALTER TABLE rewrites
//   (which write rows, not pages), show as a TRUNCATE;
// - a Database DROP record (the directory is removed when that record is replayed, before
//   the commit, so "just before it" is before that record);
// - a committed transaction with at least `minRows` heap DELETE/UPDATE/HOT_UPDATE records on
//   one relation file (its subtransactions' records included).
// Aborted transactions are never incidents: replay undoes nothing they did.
import type { WalRecordLine } from '../postgres/programs/waldump.js';

/** A relation file: database oid and relfilenode (tablespace left out: names resolve by both). */
export interface RelFile {
  tablespace: string;
  database: string;
  relfilenode: string;
}

export type RawIncident =
  | {
      kind: 'drop' | 'truncate';
      xid: string;
      /** The commit record, and the record before it (replaying to there keeps everything but the commit). */
      lsn: string;
      before: string;
      micros: bigint;
      /** Files the commit removes. */
      dropped: RelFile[];
      /** Relation oids the commit invalidates (the dropped or truncated relations and their indexes). */
      oids: string[];
      /** The database of the dropped files. */
      database: string;
    }
  | { kind: 'drop-database'; xid: string; lsn: string; before: string; micros: bigint; database: string }
  | { kind: 'delete' | 'update'; xid: string; lsn: string; before: string; micros: bigint; file: RelFile; rows: number; deletes: number; updates: number };

interface OpenXact {
  /** Heap changes per relation file key ("spc/db/rfn"). */
  changes: Map<string, { deletes: number; updates: number }>;
  created: Set<string>;
  rewritten: Set<string>;
  dbDrops: { lsn: string; prev: string; database: string }[];
}

const BLKREF = /blkref #\d+: rel (\d+)\/(\d+)\/(\d+)/;
const CREATE = /^CREATE (?:base\/(\d+)\/(\d+)|global\/(\d+)|pg_tblspc\/(\d+)\/[^/]+\/(\d+)\/(\d+))/;
const DB_DROP = /^DROP dir (\d+)\/(\d+)/;
const COMMIT = /^COMMIT (\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d+))? UTC/;
const ABORT = /^ABORT /;

function key(f: RelFile): string {
  return `${f.tablespace}/${f.database}/${f.relfilenode}`;
}

function fileOf(k: string): RelFile {
  const [tablespace, database, relfilenode] = k.split('/');
  return { tablespace, database, relfilenode };
}

/** "base/5/16390", "pg_tblspc/16400/PG_15_202209061/5/16390" (global/ files are shared catalogs: never user data). */
export function parseRelPaths(text: string): RelFile[] {
  const out: RelFile[] = [];
  for (const m of text.matchAll(/(?:^|\s)(?:base\/(\d+)\/(\d+)|pg_tblspc\/(\d+)\/[^/\s]+\/(\d+)\/(\d+))/g)) {
    if (m[1]) out.push({ tablespace: '1663', database: m[1], relfilenode: m[2] });
    else out.push({ tablespace: m[3], database: m[4], relfilenode: m[5] });
  }
  return out;
}

export function commitMicros(desc: string): bigint | undefined {
  const c = COMMIT.exec(desc);
  if (!c) return undefined;
  const [, y, mo, d, h, mi, s, frac = ''] = c;
  const ms = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s));
  return BigInt(ms) * 1000n + BigInt(frac.slice(0, 6).padEnd(6, '0'));
}

/** The part of a commit's description after "label: " up to the next "; ". */
function section(desc: string, label: string): string {
  const i = desc.indexOf(`; ${label}: `);
  if (i < 0) return '';
  const rest = desc.slice(i + label.length + 4);
  const end = rest.indexOf('; ');
  return end < 0 ? rest : rest.slice(0, end);
}

export class IncidentScanner {
  private readonly open = new Map<string, OpenXact>();
  readonly incidents: RawIncident[] = [];
  /** Transactions whose commit or abort was seen (for the report: how much was read). */
  committed = 0;
  aborted = 0;

  constructor(private readonly minRows: number) {}

  private xact(xid: string): OpenXact {
    let x = this.open.get(xid);
    if (!x) {
      x = { changes: new Map(), created: new Set(), rewritten: new Set(), dbDrops: [] };
      this.open.set(xid, x);
    }
    return x;
  }

  feed(r: WalRecordLine): void {
    if (r.xid === '0') return;
    switch (r.rmgr) {
      case 'Heap': {
        const op = /^(DELETE|UPDATE|HOT_UPDATE) /.exec(r.desc)?.[1];
        if (!op) return;
        const b = BLKREF.exec(r.desc);
        if (!b) return;
        const k = `${b[1]}/${b[2]}/${b[3]}`;
        const x = this.xact(r.xid);
        const c = x.changes.get(k) ?? { deletes: 0, updates: 0 };
        if (op === 'DELETE') c.deletes++;
        else c.updates++;
        x.changes.set(k, c);
        return;
      }
      case 'Storage': {
        const c = CREATE.exec(r.desc);
        if (!c) return;
        const f: RelFile | undefined = c[1] ? { tablespace: '1663', database: c[1], relfilenode: c[2] } : c[4] ? { tablespace: c[4], database: c[5], relfilenode: c[6] } : undefined;
        if (f) this.xact(r.xid).created.add(key(f));
        return;
      }
      case 'XLOG': {
        // Whole pages written into a file this transaction created, past its first page: a
        // rewrite (VACUUM FULL, CLUSTER, REINDEX). A TRUNCATE writes only the first page of
        // each new, empty index (its metapage).
        if (!/^FPI/.test(r.desc)) return;
        const x = this.open.get(r.xid);
        if (!x) return;
        for (const b of r.desc.matchAll(/blkref #\d+: rel (\d+)\/(\d+)\/(\d+)(?: fork \w+)? blk (\d+)/g)) {
          if (b[4] !== '0') x.rewritten.add(`${b[1]}/${b[2]}/${b[3]}`);
        }
        return;
      }
      case 'Database': {
        const d = DB_DROP.exec(r.desc);
        if (d) this.xact(r.xid).dbDrops.push({ lsn: r.lsn, prev: r.prev, database: d[2] });
        return;
      }
      case 'Transaction':
        this.finish(r);
        return;
    }
  }

  private finish(r: WalRecordLine): void {
    if (ABORT.test(r.desc)) {
      this.aborted++;
      for (const s of [r.xid, ...section(r.desc, 'subxacts').split(' ').filter(Boolean)]) this.open.delete(s);
      return;
    }
    const micros = commitMicros(r.desc);
    if (micros === undefined) return;
    this.committed++;
    // A commit covers its subtransactions: their records carry their own xids.
    const mine: OpenXact[] = [];
    for (const s of [r.xid, ...section(r.desc, 'subxacts').split(' ').filter(Boolean)]) {
      const x = this.open.get(s);
      if (x) mine.push(x);
      this.open.delete(s);
    }
    if (!mine.length && !r.desc.includes('; rels: ')) return;
    const at = { xid: r.xid, lsn: r.lsn, before: r.prev, micros };

    for (const x of mine) {
      for (const d of x.dbDrops) this.incidents.push({ kind: 'drop-database', xid: r.xid, lsn: d.lsn, before: d.prev, micros, database: d.database });
    }
    const dropped = parseRelPaths(section(r.desc, 'rels'));
    if (dropped.length && !mine.some((x) => x.dbDrops.length)) {
      const created = new Set(mine.flatMap((x) => [...x.created]));
      const rewritten = mine.some((x) => [...x.rewritten].some((k) => created.has(k)));
      if (!rewritten) {
        const oids = [...section(r.desc, 'inval msgs').matchAll(/relcache (\d+)/g)].map((m) => m[1]);
        const byDb = new Map<string, RelFile[]>();
        for (const f of dropped) byDb.set(f.database, [...(byDb.get(f.database) ?? []), f]);
        for (const [database, files] of byDb) {
          const createdHere = [...created].some((k) => fileOf(k).database === database);
          this.incidents.push({ kind: createdHere ? 'truncate' : 'drop', ...at, dropped: files, oids: [...new Set(oids)], database });
        }
      }
    }
    const changes = new Map<string, { deletes: number; updates: number }>();
    for (const x of mine) {
      for (const [k, c] of x.changes) {
        const t = changes.get(k) ?? { deletes: 0, updates: 0 };
        changes.set(k, { deletes: t.deletes + c.deletes, updates: t.updates + c.updates });
      }
    }
    for (const [k, c] of changes) {
      const rows = c.deletes + c.updates;
      if (rows < this.minRows) continue;
      this.incidents.push({ kind: c.deletes >= c.updates ? 'delete' : 'update', ...at, file: fileOf(k), rows, deletes: c.deletes, updates: c.updates });
    }
  }
}
