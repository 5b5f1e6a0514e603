// Names a restore makes (a new database, a table restored beside the live one, a temporary
// database): recognisable, dated, and within PostgreSQL's 63 bytes.

/** PostgreSQL truncates longer identifiers silently (NAMEDATALEN - 1). */
export const MAX_IDENT_BYTES = 63;

/** 202611240315 (UTC): for names made by a run. */
export function nameStamp(now = new Date()): string {
  return now.toISOString().replace(/[-:T]/g, '').slice(0, 12);
}

/** `base` + `suffix` within PostgreSQL's 63 bytes, shortening `base` if needed. */
export function fitName(base: string, suffix: string): string {
  let b = base;
  while (Buffer.byteLength(b + suffix) > MAX_IDENT_BYTES && b.length > 0) b = b.slice(0, -1);
  return b + suffix;
}

export function identTooLong(name: string): boolean {
  return Buffer.byteLength(name) > MAX_IDENT_BYTES;
}
