// The repository key: which repositories are encrypted, and opening them.
//
// A repository is encrypted when its format record (pgrunbook.json, the one object kept in clear)
// has an `encryption` entry: the cipher, the chunk size, scrypt's salt and parameters, and a key
// check value (an HMAC made with half of scrypt's output; the other half is the data key, so the
// check value says nothing about it). The passphrase comes from --repo-key-file FILE (which the
// CLI hands on as PGRUNBOOK_REPO_KEY_FILE) or PGRUNBOOK_REPO_KEY; it is never stored, printed or
// journaled, and archive_command/restore_command name only the file.
//
// Every open checks the key against the record before anything else is read or written: no key
// for an encrypted repository, a key for an unencrypted one, or a wrong key is a RepoKeyError
// (exit 2, nothing done). A key given for an empty repository without a record makes it
// encrypted at once: its format record is created there and then with the salt and check value and
// no cluster yet (before any object is sealed); the first writer adds its cluster (identity.ts).
//
// wal-push loads this for every segment: node:crypto only, no SDK; the sealing store
// (storage/encrypted.ts) only when the repository is encrypted.
import { createHash, createHmac, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import { openStore } from '../storage/url.js';
import type { ObjectStore, StoreOptions } from '../storage/types.js';
import { IDENTITY_KEY } from './layout.js';
import { readObjectIfExists } from './objects.js';
import { createIfAbsent } from './lock.js';

export const REPO_KEY_ENV = 'PGRUNBOOK_REPO_KEY';
export const REPO_KEY_FILE_ENV = 'PGRUNBOOK_REPO_KEY_FILE';

export interface EncryptionRecord {
  cipher: 'aes-256-gcm';
  chunkSize: number;
  kdf: { name: 'scrypt'; salt: string; N: number; r: number; p: number };
  /** Hex HMAC-SHA256 of CHECK_LABEL under the check half of the derived key. */
  keyCheck: string;
}

const CHECK_LABEL = 'pgrunbook repository key check v1';
/** scrypt cost: 2^14 x 8 x 128 bytes = 16 MiB and ~50 ms, once per process. wal-push (one process
 *  per segment when no pusher runs) pays it every time, hence not more; the record keeps the
 *  parameters, so a repository made with a higher cost still opens. */
const KDF_DEFAULTS = { N: 2 ** 14, r: 8, p: 1 };

/** A key problem found before anything was read or written: bad usage, exit 2. */
export class RepoKeyError extends Error {
  readonly procedureExitCode = 2;
  readonly exitCode = 2;
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
    this.name = 'RepoKeyError';
  }
}

const GIVE_KEY = `give its key with --repo-key-file FILE (a file only you can read, mode 0600, holding the passphrase) or ${REPO_KEY_ENV}`;

/** The passphrase from the key file or the environment; undefined when neither is given. */
export function readRepoKey(env: NodeJS.ProcessEnv): string | undefined {
  const file = env[REPO_KEY_FILE_ENV] || undefined;
  const pass = env[REPO_KEY_ENV] || undefined;
  if (file && pass) {
    throw new RepoKeyError(`both --repo-key-file (or ${REPO_KEY_FILE_ENV}) and ${REPO_KEY_ENV} give a repository key`, `give the key one way: unset ${REPO_KEY_ENV} or drop --repo-key-file`);
  }
  if (pass) return pass;
  if (!file) return undefined;
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (err) {
    throw new RepoKeyError(`cannot read the repository key file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 'check the path given to --repo-key-file');
  }
  if (!st.isFile()) throw new RepoKeyError(`the repository key file ${file} is not a regular file`, 'give --repo-key-file the path of a file holding the passphrase');
  if ((st.mode & 0o077) !== 0) {
    throw new RepoKeyError(`the repository key file ${file} can be read by other users (mode ${(st.mode & 0o777).toString(8)})`, `make it private: chmod 600 ${file}`);
  }
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new RepoKeyError(`cannot read the repository key file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 'check its owner and mode (it must be readable by this user)');
  }
  const key = text.replace(/\r?\n$/, '');
  if (!key) throw new RepoKeyError(`the repository key file ${file} is empty`, 'write the passphrase into it (one line)');
  return key;
}

function scryptAsync(secret: string, salt: Buffer, kdf: { N: number; r: number; p: number }): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(secret, salt, 64, { N: kdf.N, r: kdf.r, p: kdf.p, maxmem: 256 * kdf.N * kdf.r + 1024 * 1024 }, (err, out) => (err ? reject(err) : resolve(out))),
  );
}

/** Derived keys by passphrase hash and KDF parameters, in this process's memory only: a run opens
 *  its repository several times (the pre-run check, each step), and scrypt is deliberately slow. */
const derived = new Map<string, Promise<{ dataKey: Buffer; keyCheck: string }>>();

/** The data key and the key check value for `secret` under `record`'s salt and parameters. */
export function deriveRepoKey(secret: string, kdf: EncryptionRecord['kdf']): Promise<{ dataKey: Buffer; keyCheck: string }> {
  const memo = `${createHash('sha256').update(secret).digest('hex')}:${kdf.salt}:${kdf.N}:${kdf.r}:${kdf.p}`;
  let p = derived.get(memo);
  if (!p) {
    p = scryptAsync(secret, Buffer.from(kdf.salt, 'base64'), kdf).then((out) => ({
      dataKey: out.subarray(0, 32),
      keyCheck: createHmac('sha256', out.subarray(32)).update(CHECK_LABEL).digest('hex'),
    }));
    p.catch(() => derived.delete(memo));
    derived.set(memo, p);
  }
  return p;
}

