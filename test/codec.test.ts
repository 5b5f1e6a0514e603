// The repository's codecs for real (the zstd program, node's zlib): round trips, zstd objects
// checked on read (a flipped byte, a truncated object), WAL pushed as .zst and fetched back, a
// damaged .zst WAL refused, gzip WAL of earlier versions still fetched, and a missing zstd
// program named with its package (exit 2).
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from './helpers/cli.js';
import { CodecDataError, CodecUsageError, compressBuffer, decompressBuffer, isCodecDataError, zstdFilesToDir } from '../src/repo/codec.js';
import { fetchWal, pushWal, walKey, WalConflictError, WalCorruptError } from '../src/repo/walarchive.js';
import { openStore } from '../src/storage/url.js';
import { verifyRepository } from '../src/repo/verify.js';
import { sha256Hex } from '../src/storage/checksum.js';
import type { ObjectStore } from '../src/storage/types.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** A file:// repository in a temp directory removed after the tests. */
async function fileRepo(): Promise<{ dir: string; store: ObjectStore }> {
  const dir = tempDir('pgrunbook-codec-');
  dirs.push(dir);
  return { dir, store: await openStore(`file://${path.join(dir, 'repo')}`) };
}

/** Flips a byte in the middle of a stored object and re-signs its stored SHA-256: only a check of the uncompressed bytes can tell. */
async function damageKeepingStoredSha(store: ObjectStore, key: string, mask: number): Promise<void> {
  const got = await store.get(key);
  const chunks: Buffer[] = [];
  for await (const c of got.body) chunks.push(c as Buffer);
  const bad = Buffer.concat(chunks);
  bad[Math.floor(bad.length / 2)] ^= mask;
  await store.put(key, bad, { contentLength: bad.length, metadata: { ...got.info.metadata, sha256: sha256Hex(bad) } });
}

// Compressible but not trivial: text with a counter, like table pages.
const sample = Buffer.from(Array.from({ length: 40000 }, (_, i) => `row ${i} ${(i * 7919) % 10007}\n`).join(''));

