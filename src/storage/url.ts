// Repository URLs: parsing, secret-free descriptions, and openStore().
//
//   file:///var/backups/pg/main          (a plain absolute path is accepted too)
//   s3://bucket/prefix?region=..&endpoint=..&forcePathStyle=true&sse=aws:kms&kmsKeyId=..
//   azure://container/prefix?endpoint=http://127.0.0.1:10000/devstoreaccount1
//
// Settings missing from the query come from the SDKs' usual environment variables (see
// parseRepoUrl). Drivers are loaded with a dynamic import(): a file:// repository never loads the
// AWS or Azure SDK, which keeps `wal-push` (run by PostgreSQL once per WAL segment) fast to start.

import { isAbsolute, normalize } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { resolveRetry } from './retry.js';
import {
  StorageError,
  validateKey,
  type ObjectStore,
  type RetryOptions,
  type StoreKind,
  type StoreOptions,
} from './types.js';

export type Env = Record<string, string | undefined>;

export type S3Sse = 'AES256' | 'aws:kms' | 'aws:kms:dsse';

interface Common {
  /** Key prefix inside the bucket/container: '' or ending with '/'. */
  prefix: string;
  /** Tuning from openStore's options, overridden by the URL's query. */
  tuning: ResolvedTuning;
}

export interface ResolvedTuning {
  retry: RetryOptions;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  partSize?: number;
  queueSize?: number;
  listPageSize: number;
}

export interface FileLocation {
  kind: 'file';
  root: string;
  tuning: ResolvedTuning;
}

export interface S3Location extends Common {
  kind: 's3';
  bucket: string;
  /** undefined: the SDK resolves it (AWS_REGION, profile); with a custom endpoint: us-east-1. */
  region?: string;
  endpoint?: string;
  forcePathStyle: boolean;
  sse?: S3Sse;
  kmsKeyId?: string;
  /** Static credentials from the query or the env; otherwise the SDK's default chain (profile, SSO,
   *  web identity, container/instance role). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  profile?: string;
}

export type AzureAuth =
  | { type: 'shared-key'; account: string; accountKey: string }
  | { type: 'sas'; sasToken: string };

export interface AzureLocation extends Common {
  kind: 'azure';
  container: string;
  /** Blob service URL without query, e.g. https://acct.blob.core.windows.net or
   *  http://127.0.0.1:10000/devstoreaccount1 (Azurite). */
  serviceUrl: string;
  auth: AzureAuth;
}

export type RepoLocation = FileLocation | S3Location | AzureLocation;

/** Values that must never be printed; drivers scrub them from error messages. */
export function secretsOf(loc: RepoLocation): string[] {
  if (loc.kind === 's3' && loc.credentials) {
    return [loc.credentials.secretAccessKey, loc.credentials.sessionToken ?? ''].filter(Boolean);
  }
  if (loc.kind === 'azure') {
    if (loc.auth.type === 'shared-key') return [loc.auth.accountKey];
    if (loc.auth.type === 'sas') return [loc.auth.sasToken];
  }
  return [];
}

const DEVSTORE_ACCOUNT = 'devstoreaccount1';
// Azurite's published well-known development key (not a secret, but treated as one anyway).
const DEVSTORE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

const EXAMPLES = 'expected file:///path, an absolute path, s3://bucket/prefix or azure://container/prefix';

function invalid(message: string): StorageError {
  return new StorageError(`invalid repository URL: ${message}`, { code: 'invalid-url' });
}

export function parseRepoUrl(input: string, env: Env = process.env, options: StoreOptions = {}): RepoLocation {
  if (typeof input !== 'string' || input.trim() === '') throw invalid(`empty (${EXAMPLES})`);
  input = input.trim();
  if (!/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(input)) {
    if (!isAbsolute(input)) {
      throw invalid(
        `'${input}' is a relative path; give an absolute path (PostgreSQL runs archive_command from the data directory)`,
      );
    }
    return { kind: 'file', root: trimSlash(normalize(input)), tuning: tuningFrom(new URLSearchParams(), options) };
  }
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw invalid(`not a valid URL (${EXAMPLES})`);
  }
  const scheme = url.protocol.slice(0, -1).toLowerCase();
  if (url.username || url.password) {
    throw invalid(
      `credentials in the URL's user part are not supported: use the query or the ${
        scheme === 'azure' ? 'AZURE_STORAGE_*' : 'AWS_*'
      } environment variables`,
    );
  }
  if (url.hash) throw invalid('fragments (#...) are not allowed');
  const q = url.searchParams;
  switch (scheme) {
    case 'file':
      return parseFile(url, q, options);
    case 's3':
      return parseS3(url, q, env, options);
    case 'azure':
      return parseAzure(url, q, env, options);
    default:
      throw invalid(`unknown scheme '${scheme}:' (${EXAMPLES})`);
  }
}