/** A new repository's encryption entry for `secret`, with a fresh salt. */
export async function newEncryption(secret: string, chunkSize?: number): Promise<{ record: EncryptionRecord; dataKey: Buffer }> {
  chunkSize ??= (await import('../storage/encrypted.js')).DEFAULT_CHUNK_SIZE;
  const kdf = { name: 'scrypt' as const, salt: randomBytes(16).toString('base64'), ...KDF_DEFAULTS };
  const { dataKey, keyCheck } = await deriveRepoKey(secret, kdf);
  return { record: { cipher: 'aes-256-gcm', chunkSize, kdf, keyCheck }, dataKey };
}

const recordOf = new WeakMap<ObjectStore, EncryptionRecord>();

/** The encryption entry a store was opened with (the one its format record has, or must get). */
export function encryptionOf(store: ObjectStore): EncryptionRecord | undefined {
  return recordOf.get(store);
}

function encryptionIn(raw: Buffer | undefined): EncryptionRecord | undefined {
  if (!raw) return undefined;
  let rec: { encryption?: EncryptionRecord };
  try {
    rec = JSON.parse(raw.toString('utf8')) as { encryption?: EncryptionRecord };
  } catch {
    return undefined; // identity.ts reports an unreadable record in its own words
  }
  const e = rec?.encryption;
  if (e === undefined) return undefined;
  if (e.cipher !== 'aes-256-gcm' || e.kdf?.name !== 'scrypt' || typeof e.kdf.salt !== 'string' || !Number.isInteger(e.chunkSize) || typeof e.keyCheck !== 'string') {
    throw new RepoKeyError(`the repository's format record ${IDENTITY_KEY} names an encryption this pgrunbook does not know (${JSON.stringify(e).slice(0, 200)})`, 'upgrade pgrunbook, or inspect the record');
  }
  return e;
}

/**
 * `inner` as the repository must be read and written: the same store when it is not encrypted,
 * else an EncryptedStore under the key from `env`. Throws RepoKeyError before any write.
 */
export async function withRepositoryKey(inner: ObjectStore, env: NodeJS.ProcessEnv, attempt = 0): Promise<ObjectStore> {
  const secret = readRepoKey(env);
  const where = inner.describe();
  let raw: Buffer | undefined;
  try {
    raw = await readObjectIfExists(inner, IDENTITY_KEY);
  } catch (err) {
    // The first read of a run: a store that does not answer is named, with where to look.
    if ((err as { corrupt?: unknown }).corrupt === true) throw err;
    throw Object.assign(new Error(`the repository ${where} is not reachable: ${(err as Error).message.replace(/\.+$/, '')}. Check the URL, the credentials and that the storage answers`), { cause: err });
  }
  const enc = encryptionIn(raw);
  if (enc) {
    if (!secret) throw new RepoKeyError(`the repository ${where} is encrypted and no key was given; nothing was read or changed`, GIVE_KEY);
    const { dataKey, keyCheck } = await deriveRepoKey(secret, enc.kdf);
    const a = Buffer.from(keyCheck, 'hex');
    const b = Buffer.from(enc.keyCheck, 'hex');
    if (a.length !== b.length || !timingSafeEqual(a, b)) {
      throw new RepoKeyError(
        `the key given does not open the repository ${where} (it does not match the key check value in ${IDENTITY_KEY}); nothing was read or changed`,
        `give the passphrase this repository was created with (--repo-key-file FILE or ${REPO_KEY_ENV})`,
      );
    }
    return await sealed(inner, dataKey, enc);
  }
  if (!secret) return inner;
  const unencrypted = new RepoKeyError(
    `a repository key was given, but the repository ${where} is not encrypted (it was started without a key); nothing was read or changed`,
    `drop --repo-key-file / ${REPO_KEY_ENV} for this repository, or start an encrypted repository at a new, empty --repo`,
  );
  if (raw) throw unencrypted;
  // No format record: a new repository becomes encrypted, one with objects from before records existed does not.
  for await (const entry of inner.list('')) if (entry.key !== IDENTITY_KEY) throw unencrypted;
  const fresh = await newEncryption(secret);
  const record = { formatVersion: 1, createdAt: new Date().toISOString(), encryption: fresh.record };
  if (await createIfAbsent(inner, IDENTITY_KEY, Buffer.from(`${JSON.stringify(record, null, 2)}\n`))) return await sealed(inner, fresh.dataKey, fresh.record);
  // Another run made the record first: open the repository with its salt.
  if (attempt > 0) throw new RepoKeyError(`the format record of ${where} changes while it is being opened`, 'run again');
  return withRepositoryKey(inner, env, attempt + 1);
}

async function sealed(inner: ObjectStore, dataKey: Buffer, record: EncryptionRecord): Promise<ObjectStore> {
  const { EncryptedStore } = await import('../storage/encrypted.js');
  const store = new EncryptedStore(inner, dataKey, { plaintextKeys: [IDENTITY_KEY], chunkSize: record.chunkSize });
  recordOf.set(store, record);
  return store;
}

/** Opens the repository's store by URL with its key (see withRepositoryKey); closes it on a key error. */
export async function openRepoStore(url: string, env: NodeJS.ProcessEnv = process.env, options: StoreOptions = {}): Promise<ObjectStore> {
  const inner = await openStore(url, env, options);
  try {
    return await withRepositoryKey(inner, env);
  } catch (err) {
    await inner.close().catch(() => undefined);
    throw err;
  }
}
