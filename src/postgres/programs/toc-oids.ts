// What a custom-format dump knows of a database's catalog at the time of the dump: the oid of
// each table, index, sequence and materialized view with its name, and the database's own oid.
// A relation's oid never changes in its life (its relfilenode does, at each TRUNCATE or
// rewrite), so a dump taken at any time while a table lived names it, even after a DROP.
// `pg_restore --list` reads only the table of contents at the head of the archive: the dump
// is streamed into it and the stream is ended as soon as pg_restore has printed its listing.
import type { Readable } from 'node:stream';
import { loadExeca } from './execa-lazy.js';
import { findPgBinary } from '../binaries.js';

export interface TocRelation {
  oid: string;
  /** TABLE, INDEX, SEQUENCE, MATERIALIZED VIEW. */
  kind: string;
  schema: string;
  name: string;
}

export interface TocOids {
  database?: { oid: string; name: string };
  relations: Map<string, TocRelation>;
}

const KINDS = ['MATERIALIZED VIEW', 'TABLE', 'INDEX', 'SEQUENCE'];

/**
 * `123; 1259 16386 TABLE public events postgres` and `3355; 1262 16415 DATABASE - app postgres`.
 * Names are printed unquoted: the schema is taken as one word and the owner as the last.
 */
export function parseTocOids(listing: string): TocOids {
  const out: TocOids = { relations: new Map() };
  for (const line of listing.split('\n')) {
    const m = /^\d+;\s+(\d+)\s+(\d+)\s+(.*)$/.exec(line.trim());
    if (!m) continue;
    const [, catalog, oid, rest] = m;
    if (catalog === '1262' && rest.startsWith('DATABASE - ')) {
      const words = rest.slice('DATABASE - '.length).split(' ');
      if (words.length > 1) words.pop();
      out.database = { oid, name: words.join(' ') };
      continue;
    }
    if (catalog !== '1259') continue;
    const kind = KINDS.find((k) => rest.startsWith(`${k} `));
    if (!kind) continue;
    const words = rest.slice(kind.length + 1).split(' ');
    if (words.length < 3) continue;
    words.pop(); // owner
    out.relations.set(oid, { oid, kind, schema: words[0], name: words.slice(1).join(' ') });
  }
  return out;
}

/** The oids of a dump streamed from `body` (the stream is destroyed once the listing is read). */
export async function readTocOids(body: Readable, signal?: AbortSignal): Promise<TocOids> {
  const bin = await findPgBinary('pg_restore');
  const { execa } = await loadExeca();
  const child = execa(bin, ['--list', '--create'], {
    reject: false,
    extendEnv: false,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C' },
    stdin: 'pipe',
    ...(signal ? { cancelSignal: signal } : {}),
    maxBuffer: 64 * 1024 * 1024,
  });
  // pg_restore stops reading after the table of contents: the rest of the dump is not wanted.
  child.stdin?.on('error', () => {});
  body.on('error', () => {});
  body.pipe(child.stdin!);
  const r = await child;
  body.unpipe(child.stdin!);
  body.destroy();
  if (r.exitCode !== 0) throw new Error(`pg_restore --list could not read the dump: ${String(r.stderr ?? '').trim().split('\n').slice(-2).join(' | ')}`);
  return parseTocOids(String(r.stdout));
}