function trimSlash(p: string): string {
  return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
}

function checkQuery(q: URLSearchParams, allowed: readonly string[], scheme: string): void {
  for (const name of new Set(q.keys())) {
    if (!allowed.includes(name)) {
      throw invalid(`unknown query parameter '${name}' for ${scheme}:// (known: ${allowed.join(', ') || 'none'})`);
    }
    if (q.getAll(name).length > 1) throw invalid(`query parameter '${name}' is given twice`);
  }
}

const TUNING_PARAMS = ['partSize', 'queueSize', 'maxAttempts'] as const;

function tuningFrom(q: URLSearchParams, options: StoreOptions): ResolvedTuning {
  const partSize = q.has('partSize') ? parseSize(q.get('partSize')!, 'partSize') : options.partSize;
  const queueSize = q.has('queueSize') ? parseIntParam(q.get('queueSize')!, 'queueSize', 1, 64) : options.queueSize;
  const maxAttempts = q.has('maxAttempts')
    ? parseIntParam(q.get('maxAttempts')!, 'maxAttempts', 1, 100)
    : options.retry?.maxAttempts;
  let retry: RetryOptions;
  try {
    retry = resolveRetry({ ...options.retry, maxAttempts });
  } catch (e) {
    throw new StorageError(`invalid retry options: ${(e as Error).message}`, { code: 'invalid-argument' });
  }
  return {
    retry,
    connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
    idleTimeoutMs: options.idleTimeoutMs ?? 120_000,
    partSize,
    queueSize,
    listPageSize: options.listPageSize ?? 1000,
  };
}

function parseIntParam(v: string, name: string, min: number, max: number): number {
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) {
    throw invalid(`'${name}' must be an integer from ${min} to ${max}`);
  }
  return Number(v);
}

/** "16777216", "16MiB", "16M", "1GiB" */
function parseSize(v: string, name: string): number {
  const m = /^(\d+)\s*(|k|ki|kib|m|mi|mib|g|gi|gib)$/i.exec(v.trim());
  if (!m) throw invalid(`'${name}' must be a size such as 16MiB`);
  const unit = m[2].toLowerCase()[0];
  const mult = unit === 'k' ? 1024 : unit === 'm' ? 1024 ** 2 : unit === 'g' ? 1024 ** 3 : 1;
  const n = Number(m[1]) * mult;
  if (n < 5 * 1024 ** 2 || n > 4000 * 1024 ** 2) throw invalid(`'${name}' must be between 5MiB and 4000MiB`);
  return n;
}

function parseBool(v: string, name: string): boolean {
  if (/^(true|1|yes)$/i.test(v)) return true;
  if (/^(false|0|no)$/i.test(v)) return false;
  throw invalid(`'${name}' must be true or false`);
}

function parseFile(url: URL, q: URLSearchParams, options: StoreOptions): FileLocation {
  if (url.host !== '' && url.host !== 'localhost') {
    throw invalid(`file:// URLs name a local directory: use file:///path (three slashes), not file://${url.host}/...`);
  }
  checkQuery(q, [], 'file');
  let root: string;
  try {
    root = trimSlash(normalize(fileURLToPath(url)));
  } catch {
    throw invalid('bad file:// path (encoded slashes or NUL bytes are not allowed)');
  }
  return { kind: 'file', root, tuning: tuningFrom(q, options) };
}

