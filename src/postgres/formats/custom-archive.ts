// pg_dump's custom archive format (-Fc), read as it streams past: the header, the table of
// contents, then the data blocks. Used on an uncompressed archive (--compress=0) to count each
// table's rows in the very bytes that are stored, so backup-logical needs no second scan of the
// tables (count(*) in the dump's snapshot doubled the server's work).
//
// Layout (pg_backup_archiver.c WriteHead/WriteToc, pg_backup_custom.c), archive versions 1.14
// (PostgreSQL 12-15) and 1.15 (16): "PGDMP", major, minor, rev, intSize, offSize, format; the
// compression (an int in 1.14, one byte in 1.15); seven ints of creation time; three strings;
// the TOC count and entries; then for every entry with data a block: type byte (1 = data,
// 3 = large objects), dump id (int), length-prefixed chunks ending with a 0 length (large
// objects: an oid, its chunks, a 0; a 0 oid ends the block).
// An int is a sign byte and intSize bytes, least significant first; a string is an int length
// (-1 for NULL) and that many bytes. COPY text has one line per row (a newline inside a value
// is written as "\n", so counting 0x0A bytes counts rows), and pg_dump ends each table's data
// with "\.\n\n\n": three newlines that are not rows.
import { open } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';

const KNOWN_VERSIONS = new Set(['1.14', '1.15']);
const BLK_DATA = 1;
const BLK_BLOBS = 3;
const COPY_END = Buffer.from('\\.\n\n\n'); // 5 bytes

export interface ArchiveTocEntry {
  dumpId: number;
  desc: string;
  namespace: string | null;
  tag: string | null;
}

export interface ArchiveRowCounts {
  /** "schema.table" -> rows, for every TABLE DATA block in the archive. */
  rows: Record<string, number>;
  /** Archive format version, e.g. "1.14". */
  version: string;
}

/** Why an archive could not be read for counting; the caller then counts another way. */
export class ArchiveFormatError extends Error {}

class NeedMore extends Error {}

/** Reads ints and strings from a byte array that may end early (NeedMore). */
class Cursor {
  pos = 0;
  constructor(
    readonly buf: Buffer,
    readonly intSize: number,
  ) {}
  byte(): number {
    if (this.pos >= this.buf.length) throw new NeedMore();
    return this.buf[this.pos++];
  }
  int(): number {
    if (this.pos + 1 + this.intSize > this.buf.length) throw new NeedMore();
    const negative = this.buf[this.pos] !== 0;
    let v = 0;
    for (let i = 0; i < this.intSize; i++) v += this.buf[this.pos + 1 + i] * 2 ** (8 * i);
    this.pos += 1 + this.intSize;
    return negative ? -v : v;
  }
  str(): string | null {
    const len = this.int();
    if (len < 0) return null;
    if (this.pos + len > this.buf.length) throw new NeedMore();
    const s = this.buf.toString('utf8', this.pos, this.pos + len);
    this.pos += len;
    return s;
  }
  skip(n: number): void {
    if (this.pos + n > this.buf.length) throw new NeedMore();
    this.pos += n;
  }
}

export interface Header {
  version: string;
  intSize: number;
  offSize: number;
  compressed: boolean;
  toc: ArchiveTocEntry[];
  /** Where each TOC entry's data state byte is, from the archive's first byte (its offset follows). */
  offsetFields: number[];
}

export type ArchiveLayout = { head: Header; blockAt: Map<number, number> };

