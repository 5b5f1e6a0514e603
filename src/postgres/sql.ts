// Quoting for SQL built from names and values: node-postgres's own escaping, in one place.
import pg from 'pg';

export function ident(name: string): string {
  return pg.escapeIdentifier(name);
}

export function literal(value: string): string {
  return pg.escapeLiteral(value);
}
