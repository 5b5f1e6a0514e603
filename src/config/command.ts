// `pgrunbook profile save|list|show|delete`: manage saved settings without editing JSON.
import { CliUsageError, PROFILE, checkPositionals, commandHelp, parseCommand } from '../commands/registry.js';
import { checkRepoUrl } from '../commands/validate.js';
import { openProfileStore } from './store.js';
import { parseCriticalTable, profileHasSecrets, profilePasswordRefusal, type Profile } from './profile.js';
import { maskConnectionStrings } from '../engine/mask.js';
import { pgrunbookCommand } from '../engine/command-name.js';

const USAGE = `see: ${pgrunbookCommand('profile --help')}`;

export async function profileCommand(argv: string[], io: { stdout: NodeJS.WritableStream; env: NodeJS.ProcessEnv }): Promise<number> {
  // One strict parse against the declarations: unknown options and missing values are refused here.
  const { flags, positionals } = parseCommand(PROFILE, argv);
  if (flags.help) {
    io.stdout.write(commandHelp(PROFILE));
    return 0;
  }
  const [sub, name] = positionals;
  if (!['save', 'list', 'show', 'delete'].includes(sub)) {
    throw new CliUsageError(sub === undefined ? 'profile needs a subcommand: save, list, show or delete' : `unknown profile subcommand "${sub}"; valid: save, list, show, delete`, USAGE);
  }
  if (sub !== 'save' && Object.keys(flags).length) throw new CliUsageError(`profile ${sub} takes no options`, USAGE);
  checkPositionals(PROFILE, positionals);
  if (sub !== 'list' && !name) throw new CliUsageError(`profile ${sub} needs a NAME`, USAGE);
  if (sub === 'list' && name) throw new CliUsageError(`unexpected argument "${name}" for profile list`, USAGE);
  if (sub === 'save') {
    // Checked before the store is opened (which creates its directory): bad input creates nothing.
    if (typeof flags['server-control'] === 'string' && !['pg_ctl', 'systemd', 'commands'].includes(flags['server-control'])) {
      throw new CliUsageError(`--server-control: "${flags['server-control']}" is not one of: pg_ctl, systemd, commands`, USAGE);
    }
    if (typeof flags.repo === 'string') checkRepoUrl(flags.repo, io.env);
  }
  // Opened only once the input is known good: opening creates the store's directory and file.
  const openStore = () => openProfileStore(io.env);
  switch (sub) {
    case 'list':
      for (const n of (await openStore()).list()) io.stdout.write(`${n}\n`);
      return 0;
    case 'show': {
      const store = await openStore();
      const p = store.get(name);
      if (!p) throw new CliUsageError(`no profile named "${name}" (profiles: ${store.list().join(', ') || 'none'})`, `list them with: ${pgrunbookCommand('profile list')}`);
      const shown = JSON.parse(JSON.stringify(p)) as Profile;
      if (shown.connection?.password) shown.connection.password = '***';
      io.stdout.write(`${maskConnectionStrings(JSON.stringify(shown, null, 2))}\n`);
      return 0;
    }
    case 'delete':
      if (!(await openStore()).delete(name)) throw new CliUsageError(`no profile named "${name}"`, `list them with: ${pgrunbookCommand('profile list')}`);
      io.stdout.write(`deleted profile ${name}\n`);
      return 0;
    case 'save': {
      const s = (k: string) => (flags[k] === undefined ? undefined : String(flags[k]));
      // A password given now is refused before anything is opened or created.
      const given = s('dbname');
      const early = given && /[=]|:\/\//.test(given) ? profilePasswordRefusal({ connection: { conninfo: given } }) : undefined;
      if (early) throw new CliUsageError(early, 'put it in a password file: ~/.pgpass, or the file PGPASSFILE names');
      const store = await openStore();
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
      throw new CliUsageError(`unknown profile subcommand "${sub}"`, USAGE);
  }
}
