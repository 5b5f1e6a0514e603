// Secrets never reach a terminal, a log line or the journal. Two layers: known secret
// values are replaced wherever they appear, and anything shaped like a connection string
// has its password removed even when we never learned the value.

export const MASK = '***';

const URI_PASSWORD = /\b([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*):([^@/\s]*)@/gi;
const CONNINFO_PASSWORD = /\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'&]+)/gi;
const QUERY_SECRET = /([?&](?:password|sslpassword|sig|secret|secretaccesskey|accountkey|sas|token)=)([^&\s#]+)/gi;
const ACCOUNT_KEY = /((?:AccountKey|SharedAccessSignature)=)([^;\s]+)/gi;

export function maskConnectionStrings(text: string): string {
  return text
    .replace(URI_PASSWORD, (_m, head: string) => `${head}:${MASK}@`)
    .replace(CONNINFO_PASSWORD, (_m, head: string) => `${head}${MASK}`)
    .replace(QUERY_SECRET, (_m, head: string) => `${head}${MASK}`)
    .replace(ACCOUNT_KEY, (_m, head: string) => `${head}${MASK}`);
}

export class Masker {
  private readonly secrets = new Set<string>();

  /** Short values (a 1-3 character password) would blank out ordinary words; mask only 4+. */
  add(value: string | undefined): void {
    if (value && value.length >= 4) this.secrets.add(value);
  }

  text(value: string): string {
    let out = value;
    // Longest first, so a secret that contains another is masked whole.
    for (const secret of [...this.secrets].sort((a, b) => b.length - a.length)) {
      if (out.includes(secret)) out = out.split(secret).join(MASK);
    }
    return maskConnectionStrings(out);
  }

  /** Deep copy with every string masked. */
  deep<T>(value: T): T {
    if (typeof value === 'string') return this.text(value) as T;
    if (Array.isArray(value)) return value.map((v) => this.deep(v)) as T;
    if (value && typeof value === 'object') {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(value)) out[k] = this.deep(v);
      return out as T;
    }
    return value;
  }
}
