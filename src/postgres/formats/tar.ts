// A tar reader for pg_basebackup's stream: 512-byte headers; file contents are handed on in the
// chunks they arrive in, never buffered, so a backup can be checked and its backup_manifest
// lifted out while it streams to the repository.

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
