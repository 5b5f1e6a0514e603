// The replace-mode decisions of table-restore, on catalog facts written by hand: whether deleting
// the live rows would change other tables (ON DELETE actions), and whether the table's triggers
// can be kept from firing. No server needed: these are pure functions of what the catalog said.
import { describe, expect, it } from 'vitest';
import { referencesCheck, triggersCheck } from '../src/procedures/table-restore/replace-checks.js';
import type { ForeignKey, Trigger } from '../src/postgres/tables.js';

const fk = (onDelete: string): ForeignKey => ({
  name: 'lines_order_fk',
  child: 'public.order_lines',
  childOid: '2',
  childCols: ['order_id'],
  childTypes: ['integer'],
  parent: 'public.orders',
  parentOid: '1',
  parentCols: ['id'],
  onDelete,
});
const trigger = (enabled: string): Trigger => ({ table: 'public.orders', name: `t_${enabled}`, enabled });
const facts = (over: Partial<Parameters<typeof referencesCheck>[0]>) => ({
  schema: 'public',
  table: 'orders',
  user: 'app',
  refs: [],
  triggers: [],
  mayReplica: false,
  mayAlter: false,
  ...over,
});

describe('table-restore replace checks', () => {
  it('an ON DELETE CASCADE reference refuses the replace when session_replication_role may not be set, naming the table and the action', () => {
    const r = referencesCheck(facts({ refs: [fk('c')] }));
    expect(r.ok).toBe(false);
    expect(r.detail).toContain('public.order_lines (ON DELETE CASCADE)');
    expect(r.detail).toContain('user "app" may not set session_replication_role');
  });

  it('the same reference is allowed with session_replication_role = replica (keys checked instead)', () => {
    const r = referencesCheck(facts({ refs: [fk('c')], mayReplica: true }));
    expect(r).toMatchObject({ name: 'replace possible', ok: true });
    expect(r.detail).toContain('every key they reference must be in the dump');
  });

  it('a NO ACTION reference is allowed without replica, saying how to grant it', () => {
    const r = referencesCheck(facts({ refs: [fk('a')] }));
    expect(r.ok).toBe(true);
    expect(r.detail).toContain('GRANT SET ON PARAMETER session_replication_role TO "app"');
  });

  it('no triggers: no check; triggers a non-owner may not disable: refused', () => {
    expect(triggersCheck(facts({}))).toBeUndefined();
    const r = triggersCheck(facts({ triggers: [trigger('O')] }));
    expect(r).toMatchObject({ name: 'triggers', ok: false });
    expect(r!.detail).toContain('may not disable them');
  });

  it('with replica only ALWAYS and REPLICA triggers are disabled; ordinary ones do not fire anyway', () => {
    const r = triggersCheck(facts({ triggers: [trigger('O'), trigger('A')], mayReplica: true, mayAlter: true }));
    expect(r!.ok).toBe(true);
    expect(r!.detail).toMatch(/^public\.orders: t_A: disabled inside the copy's transaction/);
    expect(r!.detail).toContain('public.orders: t_O: do not fire during the copy');
    expect(triggersCheck(facts({ triggers: [trigger('O')], mayReplica: true }))).toMatchObject({ ok: true, detail: expect.stringContaining('they do not fire during the copy') });
  });
});
