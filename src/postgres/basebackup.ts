// pg_basebackup as a stream, and the formats it produces, read as they flow past:
// - a tar reader (512-byte headers; file contents are handed on in the chunks they arrive in,
//   never buffered), so the backup can be checked and its backup_manifest lifted out while it
//   streams to the repository;
// - backup_label (start LSN, checkpoint, start time);
// - backup_manifest, read line by line: its own SHA-256, the WAL range, and per-file checksums
//   (CRC32C by default) that prove a stored backup holds what the server sent.
// Plus the server-side readiness queries and a replication-protocol probe (IDENTIFY_SYSTEM), so
// the procedure can refuse up front with a message that says what to change.
import { createHash, type Hash } from 'node:crypto';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { execa } from 'execa';
import pg from 'pg';
import type { ConnectionSettings } from '../config/connection.js';
import { findPgBinary } from './binaries.js';
import { connectPg, resolveConnection, translateConnectError, withPg } from './client.js';
import { libpqEnv } from './libpq.js';

// ---------------------------------------------------------------------------------------------
// Tar

export type TarEntryType = 'file' | 'directory' | 'symlink' | 'hardlink' | 'other';

export interface TarEntry {
  /** Normalised: no leading "./", no trailing "/". */
  name: string;
  type: TarEntryType;
  size: number;
  mode: number;
  linkName?: string;
}

/** Receives one entry's contents, in order, as they stream past. */
export interface TarEntrySink {
  data(chunk: Buffer): void;
  end(): void;
}

export class TarFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TarFormatError';
  }
}

const BLOCK = 512;
const MAX_META_ENTRY = 1024 * 1024; // GNU long names and pax headers: small by nature

export function normalizeTarPath(name: string): string {
  let n = name;
  while (n.startsWith('./')) n = n.slice(2);
  while (n.length > 1 && n.endsWith('/')) n = n.slice(0, -1);
  return n === '.' ? '' : n;
}

function cString(buf: Buffer, start: number, len: number): string {
  const field = buf.subarray(start, start + len);
  const nul = field.indexOf(0);
  return (nul >= 0 ? field.subarray(0, nul) : field).toString('utf8');
}

/** Octal (NUL/space terminated) or, when the high bit of the first byte is set, base-256 (GNU, for sizes >= 8 GiB). */
function tarNumber(buf: Buffer, start: number, len: number, what: string, offset: number): number {
  if (buf[start] & 0x80) {
    let v = buf[start] & 0x7f;
    for (let i = start + 1; i < start + len; i++) v = v * 256 + buf[i];
    if (!Number.isSafeInteger(v)) throw new TarFormatError(`tar header at byte ${offset}: ${what} is too large`);
    return v;
  }
  const text = cString(buf, start, len).trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new TarFormatError(`tar header at byte ${offset}: ${what} "${text}" is not an octal number`);
  return parseInt(text, 8);
}

function headerChecksumOk(h: Buffer, offset: number): boolean {
  const recorded = tarNumber(h, 148, 8, 'checksum', offset);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : h[i];
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  return recorded === unsigned || recorded === signed;
}

