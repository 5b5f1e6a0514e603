// Quoting for SQL text we must build (ALTER SYSTEM takes no parameters): node-postgres's own
// escaping, in one place.
import { escapeIdentifier, escapeLiteral } from 'pg';

export function ident(name: string): string {
  return escapeIdentifier(name);
}

export function literal(value: string): string {
  return escapeLiteral(value);
}