function parseHead(buf: Buffer): { head: Header; end: number } {
  if (buf.length < 11) throw new NeedMore();
  if (buf.toString('latin1', 0, 5) !== 'PGDMP') throw new ArchiveFormatError('not a pg_dump custom archive (no PGDMP header)');
  const version = `${buf[5]}.${buf[6]}`;
  if (!KNOWN_VERSIONS.has(version)) throw new ArchiveFormatError(`archive version ${version} is not one this reader knows (1.14, 1.15)`);
  const intSize = buf[8];
  const offSize = buf[9];
  if (buf[10] !== 1) throw new ArchiveFormatError(`archive format ${buf[10]} is not custom (1)`);
  const c = new Cursor(buf, intSize);
  c.pos = 11;
  const compression = version === '1.14' ? c.int() : c.byte();
  for (let i = 0; i < 7; i++) c.int();
  c.str();
  c.str();
  c.str();
  const count = c.int();
  const toc: ArchiveTocEntry[] = [];
  const offsetFields: number[] = [];
  for (let i = 0; i < count; i++) {
    const dumpId = c.int();
    c.int(); // had a data dumper
    c.str(); // table oid
    c.str(); // oid
    const tag = c.str();
    const desc = c.str() ?? '';
    c.int(); // section
    c.str(); // definition
    c.str(); // drop statement
    c.str(); // copy statement
    const namespace = c.str();
    c.str(); // tablespace
    c.str(); // table access method
    c.str(); // owner
    c.str(); // "false" (WITH OIDS, long gone)
    while (c.str() !== null); // dependencies, NULL-terminated
    offsetFields.push(c.pos);
    c.skip(1 + offSize); // custom format: data state and offset
    toc.push({ dumpId, desc, namespace, tag });
  }
  return { head: { version, intSize, offSize, compressed: compression !== 0, toc, offsetFields }, end: c.pos };
}

/** Where the data walker is: expecting a block type, a dump id, a chunk length or oid, or inside a chunk. */
const At = { BlockType: 0, DumpId: 1, ChunkLength: 2, Chunk: 3, BlobOid: 4 } as const;
type At = (typeof At)[keyof typeof At];

/**
 * Counts each table's rows in an uncompressed custom archive fed to it chunk by chunk (`write`),
 * synchronously: it keeps no reference to a chunk after `write` returns, so a caller may reuse
 * one buffer for every read (the dump's worker thread, logical-dump-worker.ts). `end()` after the
 * last chunk; then `result()` gives the counts, or throws ArchiveFormatError when the archive is
 * not one it can read (compressed, another version).
 */
export class ArchiveWalker {
  /** Where each data block starts (its block type byte), by dump id, from the archive's first byte. */
  readonly blockAt = new Map<number, number>();
  /** Bytes of the archive before the current `pending`. */
  private fed = 0;
  private pending: Buffer = Buffer.alloc(0);
  private head: Header | undefined;
  private tables = new Map<number, string>();
  private counts = new Map<number, number>();
  // The walker's state, in fields rather than objects: pg_dump writes each row as a chunk of
  // its own, so this runs once per row and must not allocate.
  private at: At = At.BlockType;
  private blockType = 0;
  private blockStart = 0;
  private dumpId = 0;
  private blobs = false;
  private counted = false;
  private left = 0;
  private rows = 0;
  /** The last five bytes of the current table's data, to find COPY's end marker across chunks. */
  private readonly tail = new Uint8Array(COPY_END.length);
  private failure: ArchiveFormatError | undefined;
  private ended = false;

  /** countRows false: only find the blocks (any archive, compressed too), for fillDataOffsets. */
  constructor(private readonly countRows = true) {}

  /** Bytes fed so far. */
  get bytes(): number {
    return this.fed;
  }

  write(chunk: Buffer): void {
    if (this.failure) {
      this.fed += chunk.length;
      return;
    }
    try {
      this.consume(chunk);
    } catch (err) {
      this.failure = err instanceof ArchiveFormatError ? err : new ArchiveFormatError(`unreadable archive: ${(err as Error).message}`);
    }
  }

  end(): void {
    this.ended = true;
    if (!this.failure && (!this.head || this.pending.length > 0 || this.at !== At.BlockType)) {
      this.failure = new ArchiveFormatError('the archive ends inside a block');
    }
  }

  /** Why the archive could not be read, once known (undefined while it reads well). */
  problem(): ArchiveFormatError | undefined {
    return this.failure;
  }

  /** The header (TOC included) and where every data block starts; only after the end. */
  layout(): ArchiveLayout {
    if (!this.ended) throw new Error('the archive has not ended yet');
    if (this.failure) throw this.failure;
    return { head: this.head!, blockAt: this.blockAt };
  }

