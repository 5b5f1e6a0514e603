// `pgrunbook profile save|list|show|delete`: manage saved settings without editing JSON.
import { parseArgv } from '../engine/params.js';
import { openProfileStore } from './store.js';
import { parseCriticalTable, profileHasSecrets, profilePasswordRefusal, type Profile } from './profile.js';
import { maskConnectionStrings } from '../engine/mask.js';

const USAGE = `Usage:
  pgrunbook profile save NAME [--host H] [--port P] [--user U] [--dbname DB|CONNINFO|URI] [--pgdata DIR]
                              [--databases a,b] [--critical-tables db:schema.table[:min],...] [--repo URL]
                              [--server-log FILE] [--server-control pg_ctl|systemd|commands] [--systemd-unit UNIT]
                              [--start-command CMD] [--stop-command CMD] [--server-env NAME,...]
  pgrunbook profile list
  pgrunbook profile show NAME
  pgrunbook profile delete NAME
Passwords are not stored in profiles: put them in a password file (~/.pgpass or PGPASSFILE).`;

export async function profileCommand(argv: string[], io: { stdout: NodeJS.WritableStream; env: NodeJS.ProcessEnv }): Promise<number> {
  const [sub, name, ...rest] = argv;
  const store = await openProfileStore(io.env);
  switch (sub) {
    case 'list':
      for (const n of store.list()) io.stdout.write(`${n}\n`);
      return 0;
    case 'show': {
      if (!name) throw new Error(`profile show needs a NAME\n${USAGE}`);
      const p = store.get(name);
      if (!p) throw new Error(`no profile named "${name}" (profiles: ${store.list().join(', ') || 'none'})`);
      const shown = JSON.parse(JSON.stringify(p)) as Profile;
      if (shown.connection?.password) shown.connection.password = '***';
      io.stdout.write(maskConnectionStrings(JSON.stringify(shown, null, 2)) + '\n');
      return 0;
    }
    case 'delete':
      if (!name) throw new Error(`profile delete needs a NAME\n${USAGE}`);
      if (!store.delete(name)) throw new Error(`no profile named "${name}"`);
      io.stdout.write(`deleted profile ${name}\n`);
      return 0;
    case 'save': {
      if (!name || name.startsWith('-')) throw new Error(`profile save needs a NAME\n${USAGE}`);
      const { flags, positionals } = parseArgv(rest, new Set());
      if (positionals.length) throw new Error(`unexpected argument "${positionals[0]}"\n${USAGE}`);
      const known = ['host', 'port', 'user', 'dbname', 'pgdata', 'databases', 'critical-tables', 'repo', 'server-log', 'server-control', 'systemd-unit', 'start-command', 'stop-command', 'server-env'];
      for (const k of Object.keys(flags)) if (!known.includes(k)) throw new Error(`unknown option --${k} for profile save\n${USAGE}`);
      const s = (k: string) => (flags[k] === undefined ? undefined : String(flags[k]));
      const profile: Profile = { ...(store.get(name) ?? {}) };
      const connection = { ...(profile.connection ?? {}) };
      if (s('host')) connection.host = s('host');
      if (s('port')) connection.port = Number(s('port'));
      if (s('user')) connection.user = s('user');
      if (s('dbname')) {
        if (/[=]|:\/\//.test(s('dbname')!)) connection.conninfo = s('dbname');
        else connection.database = s('dbname');
      }
      if (Object.keys(connection).length) profile.connection = connection;
      if (s('pgdata')) profile.pgdata = s('pgdata');
      if (s('databases')) profile.databases = s('databases')!.split(',').map((x) => x.trim()).filter(Boolean);
      if (s('critical-tables')) {
        profile.criticalTables = s('critical-tables')!.split(',').map((spec) => {
          const t = parseCriticalTable(spec);
          if ('error' in t) throw new Error(t.error);
          return t.minRows === undefined ? { database: t.database, table: t.table } : t;
        });
      }
      if (s('repo')) profile.repo = s('repo');
      if (s('server-log')) profile.serverLog = s('server-log');
      if (s('server-control')) {
        profile.server = { method: s('server-control') as 'pg_ctl' | 'systemd' | 'commands', unit: s('systemd-unit'), start: s('start-command'), stop: s('stop-command') };
        for (const k of ['unit', 'start', 'stop'] as const) if (profile.server[k] === undefined) delete profile.server[k];
      }
      if (s('server-env') !== undefined) {
        // Variables the server gets from our environment when pgrunbook starts it (nothing else is passed).
        const names = s('server-env')!.split(',').map((x) => x.trim()).filter(Boolean);
        const bad = names.find((n) => !/^[A-Za-z_][A-Za-z0-9_]*$/.test(n));
        if (bad) throw new Error(`--server-env: "${bad}" is not an environment variable name; give names separated by commas, e.g. --server-env PGRUNBOOK_REPO,HTTPS_PROXY`);
        profile.server = { ...(profile.server ?? { method: 'pg_ctl' }), passEnv: names };
      }
      const refusal = profilePasswordRefusal(profile);
      if (refusal) throw new Error(refusal);
      store.set(name, profile);
      io.stdout.write(`saved profile ${name} in ${store.path}${profileHasSecrets(profile) ? ' (holds a secret; file mode 0600)' : ''}\n`);
      return 0;
    }
    default:
      throw new Error(USAGE);
  }
}