/** Bucket/container from the URL's host, prefix from its path, both checked. */
function bucketAndPrefix(url: URL, what: string): { name: string; prefix: string } {
  const name = url.hostname;
  if (!name) throw invalid(`the ${what} is missing (e.g. ${url.protocol}//my-${what}/prefix)`);
  if (url.port) throw invalid(`a port after the ${what} name is not allowed; put the endpoint in ?endpoint=`);
  let path: string;
  try {
    path = decodeURIComponent(url.pathname);
  } catch {
    throw invalid('bad percent-encoding in the path');
  }
  path = path.replace(/^\/+/, '').replace(/\/+$/, '');
  if (path !== '') {
    try {
      validateKey(path);
    } catch (e) {
      throw invalid(`bad prefix: ${(e as Error).message}`);
    }
  }
  return { name, prefix: path === '' ? '' : `${path}/` };
}

function normalizeEndpoint(raw: string, what: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw invalid(`${what} is not a URL (e.g. http://127.0.0.1:9000)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw invalid(`${what} must be http:// or https://`);
  if (u.username || u.password) throw invalid(`${what} must not contain credentials`);
  if (u.search || u.hash) throw invalid(`${what} must not have a query or fragment`);
  return u.href.replace(/\/+$/, '');
}

const S3_PARAMS = [
  'region',
  'endpoint',
  'forcePathStyle',
  'sse',
  'kmsKeyId',
  'profile',
  'accessKeyId',
  'secretAccessKey',
  'sessionToken',
  ...TUNING_PARAMS,
] as const;

function parseS3(url: URL, q: URLSearchParams, env: Env, options: StoreOptions): S3Location {
  checkQuery(q, S3_PARAMS, 's3');
  const { name: bucket, prefix } = bucketAndPrefix(url, 'bucket');
  if (!/^[a-zA-Z0-9][a-zA-Z0-9._-]*$/.test(bucket)) throw invalid('bad bucket name');
  const nonEmpty = (v: string | null | undefined): string | undefined => (v ? v : undefined);

  const rawEndpoint = nonEmpty(q.get('endpoint')) ?? nonEmpty(env.AWS_ENDPOINT_URL_S3) ?? nonEmpty(env.AWS_ENDPOINT_URL);
  const endpoint = rawEndpoint ? normalizeEndpoint(rawEndpoint, 'the S3 endpoint') : undefined;
  let region = nonEmpty(q.get('region')) ?? nonEmpty(env.AWS_REGION) ?? nonEmpty(env.AWS_DEFAULT_REGION);
  if (!region && endpoint) region = 'us-east-1'; // S3-compatible stores mostly ignore it; the signer needs one
  if (region && !/^[a-z0-9-]+$/.test(region)) throw invalid("bad 'region'");
  const forcePathStyle = q.has('forcePathStyle') ? parseBool(q.get('forcePathStyle')!, 'forcePathStyle') : !!endpoint;

  let sse: S3Sse | undefined;
  const rawSse = nonEmpty(q.get('sse'));
  if (rawSse) {
    const normalized = rawSse === 'AES256' || /^(sse-s3|s3|aes256)$/i.test(rawSse) ? 'AES256' : rawSse.toLowerCase();
    if (normalized === 'sse-kms' || normalized === 'kms') sse = 'aws:kms';
    else if (normalized === 'AES256' || normalized === 'aws:kms' || normalized === 'aws:kms:dsse') sse = normalized;
    else throw invalid("'sse' must be AES256 (SSE-S3), aws:kms or aws:kms:dsse (SSE-KMS)");
  }
  const kmsKeyId = nonEmpty(q.get('kmsKeyId'));
  if (kmsKeyId && !sse) sse = 'aws:kms';
  if (kmsKeyId && sse === 'AES256') throw invalid("'kmsKeyId' needs sse=aws:kms");

  const qKey = nonEmpty(q.get('accessKeyId'));
  const qSecret = nonEmpty(q.get('secretAccessKey'));
  if (!!qKey !== !!qSecret) throw invalid("'accessKeyId' and 'secretAccessKey' go together");
  let credentials: S3Location['credentials'];
  if (qKey && qSecret) {
    credentials = { accessKeyId: qKey, secretAccessKey: qSecret, sessionToken: nonEmpty(q.get('sessionToken')) };
  } else if (env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY) {
    // What the SDK's default chain would take first anyway; read here so that `env` need not be
    // process.env.
    credentials = {
      accessKeyId: env.AWS_ACCESS_KEY_ID,
      secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
      sessionToken: nonEmpty(env.AWS_SESSION_TOKEN),
    };
  }
  const profile = nonEmpty(q.get('profile')) ?? nonEmpty(env.AWS_PROFILE);
  return {
    kind: 's3',
    bucket,
    prefix,
    region,
    endpoint,
    forcePathStyle,
    sse,
    kmsKeyId,
    credentials,
    profile,
    tuning: tuningFrom(q, options),
  };
}

const AZURE_PARAMS = ['endpoint', 'account', 'accountKey', 'sas', ...TUNING_PARAMS] as const;

/** Key=value;... as in the Azure portal's connection strings. */
function parseConnectionString(cs: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of cs.split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out.set(part.slice(0, i).trim().toLowerCase(), part.slice(i + 1).trim());
  }
  return out;
}

