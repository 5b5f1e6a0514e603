// pitr keeps the WAL segments its preflight checked, for replay. Keeping saves a fetch and must
// never fail the walk: when the base backup's read fails, it removes the staging directory, and a
// keep into it failing a moment before the backup's error arrived was once reported as the cause
// (exit 1, ENOENT) in place of the corrupt backup (exit 3).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { KeptWal } from '../src/restore/preflight.js';
import { tempDir } from './helpers/temp.js';

const owner = () => ({ uid: os.userInfo().uid, gid: os.userInfo().gid });
const segment = (dir: string, name: string) => {
  const file = path.join(dir, name);
  fs.writeFileSync(file, Buffer.alloc(1024, 7));
  return file;
};
/** A keeper in a staging directory under a fresh temporary root, open with room for 8 segments. */
const openKeeper = async () => {
  const root = tempDir();
  const staged = path.join(root, 'staged');
  fs.mkdirSync(staged);
  const keep = new KeptWal(path.join(staged, '.pgrunbook-wal'), owner());
  await keep.open(8);
  return { root, staged, keep };
};

describe('KeptWal', () => {
  it('keeps segments into its directory up to its budget, then leaves them to the walk', async () => {
    const root = tempDir();
    const keep = new KeptWal(path.join(root, 'staged', '.pgrunbook-wal'), owner());
    fs.mkdirSync(path.join(root, 'staged'));
    const before = segment(root, '000000010000000000000001');
    expect(await keep.take(before, '000000010000000000000001')).toBe(false); // not open yet
    await keep.open(1);
    expect(await keep.take(before, '000000010000000000000001')).toBe(true);
    expect(fs.existsSync(path.join(keep.dir, '000000010000000000000001'))).toBe(true);
    expect(fs.existsSync(before)).toBe(false);
    const over = segment(root, '000000010000000000000002');
    expect(await keep.take(over, '000000010000000000000002')).toBe(false);
    expect(fs.existsSync(over)).toBe(true);
  });

  it('a keep after its directory was removed (the backup failed meanwhile) returns false instead of failing', async () => {
    const { root, staged, keep } = await openKeeper();
    // The backup's read removed the staging directory without closing the keeper first.
    fs.rmSync(staged, { recursive: true });
    const file = segment(root, '000000010000000000000003');
    expect(await keep.take(file, '000000010000000000000003')).toBe(false);
    expect(keep.kept.size).toBe(0);
  });

  it('closed, it takes nothing more, and close waits for a move under way', async () => {
    const { root, keep } = await openKeeper();
    const moving = keep.take(segment(root, '000000010000000000000004'), '000000010000000000000004');
    await keep.close();
    // The move had ended when close returned: removing the directory now removes it all.
    expect(keep.kept.has('000000010000000000000004')).toBe(true);
    expect(await moving).toBe(true);
    const late = segment(root, '000000010000000000000005');
    expect(await keep.take(late, '000000010000000000000005')).toBe(false);
    expect(fs.existsSync(late)).toBe(true);
  });
});