  /** The counts by "schema.table"; only after the end. */
  result(): ArchiveRowCounts {
    if (!this.ended) throw new Error('the archive has not ended yet');
    if (this.failure) throw this.failure;
    const rows: Record<string, number> = {};
    for (const [id, name] of this.tables) rows[name] = this.counts.get(id) ?? 0;
    return { rows, version: this.head!.version };
  }
  private consume(chunk: Buffer): void {
    let start = this.fed - this.pending.length;
    this.fed += chunk.length;
    let buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = Buffer.alloc(0);
    if (!this.head) {
      try {
        const { head, end } = parseHead(buf);
        if (head.compressed && this.countRows) throw new ArchiveFormatError('the archive is compressed (made without --compress=0)');
        this.head = head;
        if (this.countRows) for (const e of head.toc) if (e.desc === 'TABLE DATA' && e.tag !== null) this.tables.set(e.dumpId, `${e.namespace ?? ''}.${e.tag}`);
        buf = buf.subarray(end);
        start += end;
      } catch (err) {
        if (!(err instanceof NeedMore)) throw err;
        this.pending = buf === chunk ? Buffer.from(chunk) : buf;
        return;
      }
    }
    this.walk(buf, start);
  }

  /** Advances the block state machine over `buf`, keeping an incomplete int for the next chunk. */
  private walk(buf: Buffer, start: number): void {
    const intSize = this.head!.intSize;
    const len = buf.length;
    let pos = 0;
    while (pos < len) {
      if (this.at === At.Chunk) {
        const end = Math.min(pos + this.left, len);
        if (this.counted) {
          this.rows += countNewlines(buf, pos, end);
          this.keepTail(buf, pos, end);
        }
        this.left -= end - pos;
        pos = end;
        if (this.left === 0) this.at = At.ChunkLength;
        continue;
      }
      if (this.at === At.BlockType) {
        this.blockStart = start + pos;
        this.blockType = buf[pos++];
        if (this.blockType !== BLK_DATA && this.blockType !== BLK_BLOBS) throw new ArchiveFormatError(`unknown block type ${this.blockType}`);
        this.at = At.DumpId;
        continue;
      }
      if (pos + 1 + intSize > len) break;
      let v = intSize === 4 ? buf.readUInt32LE(pos + 1) : readUnsigned(buf, pos + 1, intSize);
      if (buf[pos] !== 0) v = -v;
      pos += 1 + intSize;
      if (this.at === At.DumpId) {
        this.dumpId = v;
        if (!this.blockAt.has(v)) this.blockAt.set(v, this.blockStart);
        this.blobs = this.blockType === BLK_BLOBS;
        this.counted = !this.blobs && this.tables.has(v);
        this.rows = 0;
        this.tail.fill(0);
        this.at = this.blobs ? At.BlobOid : At.ChunkLength;
      } else if (this.at === At.BlobOid) {
        this.at = v === 0 ? At.BlockType : At.ChunkLength;
      } else if (v < 0) {
        throw new ArchiveFormatError(`negative chunk length ${v}`);
      } else if (v > 0) {
        this.left = v;
        this.at = At.Chunk;
      } else if (this.blobs) {
        this.at = At.BlobOid;
      } else {
        if (this.counted) this.endTable();
        this.at = At.BlockType;
      }
    }
    if (pos < len) this.pending = Buffer.from(buf.subarray(pos));
  }

  private keepTail(buf: Buffer, start: number, end: number): void {
    const t = this.tail;
    if (end - start >= 5) {
      t[0] = buf[end - 5];
      t[1] = buf[end - 4];
      t[2] = buf[end - 3];
      t[3] = buf[end - 2];
      t[4] = buf[end - 1];
      return;
    }
    for (let i = start; i < end; i++) {
      t.copyWithin(0, 1);
      t[4] = buf[i];
    }
  }

