// backup_manifest, read line by line as it streams past: its own SHA-256 (Manifest-Checksum), the
// WAL range, and the per-file checksums (CRC32C by default) that prove a stored backup holds what
// the server sent.
import { createHash, type Hash } from 'node:crypto';
import { createRequire } from 'node:module';

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

type NativeCrc32c = (input: Uint8Array, initialState?: number) => number;
let native: NativeCrc32c | null | undefined;

/**
 * CRC-32C in hardware (SSE 4.2 / ARMv8 CRC instructions) from @node-rs/crc32's prebuilt addon, at
 * many GB/s: undefined where no prebuilt binary fits the platform (the JavaScript one is used then).
 */
export function nativeCrc32c(): NativeCrc32c | undefined {
  if (native === undefined) {
    try {
      const fn = (createRequire(import.meta.url)('@node-rs/crc32') as { crc32c?: NativeCrc32c }).crc32c;
      native = typeof fn === 'function' && fn(Buffer.from('123456789')) === 0xe3069283 ? fn : null;
    } catch {
      native = null;
    }
  }
  return native ?? undefined;
}

/** CRC-32C through the addon: the same digest as Crc32c. */
class NativeCrc32cSum implements FileChecksummer {
  private crc = 0;
  constructor(private readonly fn: NativeCrc32c) {}
  update(b: Buffer): void {
    this.crc = this.fn(b, this.crc);
  }
  digestHex(): string {
    const out = Buffer.alloc(4);
    out.writeUInt32LE(this.crc >>> 0);
    return out.toString('hex');
  }
}

/** A checksummer for a manifest's Checksum-Algorithm, or undefined for NONE / unknown ones. */
export function manifestChecksummer(algorithm: string): FileChecksummer | undefined {
  const a = algorithm.toUpperCase();
  if (a === 'CRC32C') {
    const fn = nativeCrc32c();
    return fn ? new NativeCrc32cSum(fn) : new Crc32c();
  }
  if (a === 'SHA224' || a === 'SHA256' || a === 'SHA384' || a === 'SHA512') {
    const h: Hash = createHash(a.toLowerCase());
    return { update: (c) => void h.update(c), digestHex: () => h.digest('hex') };
  }
  return undefined;
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
