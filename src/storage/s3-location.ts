// s3:// repository URLs: s3://bucket/prefix?region=..&endpoint=..&forcePathStyle=true&sse=aws:kms&kmsKeyId=..
// Settings missing from the query come from the AWS SDK's usual environment variables.

import {
  describeBucketUrl,
  invalidUrl,
  nonEmpty,
  normalizeEndpoint,
  parseBool,
  parseBucketUrl,
  tuningFrom,
  TUNING_PARAMS,
  type LocationSyntax,
  type PrefixedLocation,
} from './location.js';

export type S3Sse = 'AES256' | 'aws:kms' | 'aws:kms:dsse';

export interface S3Location extends PrefixedLocation {
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

function parseSse(raw: string | undefined, kmsKeyId: string | undefined): S3Sse | undefined {
  let sse: S3Sse | undefined;
  if (raw) {
    const normalized = raw === 'AES256' || /^(sse-s3|s3|aes256)$/i.test(raw) ? 'AES256' : raw.toLowerCase();
    if (normalized === 'sse-kms' || normalized === 'kms') sse = 'aws:kms';
    else if (normalized === 'AES256' || normalized === 'aws:kms' || normalized === 'aws:kms:dsse') sse = normalized;
    else throw invalidUrl("'sse' must be AES256 (SSE-S3), aws:kms or aws:kms:dsse (SSE-KMS)");
  }
  if (kmsKeyId && !sse) sse = 'aws:kms';
  if (kmsKeyId && sse === 'AES256') throw invalidUrl("'kmsKeyId' needs sse=aws:kms");
  return sse;
}

export const s3Location: LocationSyntax<S3Location> = {
  parse(url, env, options) {
    const { q, name: bucket, prefix } = parseBucketUrl(url, S3_PARAMS, 's3', 'bucket');
    if (!/^[a-zA-Z0-9][a-zA-Z0-9._-]*$/.test(bucket)) throw invalidUrl('bad bucket name');

    const rawEndpoint = nonEmpty(q.get('endpoint')) ?? nonEmpty(env.AWS_ENDPOINT_URL_S3) ?? nonEmpty(env.AWS_ENDPOINT_URL);
    const endpoint = rawEndpoint ? normalizeEndpoint(rawEndpoint, 'the S3 endpoint') : undefined;
    let region = nonEmpty(q.get('region')) ?? nonEmpty(env.AWS_REGION) ?? nonEmpty(env.AWS_DEFAULT_REGION);
    if (!region && endpoint) region = 'us-east-1'; // S3-compatible stores mostly ignore it; the signer needs one
    if (region && !/^[a-z0-9-]+$/.test(region)) throw invalidUrl("bad 'region'");
    const forcePathStyle = q.has('forcePathStyle') ? parseBool(q.get('forcePathStyle')!, 'forcePathStyle') : !!endpoint;

    const kmsKeyId = nonEmpty(q.get('kmsKeyId'));
    const sse = parseSse(nonEmpty(q.get('sse')), kmsKeyId);

    const qKey = nonEmpty(q.get('accessKeyId'));
    const qSecret = nonEmpty(q.get('secretAccessKey'));
    if (!!qKey !== !!qSecret) throw invalidUrl("'accessKeyId' and 'secretAccessKey' go together");
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
  },

  describe(loc) {
    const q = new URLSearchParams();
    if (loc.endpoint) q.set('endpoint', loc.endpoint);
    if (loc.region) q.set('region', loc.region);
    if (loc.endpoint || loc.forcePathStyle) q.set('forcePathStyle', String(loc.forcePathStyle));
    if (loc.sse) q.set('sse', loc.sse);
    if (loc.kmsKeyId) q.set('kmsKeyId', loc.kmsKeyId);
    if (loc.profile) q.set('profile', loc.profile);
    return describeBucketUrl('s3', loc.bucket, loc.prefix, loc.tuning, q);
  },

  secrets(loc) {
    if (!loc.credentials) return [];
    return [loc.credentials.secretAccessKey, loc.credentials.sessionToken ?? ''].filter(Boolean);
  },
};
