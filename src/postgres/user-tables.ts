// One definition for backup-logical (which counts these tables' rows into dump.json) and
// logical-restore (which compares them): both must mean the same tables.
// The tables whose rows pg_dump writes: ordinary and partitioned tables outside the system schemas,
// not temporary (other sessions' pg_temp_N), not owned by an extension (CREATE EXTENSION recreates
// those on restore; pg_dump does not dump their rows). A partitioned table's count includes its
// partitions, which are counted on their own too.
export const USER_TABLES_SQL = `
  SELECT n.nspname, c.relname
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p')
     AND c.relpersistence <> 't'
     AND n.nspname NOT IN ('pg_catalog', 'information_schema')
     AND n.nspname NOT LIKE 'pg\\_toast%'
     AND n.nspname NOT LIKE 'pg\\_temp\\_%'
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                      WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
   ORDER BY n.nspname, c.relname`;