function isZeroBlock(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/**
 * Reads a tar stream pushed to it chunk by chunk. For each entry it calls `onEntry`, which may
 * return a sink for the entry's contents. Memory stays at one header block plus pending GNU/pax
 * name records, whatever the archive's size. Throws TarFormatError on a corrupt header.
 */
export class TarReader {
  private state: 'header' | 'data' | 'padding' | 'end' = 'header';
  private readonly header = Buffer.alloc(BLOCK);
  private headerFill = 0;
  private remaining = 0;
  private padding = 0;
  private sink: TarEntrySink | undefined;
  private meta: { type: string; chunks: Buffer[]; size: number } | undefined;
  private longName: string | undefined;
  private longLink: string | undefined;
  private pax: Record<string, string> = {};
  private consumed = 0;
  /** Entries seen (files, directories, links; not GNU/pax records). */
  entries = 0;

  constructor(private readonly onEntry: (entry: TarEntry) => TarEntrySink | undefined) {}

  /** The end-of-archive marker (a zero block) has been seen. */
  get complete(): boolean {
    return this.state === 'end';
  }

  get bytesRead(): number {
    return this.consumed;
  }

  write(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      switch (this.state) {
        case 'header': {
          const n = Math.min(BLOCK - this.headerFill, chunk.length - pos);
          chunk.copy(this.header, this.headerFill, pos, pos + n);
          this.headerFill += n;
          pos += n;
          this.consumed += n;
          if (this.headerFill === BLOCK) {
            this.headerFill = 0;
            this.readHeader();
          }
          break;
        }
        case 'data': {
          const n = Math.min(this.remaining, chunk.length - pos);
          const part = chunk.subarray(pos, pos + n);
          if (this.meta) {
            this.meta.chunks.push(Buffer.from(part));
          } else {
            this.sink?.data(part);
          }
          this.remaining -= n;
          pos += n;
          this.consumed += n;
          if (this.remaining === 0) {
            if (this.padding > 0) this.state = 'padding';
            else this.finishEntry();
          }
          break;
        }
        case 'padding': {
          const n = Math.min(this.padding, chunk.length - pos);
          this.padding -= n;
          pos += n;
          this.consumed += n;
          if (this.padding === 0) this.finishEntry();
          break;
        }
        case 'end': {
          // After the end marker only zero padding may follow.
          const rest = chunk.subarray(pos);
          if (!isZeroBlock(rest)) throw new TarFormatError(`data after the tar end-of-archive marker (at byte ${this.consumed})`);
          this.consumed += rest.length;
          pos = chunk.length;
          break;
        }
      }
    }
  }

  /** Call at the end of the stream: throws when the archive stopped before its end marker. */
  end(): void {
    if (this.state !== 'end') {
      throw new TarFormatError(
        `the tar stream ended after ${this.consumed} bytes without its end-of-archive marker${this.state === 'data' || this.state === 'padding' ? ', in the middle of a file' : ''}: the archive is truncated`,
      );
    }
  }

  private readHeader(): void {
    const h = this.header;
    const at = this.consumed - BLOCK;
    if (isZeroBlock(h)) {
      if (this.meta || this.longName !== undefined || Object.keys(this.pax).length) throw new TarFormatError(`tar archive ends right after a long-name or pax record (byte ${at})`);
      this.state = 'end';
      return;
    }
    if (!headerChecksumOk(h, at)) throw new TarFormatError(`tar header at byte ${at} has a wrong checksum: the archive is corrupt`);
    const typeflag = String.fromCharCode(h[156] || 0x30);
    let size = tarNumber(h, 124, 12, 'size', at);
    const padding = (BLOCK - (size % BLOCK)) % BLOCK;

    if (typeflag === 'L' || typeflag === 'K' || typeflag === 'x' || typeflag === 'g') {
      if (size > MAX_META_ENTRY) throw new TarFormatError(`tar ${typeflag} record at byte ${at} is implausibly large (${size} bytes)`);
      this.meta = { type: typeflag, chunks: [], size };
      this.startData(size, padding);
      return;
    }

    const magic = h.subarray(257, 263).toString('latin1');
    const prefix = magic === 'ustar\0' ? cString(h, 345, 155) : '';
    const rawName = cString(h, 0, 100);
    const name = this.pax.path ?? this.longName ?? (prefix ? `${prefix}/${rawName}` : rawName);
    const linkName = this.pax.linkpath ?? this.longLink ?? cString(h, 157, 100);
    if (this.pax.size !== undefined && /^\d+$/.test(this.pax.size)) size = Number(this.pax.size);
    this.longName = undefined;
    this.longLink = undefined;
    this.pax = {};

    const type: TarEntryType =
      typeflag === '0' || typeflag === '7' ? 'file' : typeflag === '5' ? 'directory' : typeflag === '2' ? 'symlink' : typeflag === '1' ? 'hardlink' : 'other';
    // Links and directories carry no data, whatever their size field says.
    if (type !== 'file' && type !== 'other') size = 0;
    const entry: TarEntry = { name: normalizeTarPath(name), type, size, mode: tarNumber(h, 100, 8, 'mode', at) };
    if (type === 'symlink' || type === 'hardlink') entry.linkName = linkName;
    this.entries++;
    this.sink = this.onEntry(entry);
    this.startData(size, (BLOCK - (size % BLOCK)) % BLOCK);
  }

  private startData(size: number, padding: number): void {
    this.remaining = size;
    this.padding = padding;
    if (size > 0) this.state = 'data';
    else if (padding > 0) this.state = 'padding';
    else this.finishEntry();
  }

  private finishEntry(): void {
    this.state = 'header';
    const meta = this.meta;
    if (meta) {
      this.meta = undefined;
      const body = Buffer.concat(meta.chunks);
      if (meta.type === 'L') this.longName = cString(body, 0, body.length);
      else if (meta.type === 'K') this.longLink = cString(body, 0, body.length);
      else if (meta.type === 'x') this.pax = parsePax(body);
      return; // 'g' (global pax): nothing we need
    }
    const sink = this.sink;
    this.sink = undefined;
    sink?.end();
  }
}

