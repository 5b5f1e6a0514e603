// Quoting for SQL text, one way for the whole program: node-postgres's own escaping.
import pg from 'pg';

/** A quoted identifier: "my ""odd"" name". */
export function ident(name: string): string {
  return pg.escapeIdentifier(name);
}

/** A quoted literal: 'it''s', or E'a\\b' when it holds a backslash. */
export function literal(value: string): string {
  return pg.escapeLiteral(value);
}