  private endTable(): void {
    if (!COPY_END.equals(this.tail)) throw new ArchiveFormatError(`the data of ${this.tables.get(this.dumpId)} does not end with COPY's end marker`);
    this.counts.set(this.dumpId, (this.counts.get(this.dumpId) ?? 0) + this.rows - 3);
  }
}


/**
 * The same as a pass-through stream: the bytes pass unchanged; `result()` and `layout()` after
 * the end (a chunk is not reused once pushed, so the walker may see it as it is).
 */
export class ArchiveRowCounter extends Transform {
  private readonly walker: ArchiveWalker;

  constructor(countRows = true) {
    super();
    this.walker = new ArchiveWalker(countRows);
  }

  get blockAt(): Map<number, number> {
    return this.walker.blockAt;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.walker.write(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.walker.end();
    cb();
  }

  layout(): ArchiveLayout {
    return this.walker.layout();
  }

  result(): ArchiveRowCounts {
    return this.walker.result();
  }
}

function readUnsigned(buf: Buffer, at: number, size: number): number {
  let v = 0;
  for (let i = 0; i < size; i++) v += buf[at + i] * 2 ** (8 * i);
  return v;
}

/** Newlines in buf[start, end). indexOf may look past `end`, but only up to the next newline. */
function countNewlines(buf: Buffer, start: number, end: number): number {
  let n = 0;
  for (let i = buf.indexOf(10, start); i !== -1 && i < end; i = buf.indexOf(10, i + 1)) n++;
  return n;
}

/** pg_backup_custom.c's data states. */
const K_OFFSET_POS_NOT_SET = 1;
const K_OFFSET_POS_SET = 2;

/**
 * Writes each data block's position into the TOC of a custom archive file, as pg_dump does when it
 * writes to a file it can seek in. A dump streamed through a pipe (as backup-logical takes them)
 * has none, and `pg_restore --jobs N` then makes every worker read the archive from the start to
 * find its table: about twice pg_restore's time on pgbench -s 100 (bench/README.md). Only entries
 * marked "position not set" are changed; pg_restore checks the block id it finds at a position, so
 * a wrong one would be an error, never a wrong table. Returns how many entries were set.
 */
export async function fillDataOffsets(file: string, layout: ArchiveLayout): Promise<number> {
  const { head, blockAt } = layout;
  const fh = await open(file, 'r+');
  try {
    const field = Buffer.alloc(1 + head.offSize);
    let set = 0;
    for (let i = 0; i < head.toc.length; i++) {
      const at = blockAt.get(head.toc[i].dumpId);
      if (at === undefined) continue;
      const { bytesRead } = await fh.read(field, 0, 1, head.offsetFields[i]);
      if (bytesRead !== 1 || field[0] !== K_OFFSET_POS_NOT_SET) continue;
      field[0] = K_OFFSET_POS_SET;
      let v = at;
      for (let b = 0; b < head.offSize; b++) {
        field[1 + b] = v % 256;
        v = Math.floor(v / 256);
      }
      await fh.write(field, 0, field.length, head.offsetFields[i]);
      set++;
    }
    // No fsync: the file is a restore's scratch copy, deleted afterwards.
    return set;
  } finally {
    await fh.close();
  }
}

/**
 * The header and table of contents at the start of a custom archive file (read until they parse),
 * or undefined when it is not an archive this reader knows. With `blocks` (where each data block
 * starts, by dump id, as backup-logical recorded them in dump.json) it is what fillDataOffsets
 * takes, without reading the rest of the file.
 */
export async function readArchiveHead(file: string): Promise<Header | undefined> {
  const fh = await open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    for (let want = 64 * 1024; ; want *= 4) {
      const n = Math.min(want, size);
      const buf = Buffer.alloc(n);
      const { bytesRead } = await fh.read(buf, 0, n, 0);
      try {
        return parseHead(buf.subarray(0, bytesRead)).head;
      } catch (err) {
        if (err instanceof ArchiveFormatError) return undefined;
        if (!(err instanceof NeedMore) || n >= size) return undefined;
      }
    }
  } finally {
    await fh.close();
  }
}