function parsePax(body: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = 0;
  while (pos < body.length) {
    const space = body.indexOf(0x20, pos);
    if (space < 0) break;
    const len = Number(body.subarray(pos, space).toString('latin1'));
    if (!Number.isInteger(len) || len <= 0) break;
    const record = body.subarray(space + 1, pos + len - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1);
    pos += len;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Checksums used by backup manifests

const CRC32C_TABLE = (() => {
  const t = new Uint32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  for (let i = 0; i < 256; i++) for (let s = 1; s < 8; s++) t[s * 256 + i] = (t[(s - 1) * 256 + i] >>> 8) ^ t[t[(s - 1) * 256 + i] & 0xff];
  return t;
})();

/** CRC-32C (Castagnoli), slicing by 8: about 300 MB/s in plain JavaScript. */
export class Crc32c {
  private crc = 0xffffffff;

  update(b: Buffer): this {
    const T = CRC32C_TABLE;
    let crc = this.crc;
    let i = 0;
    const n = b.length;
    for (; i + 8 <= n; i += 8) {
      const a = (b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)) ^ crc;
      crc =
        T[1792 + (a & 0xff)] ^
        T[1536 + ((a >>> 8) & 0xff)] ^
        T[1280 + ((a >>> 16) & 0xff)] ^
        T[1024 + (a >>> 24)] ^
        T[768 + b[i + 4]] ^
        T[512 + b[i + 5]] ^
        T[256 + b[i + 6]] ^
        T[b[i + 7]];
    }
    for (; i < n; i++) crc = T[(crc ^ b[i]) & 0xff] ^ (crc >>> 8);
    this.crc = crc >>> 0;
    return this;
  }

  /** As backup manifests print it: the 4 bytes of the (little-endian) value, in hex. */
  digestHex(): string {
    const out = Buffer.alloc(4);
    out.writeUInt32LE((~this.crc) >>> 0);
    return out.toString('hex');
  }
}

export interface FileChecksummer {
  update(chunk: Buffer): void;
  digestHex(): string;
}

/** A checksummer for a manifest's Checksum-Algorithm, or undefined for NONE / unknown ones. */
export function manifestChecksummer(algorithm: string): FileChecksummer | undefined {
  const a = algorithm.toUpperCase();
  if (a === 'CRC32C') return new Crc32c();
  if (a === 'SHA224' || a === 'SHA256' || a === 'SHA384' || a === 'SHA512') {
    const h: Hash = createHash(a.toLowerCase());
    return { update: (c) => void h.update(c), digestHex: () => h.digest('hex') };
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// backup_label

export interface BackupLabel {
  startLsn?: string;
  startWalFile?: string;
  checkpointLsn?: string;
  backupMethod?: string;
  backupFrom?: string;
  /** START TIME as written, e.g. "2026-11-24 16:24:18 UTC". */
  startTimeText?: string;
  /** Parsed when its zone is UTC/GMT or a numeric offset. */
  startTime?: Date;
  label?: string;
  startTimeline?: number;
}

export function parseBackupLabel(text: string): BackupLabel {
  const out: BackupLabel = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z ]+): (.*)$/.exec(line.trim());
    if (!m) continue;
    const [, key, value] = m;
    switch (key) {
      case 'START WAL LOCATION': {
        const w = /^([0-9A-F]+\/[0-9A-F]+)(?: \(file ([0-9A-F]{24})\))?/i.exec(value);
        if (w) {
          out.startLsn = w[1].toUpperCase();
          out.startWalFile = w[2];
        }
        break;
      }
      case 'CHECKPOINT LOCATION':
        out.checkpointLsn = value.trim().toUpperCase();
        break;
      case 'BACKUP METHOD':
        out.backupMethod = value.trim();
        break;
      case 'BACKUP FROM':
        out.backupFrom = value.trim();
        break;
      case 'START TIME':
        out.startTimeText = value.trim();
        out.startTime = parseServerTime(value.trim());
        break;
      case 'LABEL':
        out.label = value;
        break;
      case 'START TIMELINE':
        out.startTimeline = Number(value.trim());
        break;
    }
  }
  return out;
}

