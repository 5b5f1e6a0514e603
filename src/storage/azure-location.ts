// azure://container/prefix repository URLs (?endpoint=http://127.0.0.1:10000/devstoreaccount1 for
// Azurite). Credentials come from the query or the AZURE_STORAGE_* environment variables.

import { StorageError } from './types.js';
import {
  describeBucketUrl,
  invalidUrl,
  nonEmpty,
  normalizeEndpoint,
  parseBucketUrl,
  tuningFrom,
  TUNING_PARAMS,
  type Env,
  type LocationSyntax,
  type PrefixedLocation,
} from './location.js';

export type AzureAuth =
  | { type: 'shared-key'; account: string; accountKey: string }
  | { type: 'sas'; sasToken: string };

export interface AzureLocation extends PrefixedLocation {
  kind: 'azure';
  container: string;
  /** Blob service URL without query, e.g. https://acct.blob.core.windows.net or
   *  http://127.0.0.1:10000/devstoreaccount1 (Azurite). */
  serviceUrl: string;
  auth: AzureAuth;
}

const DEVSTORE_ACCOUNT = 'devstoreaccount1';
// Azurite's published well-known development key (not a secret, but treated as one anyway).
const DEVSTORE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

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

interface AzureSettings {
  account?: string;
  accountKey?: string;
  sasToken?: string;
  serviceUrl?: string;
}

/** The query's settings, completed from the connection string or the other AZURE_STORAGE_* variables. */
function settingsFrom(q: URLSearchParams, env: Env): AzureSettings {
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
        throw invalidUrl('AZURE_STORAGE_CONNECTION_STRING has neither AccountKey nor SharedAccessSignature');
      }
    }
  } else {
    account ??= nonEmpty(env.AZURE_STORAGE_ACCOUNT);
    if (!accountKey && !sasToken) {
      accountKey = nonEmpty(env.AZURE_STORAGE_KEY) ?? nonEmpty(env.AZURE_STORAGE_ACCESS_KEY);
      if (!accountKey) sasToken = nonEmpty(env.AZURE_STORAGE_SAS_TOKEN);
    }
  }
  return { account, accountKey, sasToken, serviceUrl };
}

export const azureLocation: LocationSyntax<AzureLocation> = {
  parse(url, env, options) {
    const { q, name: container, prefix } = parseBucketUrl(url, AZURE_PARAMS, 'azure', 'container');
    if (!/^(\$root|[a-z0-9][a-z0-9-]{1,61}[a-z0-9])$/.test(container)) {
      throw invalidUrl('bad container name (3-63 lower-case letters, digits and dashes)');
    }
    const { accountKey, sasToken, ...where } = settingsFrom(q, env);
    let { account, serviceUrl } = where;
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
      if (!account) throw invalidUrl('an account key needs the account name (AZURE_STORAGE_ACCOUNT or ?account=)');
      auth = { type: 'shared-key', account, accountKey };
    } else {
      throw new StorageError(
        `no Azure credentials for account '${account}': set AZURE_STORAGE_CONNECTION_STRING, or ` +
          'AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN (with AZURE_STORAGE_ACCOUNT)',
        { code: 'no-credentials' },
      );
    }
    return { kind: 'azure', container, prefix, serviceUrl, auth, tuning: tuningFrom(q, options) };
  },

  describe(loc) {
    const q = new URLSearchParams();
    q.set('endpoint', loc.serviceUrl);
    return describeBucketUrl('azure', loc.container, loc.prefix, loc.tuning, q);
  },

  secrets(loc) {
    return [loc.auth.type === 'shared-key' ? loc.auth.accountKey : loc.auth.sasToken];
  },
};
