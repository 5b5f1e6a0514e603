// The check of a server-compressed base backup (zstd -d into a named pipe read by a worker
// thread): a malformed tar fails it with the tar's own error and stops zstd, which would otherwise
// block for ever on a pipe nobody reads. No server needed: the stream is made here.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from './helpers/cli.js';
import { startCheckWorker } from '../src/services/base-backup-follow.js';
import { compressBuffer } from '../src/repo/codec.js';
import { TarFormatError } from '../src/postgres/formats/tar.js';

describe('the check thread of a server-compressed base backup', () => {
  it('a malformed tar (far more than the pipe holds) fails with the tar error, and zstd is stopped rather than left blocked', async () => {
    const dir = tempDir('pgrunbook-bbcheck-');
    const check = startCheckWorker(dir, 'CRC32C', 16 * 1024 * 1024, path.join(dir, 'backup_manifest'), () => {});
    // 8 MiB of 'A': the first header's checksum is wrong; zstd -d has megabytes more to write.
    check.input.end(await compressBuffer('zstd', Buffer.alloc(8 * 1024 * 1024, 0x41)));
    await expect(check.result).rejects.toBeInstanceOf(TarFormatError);
  }, 20_000);

  it('stopped before its thread has opened the pipe (a run that failed at once), the check still ends: the thread is not left waiting on a pipe nobody holds', async () => {
    // The window is the thread's start-up: stopped at several moments inside it, every check must end.
    for (let delayMs = 0; delayMs <= 60; delayMs += 10) {
      const dir = tempDir('pgrunbook-bbcheck-');
      const check = startCheckWorker(dir, 'CRC32C', 16 * 1024 * 1024, path.join(dir, 'backup_manifest'), () => {});
      if (delayMs) await new Promise((resolve) => setTimeout(resolve, delayMs));
      check.stop();
      const settled = await Promise.race([
        check.result.then(
          () => 'resolved',
          () => 'rejected',
        ),
        new Promise((resolve) => setTimeout(() => resolve('still waiting after 5 s'), 5_000).unref()),
      ]);
      expect(`${settled} (stopped ${delayMs} ms after the start)`).toBe(`rejected (stopped ${delayMs} ms after the start)`);
    }
  }, 120_000);
});
