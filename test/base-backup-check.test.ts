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
});