function parseAzure(url: URL, q: URLSearchParams, env: Env, options: StoreOptions): AzureLocation {
  checkQuery(q, AZURE_PARAMS, 'azure');
  const { name: container, prefix } = bucketAndPrefix(url, 'container');
  if (!/^(\$root|[a-z0-9][a-z0-9-]{1,61}[a-z0-9])$/.test(container)) {
    throw invalid('bad container name (3-63 lower-case letters, digits and dashes)');
  }
  const nonEmpty = (v: string | null | undefined): string | undefined => (v ? v : undefined);

  let account = nonEmpty(q.get('account'));
  let accountKey = nonEmpty(q.get('accountKey'));
  let sasToken = nonEmpty(q.get('sas'));
  let serviceUrl = nonEmpty(q.get('endpoint'));

  const cs = nonEmpty(env.AZURE_STORAGE_CONNECTION_STRING);
  if (cs && !accountKey && !sasToken) {
    const m = parseConnectionString(cs);
    if (m.get('usedevelopmentstorage') === 'true') {
      account ??= DEVSTORE_ACCOUNT;
      accountKey = DEVSTORE_KEY;
      serviceUrl ??= `${m.get('developmentstorageproxyuri') ?? 'http://127.0.0.1:10000'}/${DEVSTORE_ACCOUNT}`;
    } else {
      account ??= m.get('accountname');
      accountKey = m.get('accountkey');
      sasToken = m.get('sharedaccesssignature');
      if (!serviceUrl) {
        const blobEndpoint = m.get('blobendpoint');
        if (blobEndpoint) serviceUrl = blobEndpoint;
        else if (account) {
          serviceUrl = `${m.get('defaultendpointsprotocol') ?? 'https'}://${account}.blob.${
            m.get('endpointsuffix') ?? 'core.windows.net'
          }`;
        }
      }
      if (!accountKey && !sasToken) {
        throw invalid('AZURE_STORAGE_CONNECTION_STRING has neither AccountKey nor SharedAccessSignature');
      }
    }
  } else {
    account ??= nonEmpty(env.AZURE_STORAGE_ACCOUNT);
    if (!accountKey && !sasToken) {
      accountKey = nonEmpty(env.AZURE_STORAGE_KEY) ?? nonEmpty(env.AZURE_STORAGE_ACCESS_KEY);
      if (!accountKey) sasToken = nonEmpty(env.AZURE_STORAGE_SAS_TOKEN);
    }
  }
  if (serviceUrl) {
    serviceUrl = normalizeEndpoint(serviceUrl, 'the Azure endpoint');
    // Azurite and other emulators put the account in the path: http://127.0.0.1:10000/devstoreaccount1
    if (!account) {
      const u = new URL(serviceUrl);
      account = u.pathname.split('/').filter(Boolean)[0] ?? u.hostname.split('.')[0];
    }
  } else if (account) {
    serviceUrl = `https://${account}.blob.core.windows.net`;
  } else {
    throw new StorageError(
      'no Azure storage account given: set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with ' +
        'AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN, or add ?endpoint= to the repository URL',
      { code: 'no-credentials' },
    );
  }

  let auth: AzureAuth;
  if (sasToken) auth = { type: 'sas', sasToken: sasToken.replace(/^\?/, '') };
  else if (accountKey) {
    if (!account) throw invalid('an account key needs the account name (AZURE_STORAGE_ACCOUNT or ?account=)');
    auth = { type: 'shared-key', account, accountKey };
  } else {
    throw new StorageError(
      `no Azure credentials for account '${account}': set AZURE_STORAGE_CONNECTION_STRING, or ` +
        'AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN (with AZURE_STORAGE_ACCOUNT)',
      { code: 'no-credentials' },
    );
  }

  return { kind: 'azure', container, prefix, serviceUrl, auth, tuning: tuningFrom(q, options) };
}