/** "2026-11-24 16:24:18 UTC" / "... +02" / "... +0530"; undefined for zone abbreviations we cannot resolve. */
export function parseServerTime(text: string): Date | undefined {
  const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?)(?: (\S+))?$/.exec(text);
  if (!m) return undefined;
  const iso = `${m[1]}T${m[2]}`;
  const zone = m[3];
  let d: Date;
  if (!zone || zone === 'UTC' || zone === 'GMT' || zone === 'Z') d = new Date(`${iso}Z`);
  else if (/^[+-]\d\d(:?\d\d)?$/.test(zone)) d = new Date(iso + (zone.length === 3 ? `${zone}:00` : zone.includes(':') ? zone : `${zone.slice(0, 3)}:${zone.slice(3)}`));
  else return undefined;
  return Number.isNaN(d.getTime()) ? undefined : d;
}

// ---------------------------------------------------------------------------------------------
// backup_manifest

export interface ManifestFile {
  path: string;
  size: number;
  algorithm: string;
  checksum?: string;
}

export interface WalRange {
  timeline: number;
  startLsn: string;
  endLsn: string;
}

export interface ManifestSummary {
  version: number;
  /** PostgreSQL 17+ (manifest version 2) records it. */
  systemIdentifier?: string;
  fileCount: number;
  /** Sum of the listed files' sizes. */
  totalSize: number;
  walRanges: WalRange[];
  /** The manifest's own SHA-256 (Manifest-Checksum), checked. */
  manifestChecksum: string;
  /** Size of the manifest in bytes. */
  bytes: number;
}

export class ManifestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ManifestError';
  }
}

/**
 * Reads a backup_manifest pushed to it chunk by chunk, one line at a time (PostgreSQL writes one
 * file per line), hashing it as it goes so that its Manifest-Checksum is checked at the end.
 * With `keepFiles` the file list is kept (memory grows with the number of files, not their size).
 */
export class ManifestReader {
  private readonly hash = createHash('sha256');
  private pending: Buffer[] = [];
  private section: 'head' | 'files' | 'wal' | 'other' = 'head';
  private expectedChecksum: string | undefined;
  private lineNo = 0;
  private bytes = 0;
  readonly files = new Map<string, ManifestFile>();
  private readonly summary: ManifestSummary = { version: 0, fileCount: 0, totalSize: 0, walRanges: [], manifestChecksum: '', bytes: 0 };

  constructor(private readonly opts: { keepFiles?: boolean } = {}) {}