describe('codec', () => {
  it('round-trips zstd, gzip and none; zstd is smaller than the input', async () => {
    for (const codec of ['zstd', 'gzip', 'none'] as const) {
      const stored = await compressBuffer(codec, sample);
      if (codec !== 'none') expect(stored.length).toBeLessThan(sample.length / 2);
      expect((await decompressBuffer(codec, stored)).equals(sample)).toBe(true);
    }
  });

  it('a zstd object with one flipped byte, or cut short, fails its read as damaged data (exit 3), never as a short clean end', async () => {
    const stored = await compressBuffer('zstd', sample);
    const flipped = Buffer.from(stored);
    flipped[Math.floor(flipped.length / 2)] ^= 0xff;
    const e1 = await decompressBuffer('zstd', flipped).catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(CodecDataError);
    expect(isCodecDataError(e1)).toBe(true);
    expect((e1 as CodecDataError).corrupt).toBe(true);
    const e2 = await decompressBuffer('zstd', stored.subarray(0, stored.length - 10)).catch((e: unknown) => e);
    expect(e2).toBeInstanceOf(CodecDataError);
  });

  it('without the zstd program: exit 2 naming the package', async () => {
    const saved = process.env.PATH;
    process.env.PATH = tempDir('pgrunbook-nopath-');
    dirs.push(process.env.PATH);
    try {
      const e = await compressBuffer('zstd', sample).catch((err: unknown) => err);
      expect(e).toBeInstanceOf(CodecUsageError);
      expect((e as CodecUsageError).procedureExitCode).toBe(2);
      expect((e as CodecUsageError).hint).toContain('apt-get install zstd');
    } finally {
      process.env.PATH = saved;
    }
  });

  it('WAL: pushed as .zst and fetched back; a damaged .zst is refused and nothing is written; a .gz of earlier versions is fetched', async () => {
    const { dir, store } = await fileRepo();
    try {
      // A history file carries no system identifier: no format record needed.
      const src = path.join(dir, '00000002.history');
      fs.writeFileSync(src, sample);
      const pushed = await pushWal(store, src, { compression: 'zstd' });
      expect(pushed.key).toBe(walKey('00000002.history', 'zstd'));
      expect(pushed.key.endsWith('.zst')).toBe(true);
      const out = path.join(dir, 'fetched');
      expect((await fetchWal(store, '00000002.history', out)).status).toBe('fetched');
      expect(fs.readFileSync(out).equals(sample)).toBe(true);

      // Damage the stored object but keep its stored SHA-256 right: only zstd's content checksum (or the raw SHA-256) can tell.
      await damageKeepingStoredSha(store, pushed.key, 0xff);
      const out2 = path.join(dir, 'fetched2');
      const e = await fetchWal(store, '00000002.history', out2).catch((err: unknown) => err);
      expect(e).toBeInstanceOf(WalCorruptError);
      expect(fs.existsSync(out2)).toBe(false);

      // gzip, as wal-push wrote before zstd.
      const gz = zlib.gzipSync(sample);
      await store.put(walKey('00000003.history', 'gzip'), gz, { contentLength: gz.length, metadata: { sha256: sha256Hex(gz), rawsha256: sha256Hex(sample), compression: 'gzip' } });
      const out3 = path.join(dir, 'fetched3');
      expect((await fetchWal(store, '00000003.history', out3)).key).toBe(walKey('00000003.history', 'gzip'));
      expect(fs.readFileSync(out3).equals(sample)).toBe(true);
    } finally {
      await store.close();
    }
  });

  it('WAL: fetch and verify agree on what is verified (a raw SHA-256, or a stored one with a codec that checks its content; not gzip on its stored SHA-256 alone)', async () => {
    const { dir, store } = await fileRepo();
    try {
      const zst = await compressBuffer('zstd', sample);
      const gz = zlib.gzipSync(sample);
      const cases: { name: string; codec: 'zstd' | 'none' | 'gzip'; bytes: Buffer; metadata: Record<string, string>; proven: boolean }[] = [
        { name: '00000004.history', codec: 'zstd', bytes: zst, metadata: { sha256: sha256Hex(zst), compression: 'zstd' }, proven: true },
        { name: '00000005.history', codec: 'none', bytes: sample, metadata: { sha256: sha256Hex(sample), compression: 'none' }, proven: true },
        { name: '00000006.history', codec: 'gzip', bytes: gz, metadata: { sha256: sha256Hex(gz), rawsha256: sha256Hex(sample), compression: 'gzip' }, proven: true },
        { name: '00000007.history', codec: 'gzip', bytes: gz, metadata: { sha256: sha256Hex(gz), compression: 'gzip' }, proven: false },
        { name: '00000008.history', codec: 'zstd', bytes: zst, metadata: { compression: 'zstd' }, proven: false },
      ];
      for (const c of cases) await store.put(walKey(c.name, c.codec), c.bytes, { contentLength: c.bytes.length, metadata: c.metadata });
      for (const c of cases) {
        const fetched = await fetchWal(store, c.name, path.join(dir, `f-${c.name}`));
        expect({ name: c.name, verified: fetched.verified }).toEqual({ name: c.name, verified: c.proven });
      }
      const v = await verifyRepository(store);
      expect(v.counts.verified).toBe(cases.filter((c) => c.proven).length);
      expect([...v.unverifiedKeys].sort()).toEqual(cases.filter((c) => !c.proven).map((c) => walKey(c.name, c.codec)).sort());
    } finally {
      await store.close();
    }
  });

  it('WAL the pusher compressed (zstd --fast, the segment not read here): no raw SHA-256 recorded, yet fetched verified, damage refused, conflicts found by comparing bytes', async () => {
    const { dir, store } = await fileRepo();
    try {
      const src = path.join(dir, '00000004.history');
      fs.writeFileSync(src, sample);
      const zdir = path.join(dir, 'z');
      fs.mkdirSync(zdir);
      await zstdFilesToDir([src], zdir, -3);
      const compressedFile = path.join(zdir, '00000004.history.zst');
      const pushed = await pushWal(store, src, { compression: 'zstd', compressedFile });
      expect(pushed.status).toBe('stored');
      expect(pushed.rawSha256).toBeUndefined();
      const info = await store.head(pushed.key);
      expect(info?.metadata.rawsha256).toBeUndefined();
      expect(info?.metadata.sha256).toMatch(/^[0-9a-f]{64}$/);
      expect(info?.metadata.rawsize).toBe(String(sample.length));
      const out = path.join(dir, 'fetched');
      const r = await fetchWal(store, '00000004.history', out);
      expect(r).toMatchObject({ status: 'fetched', verified: true });
      expect(fs.readFileSync(out).equals(sample)).toBe(true);

      // The same name again: the same bytes are success, other bytes a conflict (the bytes compared, no raw SHA-256 to compare).
      expect((await pushWal(store, src, { compression: 'zstd' })).status).toBe('already-archived');
      const other = path.join(dir, 'other', '00000004.history');
      fs.mkdirSync(path.dirname(other));
      fs.writeFileSync(other, Buffer.concat([sample, Buffer.from('x')]));
      await expect(pushWal(store, other, { compression: 'zstd' })).rejects.toBeInstanceOf(WalConflictError);

      // Damaged with its stored SHA-256 re-signed: zstd's content checksum still refuses it.
      await damageKeepingStoredSha(store, pushed.key, 0x01);
      const out2 = path.join(dir, 'fetched2');
      await expect(fetchWal(store, '00000004.history', out2)).rejects.toBeInstanceOf(WalCorruptError);
      expect(fs.existsSync(out2)).toBe(false);
    } finally {
      await store.close();
    }
  });
});