// ---------------------------------------------------------------------------------------------

function prefixPart(prefix: string): string {
  if (!prefix) return '';
  return `/${prefix
    .slice(0, -1)
    .split('/')
    .map((s) => encodeURIComponent(s))
    .join('/')}`;
}

/** The location as a URL without any secret (credentials are never part of it). */
export function describeLocation(loc: RepoLocation): string {
  if (loc.kind === 'file') return pathToFileURL(loc.root).href;
  const q = new URLSearchParams();
  let head: string;
  if (loc.kind === 's3') {
    head = `s3://${loc.bucket}${prefixPart(loc.prefix)}`;
    if (loc.endpoint) q.set('endpoint', loc.endpoint);
    if (loc.region) q.set('region', loc.region);
    if (loc.endpoint || loc.forcePathStyle) q.set('forcePathStyle', String(loc.forcePathStyle));
    if (loc.sse) q.set('sse', loc.sse);
    if (loc.kmsKeyId) q.set('kmsKeyId', loc.kmsKeyId);
    if (loc.profile) q.set('profile', loc.profile);
  } else {
    head = `azure://${loc.container}${prefixPart(loc.prefix)}`;
    q.set('endpoint', loc.serviceUrl);
  }
  if (loc.tuning.partSize) q.set('partSize', String(loc.tuning.partSize));
  if (loc.tuning.queueSize) q.set('queueSize', String(loc.tuning.queueSize));
  const qs = q.toString().replace(/%3A/gi, ':').replace(/%2F/gi, '/');
  return qs ? `${head}?${qs}` : head;
}

/**
 * Removes secrets from text bound for an error message: the given values (raw and URL-encoded) and
 * anything shaped like a signature, key or token.
 */
export function redactSecrets(text: string, secrets: readonly string[] = []): string {
  let out = text;
  for (const s of secrets) {
    if (!s || s.length < 4) continue;
    for (const form of new Set([s, encodeURIComponent(s)])) out = out.split(form).join('***');
  }
  return out
    .replace(/([?&;](?:sig|signature|X-Amz-Signature|X-Amz-Security-Token|X-Amz-Credential)=)[^&\s"';]+/gi, '$1***')
    .replace(/((?:AccountKey|SharedAccessSignature|SharedAccessKey)=)[^;\s"']+/gi, '$1***')
    .replace(/(SharedKey(?:Lite)?\s+[^:\s]+:)[A-Za-z0-9+/=]+/g, '$1***')
    .replace(/(Signature=)[0-9a-f]{16,}/gi, '$1***');
}

// ---------------------------------------------------------------------------------------------

export interface DriverModule {
  createStore(loc: RepoLocation): ObjectStore;
}

/**
 * Opens the store named by a repository URL (or absolute path). `env` supplies the variables the
 * SDKs would read (credentials, region, endpoint); `options` tunes retries, timeouts and part sizes
 * (the URL's query wins over it).
 */
export async function openStore(url: string, env: Env = process.env, options: StoreOptions = {}): Promise<ObjectStore> {
  const loc = parseRepoUrl(url, env, options);
  return openLocation(loc);
}

export async function openLocation(loc: RepoLocation): Promise<ObjectStore> {
  const kind: StoreKind = loc.kind;
  let mod: DriverModule;
  switch (kind) {
    case 'file':
      mod = await import('./local.js');
      break;
    case 's3':
      mod = await import('./s3.js');
      break;
    case 'azure':
      mod = await import('./azure.js');
      break;
  }
  return mod.createStore(loc);
}