  write(chunk: Buffer): void {
    this.bytes += chunk.length;
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      const piece = chunk.subarray(start, nl);
      const line = this.pending.length ? Buffer.concat([...this.pending, piece]) : piece;
      this.pending = [];
      this.line(line, true);
      start = nl + 1;
    }
    if (start < chunk.length) {
      this.pending.push(Buffer.from(chunk.subarray(start)));
      if (this.pending.reduce((n, b) => n + b.length, 0) > 64 * 1024 * 1024) throw new ManifestError('backup_manifest has a line longer than 64 MiB: it is not a PostgreSQL backup manifest');
    }
  }

  end(): ManifestSummary {
    if (this.pending.length) {
      const line = Buffer.concat(this.pending);
      this.pending = [];
      if (line.toString('utf8').trim()) this.line(line, false);
    }
    if (!this.summary.version) throw new ManifestError('backup_manifest does not start with "PostgreSQL-Backup-Manifest-Version": it is not a PostgreSQL backup manifest');
    if (this.expectedChecksum === undefined) throw new ManifestError('backup_manifest has no Manifest-Checksum line: it is truncated');
    const actual = this.hash.digest('hex');
    if (actual !== this.expectedChecksum) {
      throw new ManifestError(`backup_manifest is corrupt: its contents hash to ${actual}, its Manifest-Checksum says ${this.expectedChecksum}`);
    }
    this.summary.manifestChecksum = actual;
    this.summary.bytes = this.bytes;
    return this.summary;
  }

  private line(raw: Buffer, hadNewline: boolean): void {
    this.lineNo++;
    const text = raw.toString('utf8');
    if (this.expectedChecksum !== undefined) {
      if (text.trim()) throw new ManifestError(`backup_manifest has data after its Manifest-Checksum (line ${this.lineNo})`);
      return;
    }
    const sum = /^"Manifest-Checksum": "([0-9a-f]{64})"\}\s*$/.exec(text);
    if (sum) {
      this.expectedChecksum = sum[1];
      return;
    }
    // Everything before the Manifest-Checksum line is covered by it, newlines included.
    this.hash.update(raw);
    if (hadNewline) this.hash.update('\n');

    const t = text.trim();
    if (this.lineNo === 1) {
      const v = /"PostgreSQL-Backup-Manifest-Version":\s*(\d+)/.exec(t);
      if (!v) throw new ManifestError('backup_manifest does not start with "PostgreSQL-Backup-Manifest-Version": it is not a PostgreSQL backup manifest');
      this.summary.version = Number(v[1]);
      return;
    }
    const sysid = /^"System-Identifier":\s*(\d+),?$/.exec(t);
    if (sysid) {
      this.summary.systemIdentifier = sysid[1];
      return;
    }
    if (t === '"Files": [') {
      this.section = 'files';
      return;
    }
    if (t === '"WAL-Ranges": [') {
      this.section = 'wal';
      return;
    }
    if (t === '],' || t === ']') {
      this.section = 'other';
      return;
    }
    if (!t.startsWith('{')) return;
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(t.endsWith(',') ? t.slice(0, -1) : t) as Record<string, unknown>;
    } catch {
      throw new ManifestError(`backup_manifest line ${this.lineNo} is not valid JSON: ${t.slice(0, 120)}`);
    }
    if (this.section === 'files') {
      const p = typeof obj.Path === 'string' ? obj.Path : typeof obj['Encoded-Path'] === 'string' ? Buffer.from(obj['Encoded-Path'] as string, 'hex').toString('utf8') : undefined;
      const size = obj.Size;
      if (p === undefined || typeof size !== 'number') throw new ManifestError(`backup_manifest line ${this.lineNo}: a file entry without Path or Size`);
      this.summary.fileCount++;
      this.summary.totalSize += size;
      if (this.opts.keepFiles) {
        this.files.set(p, {
          path: p,
          size,
          algorithm: typeof obj['Checksum-Algorithm'] === 'string' ? (obj['Checksum-Algorithm'] as string) : 'NONE',
          checksum: typeof obj.Checksum === 'string' ? (obj.Checksum as string).toLowerCase() : undefined,
        });
      }
    } else if (this.section === 'wal') {
      const tli = obj.Timeline;
      const s = obj['Start-LSN'];
      const e = obj['End-LSN'];
      if (typeof tli !== 'number' || typeof s !== 'string' || typeof e !== 'string') throw new ManifestError(`backup_manifest line ${this.lineNo}: a WAL range without Timeline, Start-LSN or End-LSN`);
      this.summary.walRanges.push({ timeline: tli, startLsn: s.toUpperCase(), endLsn: e.toUpperCase() });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The server side: readiness for a base backup

export interface BaseBackupReadiness {
  serverVersion: string;
  serverVersionNum: number;
  walLevel: string;
  maxWalSenders: number;
  walSendersInUse: number;
  user: string;
  superuser: boolean;
  replication: boolean;
  inRecovery: boolean;
  walSegmentSize: number;
  /** Tablespaces other than pg_default and pg_global. */
  extraTablespaces: { name: string; location: string }[];
  /** Sum of pg_database_size over the databases we may size: an estimate of the backup's size. */
  sizeEstimate: number;
  /** pg_control_system().system_identifier; undefined when this role may not call it. */
  systemIdentifier?: string;
}

export async function readBaseBackupReadiness(conn: ConnectionSettings): Promise<BaseBackupReadiness> {
  return withPg(conn, async (c) => {
    const s = await c.query<{
      version: string;
      version_num: string;
      wal_level: string;
      max_wal_senders: string;
      senders: string;
      usr: string;
      rolsuper: boolean | null;
      rolreplication: boolean | null;
      in_recovery: boolean;
      seg: string;
    }>(
      `SELECT current_setting('server_version') AS version,
              current_setting('server_version_num') AS version_num,
              current_setting('wal_level') AS wal_level,
              current_setting('max_wal_senders') AS max_wal_senders,
              (SELECT count(*) FROM pg_stat_replication) AS senders,
              current_user AS usr,
              r.rolsuper, r.rolreplication,
              pg_is_in_recovery() AS in_recovery,
              pg_size_bytes(current_setting('wal_segment_size')) AS seg
         FROM (SELECT 1) AS one LEFT JOIN pg_roles r ON r.rolname = current_user`,
    );
    const ts = await c.query<{ spcname: string; location: string }>(
      `SELECT spcname, pg_tablespace_location(oid) AS location FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY spcname`,
    );
    const size = await c.query<{ total: string | null }>(
      `SELECT sum(pg_database_size(oid)) AS total FROM pg_database
        WHERE has_database_privilege(oid, 'CONNECT') OR pg_has_role('pg_read_all_stats', 'MEMBER')`,
    );
    // pg_control_system() may be revoked from this role: IDENTIFY_SYSTEM gives it too, later.
    let systemIdentifier: string | undefined;
    try {
      systemIdentifier = (await c.query<{ id: string }>(`SELECT system_identifier::text AS id FROM pg_control_system()`)).rows[0]?.id;
    } catch {
      systemIdentifier = undefined;
    }
    const r = s.rows[0];
    return {
      systemIdentifier,
      serverVersion: r.version,
      serverVersionNum: Number(r.version_num),
      walLevel: r.wal_level,
      maxWalSenders: Number(r.max_wal_senders),
      walSendersInUse: Number(r.senders),
      user: r.usr,
      superuser: Boolean(r.rolsuper),
      replication: Boolean(r.rolreplication),
      inRecovery: r.in_recovery,
      walSegmentSize: Number(r.seg),
      extraTablespaces: ts.rows.map((t) => ({ name: t.spcname, location: t.location })),
      sizeEstimate: Number(size.rows[0].total ?? 0),
    };
  });
}

export interface IdentifySystem {
  systemIdentifier: string;
  timeline: number;
  walPosition: string;
}

/**
 * Open a physical replication connection, as pg_basebackup will, and run IDENTIFY_SYSTEM. This
 * proves what SQL cannot: that pg_hba.conf lets this user in for replication.
 */
export async function identifySystem(conn: ConnectionSettings): Promise<IdentifySystem> {
  const r = resolveConnection(conn); // the same defaults (PGHOST, PGUSER, ...) as every other connection
  const client = new pg.Client({
    host: r.host,
    port: r.port,
    user: r.user,
    database: r.database,
    password: conn.password,
    connectionTimeoutMillis: (conn.connectTimeoutSec ?? 10) * 1000,
    application_name: 'pgrunbook',
    // TLS as for every other connection of ours: pg reads PGSSLMODE.
    replication: true,
  } as pg.ClientConfig);
  client.on('error', () => {});
  try {
    try {
      await client.connect();
    } catch (err) {
      throw translateConnectError(err, conn);
    }
    const r = await client.query<{ systemid: string; timeline: number | string; xlogpos: string }>('IDENTIFY_SYSTEM');
    const row = r.rows[0];
    return { systemIdentifier: String(row.systemid), timeline: Number(row.timeline), walPosition: row.xlogpos };
  } finally {
    await client.end().catch(() => {});
  }
}

export interface WalHold {
  slot: string;
  restartLsn: string;
  release(): Promise<void>;
}

/**
 * Keep the server from recycling WAL until `release()`: a temporary physical replication slot,
 * reserving WAL at once, held by an open session. With --wal-method=fetch the WAL is only fetched
 * at the end of the backup; a busy server could otherwise remove a segment the backup needs before
 * then ("requested WAL segment ... has already been removed"). Being temporary, the slot goes away
 * with the session, also when we crash or are killed, so it can never pin WAL forever.
 */
export async function holdWal(conn: ConnectionSettings, slot: string): Promise<WalHold> {
  const client = await connectPg({ ...conn, applicationName: 'pgrunbook backup-base (WAL hold)' });
  try {
    const r = await client.query<{ lsn: string | null }>(`SELECT lsn::text AS lsn FROM pg_create_physical_replication_slot($1, true, true)`, [slot]);
    return {
      slot,
      restartLsn: r.rows[0].lsn ?? '',
      release: async () => {
        await client.query(`SELECT pg_drop_replication_slot($1)`, [slot]).catch(() => {});
        await client.end().catch(() => {});
      },
    };
  } catch (err) {
    await client.end().catch(() => {});
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Running pg_basebackup

export interface PgBasebackupOptions {
  connection: ConnectionSettings;
  label: string;
  checkpoint: 'fast' | 'spread';
  /** pg_basebackup --max-rate, e.g. "50M". */
  maxRate?: string;
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
  /** Each line pg_basebackup writes to stderr (progress and errors, with -v). */
  onStderrLine?: (line: string) => void;
}

/** One tar of the data directory to stdout, with the WAL it needs inside (pg_wal/) and backup_manifest as its last member. */
export function pgBasebackupArgs(opts: Pick<PgBasebackupOptions, 'label' | 'checkpoint' | 'maxRate'>): string[] {
  return ['--pgdata=-', '--format=tar', '--wal-method=fetch', `--checkpoint=${opts.checkpoint}`, `--label=${opts.label}`, '--verbose', '--no-password', ...(opts.maxRate ? [`--max-rate=${opts.maxRate}`] : [])];
}

export interface PgBasebackupResult {
  exitCode?: number;
  signal?: string;
  ok: boolean;
  /** The last lines of stderr. */
  stderrTail: string;
  /** From -v: "write-ahead log start point: 0/2000028 on timeline 1". */
  startLsn?: string;
  startTimeline?: number;
  /** From -v: "write-ahead log end point: 0/2000100". */
  endLsn?: string;
}

export interface RunningPgBasebackup {
  command: string;
  stdout: Readable;
  /** Settles when the program has exited; never rejects. */
  done: Promise<PgBasebackupResult>;
  kill(): void;
}

export async function startPgBasebackup(opts: PgBasebackupOptions): Promise<RunningPgBasebackup> {
  const bin = await findPgBinary('pg_basebackup');
  const args = pgBasebackupArgs(opts);
  const command = [path.basename(bin), ...args].join(' ');
  const child = execa(bin, args, {
    env: libpqEnv(opts.connection, opts.env ?? process.env),
    extendEnv: false,
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
    buffer: false,
    reject: false,
    cancelSignal: opts.signal,
    forceKillAfterDelay: 5000,
  });
  const tail: string[] = [];
  const parsed: Pick<PgBasebackupResult, 'startLsn' | 'startTimeline' | 'endLsn'> = {};
  let partial = '';
  const onLine = (line: string) => {
    if (!line.trim()) return;
    tail.push(line);
    if (tail.length > 30) tail.shift();
    const start = /write-ahead log start point: ([0-9A-F]+\/[0-9A-F]+) on timeline (\d+)/i.exec(line);
    if (start) {
      parsed.startLsn = start[1].toUpperCase();
      parsed.startTimeline = Number(start[2]);
    }
    const end = /write-ahead log end point: ([0-9A-F]+\/[0-9A-F]+)/i.exec(line);
    if (end) parsed.endLsn = end[1].toUpperCase();
    try {
      opts.onStderrLine?.(line);
    } catch {
      // a listener's bug must not break the backup
    }
  };
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    partial += d;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) onLine(l);
  });
  const done = child.then(
    (r) => {
      if (partial) onLine(partial);
      const exitCode = typeof r.exitCode === 'number' ? r.exitCode : undefined;
      return { exitCode, signal: r.signal ?? undefined, ok: exitCode === 0 && !r.failed, stderrTail: tail.join('\n'), ...parsed };
    },
    (err: unknown) => ({ ok: false, stderrTail: [...tail, (err as Error)?.message ?? String(err)].join('\n'), ...parsed }),
  );
  return {
    command,
    stdout: child.stdout!,
    done,
    kill: () => {
      child.kill('SIGTERM');
    },
  };
}
