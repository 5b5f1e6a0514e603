// libpq's conventions, end to end against a real cluster with SSL on (a test CA and a server
// certificate for host name "localhost") and a password-authenticated role: service files,
// sslmode with libpq's meaning, the password file, and a password on the command line.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveConnection } from '../src/config/connection.js';
import { PgConnectionError, connectPg, type PgConnection } from '../src/postgres/client.js';
import { libpqEnv } from '../src/postgres/libpq.js';
import { isRoot, lookupUser } from '../src/postgres/osuser.js';
import { createSandboxCluster, type SandboxCluster } from '../src/postgres/sandbox.js';
import { jsonLines, runCli, serverWritableDir, tempDir } from './helpers/cli.js';

const PASSWORD = 'Pw-uNiQue-7731';

async function openssl(args: string[], cwd: string): Promise<void> {
  const r = await execa('openssl', args, { cwd, reject: false });
  if (r.exitCode !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${r.stderr}`);
}

async function rejectionOf(p: Promise<unknown>): Promise<PgConnectionError> {
  try {
    const c = (await p) as { end(): Promise<void> };
    await c.end();
  } catch (e) {
    return e as PgConnectionError;
  }
  throw new Error('expected the connection to fail');
}

/** Whether a session made with these settings is encrypted (fails the test if it cannot connect). */
async function sslInUse(conn: PgConnection): Promise<boolean> {
  const c = await connectPg(conn);
  try {
    const r = await c.query<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    return r.rows[0].ssl;
  } finally {
    await c.end();
  }
}

function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true, recursive: true }).filter((d) => d.isFile()).map((d) => path.join(d.parentPath, d.name));
}

describe('libpq conventions', () => {
  let cluster: SandboxCluster;
  let certs: string;
  let work: string;
  let rootCert: string;
  let otherCa: string;
  let psql: string;

  beforeAll(async () => {
    certs = await serverWritableDir('pgrb-ssl-');
    work = tempDir('pgrb-libpq-');
    await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=pgrunbook test CA'], certs);
    await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'other.key', '-out', 'other.crt', '-days', '2', '-subj', '/CN=another CA'], certs);
    await openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost'], certs);
    fs.writeFileSync(path.join(certs, 'ext.cnf'), 'subjectAltName=DNS:localhost\n');
    await openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'ext.cnf'], certs);
    fs.chmodSync(path.join(certs, 'server.key'), 0o600);
    fs.chmodSync(path.join(certs, 'server.crt'), 0o644);
    if (isRoot()) {
      const pg = await lookupUser('postgres');
      for (const f of ['server.key', 'server.crt']) fs.chownSync(path.join(certs, f), pg.uid, pg.gid);
    }
    rootCert = path.join(certs, 'ca.crt');
    otherCa = path.join(certs, 'other.crt');

    cluster = await createSandboxCluster({
      name: 'libpq-ssl',
      settings: { ssl: 'on', ssl_cert_file: path.join(certs, 'server.crt'), ssl_key_file: path.join(certs, 'server.key'), listen_addresses: '127.0.0.1' },
    });
    psql = path.join(cluster.binDir, 'psql');
    // pwuser must give a password over TCP; the first matching pg_hba.conf line wins.
    await cluster.query(`CREATE ROLE pwuser LOGIN SUPERUSER PASSWORD '${PASSWORD}'`);
    const hba = path.join(cluster.dataDir, 'pg_hba.conf');
    fs.writeFileSync(hba, `host all pwuser 127.0.0.1/32 scram-sha-256\n${fs.readFileSync(hba, 'utf8')}`);
    await cluster.query('SELECT pg_reload_conf()');
    // The reload is asynchronous: wait until pwuser is asked for a password.
    const deadline = Date.now() + 20_000;
    for (;;) {
      const e = await rejectionOf(connectPg({ host: '127.0.0.1', port: cluster.port, user: 'pwuser', database: 'postgres', passfile: '/nonexistent', sslmode: 'disable' })).catch(() => undefined);
      if (e?.reason === 'no-password') break;
      if (Date.now() > deadline) throw new Error(`pg_hba.conf reload did not take effect: ${e?.message}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  });

  afterAll(async () => {
    await cluster?.remove();
    for (const d of [certs, work]) if (d) fs.rmSync(d, { recursive: true, force: true });
  });

  const tcp = (host: string, extra: Partial<PgConnection> = {}): PgConnection => ({ host, port: cluster.port, user: 'postgres', database: 'postgres', ...extra });

  it('PGSERVICE with a service file (PGSERVICEFILE) reaches the cluster through the real CLI', async () => {
    const serviceFile = path.join(work, 'pg_service.conf');
    fs.writeFileSync(serviceFile, `# test services\n[other]\nhost=/nonexistent\n\n[rb]\nhost=127.0.0.1\nport=${cluster.port}\nuser=postgres\ndbname=postgres\n`);
    const state = path.join(work, 'state-service');
    const r = await runCli(['--procedure', 'verify', '--json'], { PGSERVICE: 'rb', PGSERVICEFILE: serviceFile, PGRUNBOOK_STATE_DIR: state });
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
    expect(jsonLines(r.stdout).at(-1)!.summary).toBeDefined();

    // The same service given as service= in --dbname, and a missing one named with what to do.
    const viaDbname = await runCli(['--procedure', 'verify', '--json', '--dbname', 'service=rb'], { PGSERVICEFILE: serviceFile, PGRUNBOOK_STATE_DIR: state });
    expect(viaDbname.exitCode, viaDbname.stderr).toBe(0);
    const missing = await runCli(['--procedure', 'verify'], { PGSERVICE: 'nope', PGSERVICEFILE: serviceFile, PGRUNBOOK_STATE_DIR: state });
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toContain('definition of service "nope" not found');
  });

  it('a service, sslmode and application_name reach child programs (psql) as PG* variables', async () => {
    const serviceFile = path.join(work, 'child_service.conf');
    fs.writeFileSync(serviceFile, `[child]\nhost=localhost\nport=${cluster.port}\nuser=postgres\ndbname=postgres\nsslmode=verify-full\nsslrootcert=${rootCert}\n`);
    const conn = resolveConnection({}, { PGSERVICE: 'child', PGSERVICEFILE: serviceFile });
    expect(conn).toMatchObject({ host: 'localhost', sslmode: 'verify-full', applicationName: 'pgrunbook' });
    const env = libpqEnv(conn, { PATH: process.env.PATH, PGSERVICE: 'child', PGSERVICEFILE: serviceFile });
    expect(env.PGSERVICE).toBeUndefined();
    const ok = await execa(psql, ['-X', '-At', '-c', 'SELECT s.ssl, a.application_name FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE pid = pg_backend_pid()'], { env, extendEnv: false, reject: false });
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(ok.stdout.trim()).toBe('t|pgrunbook');
    // Host 127.0.0.1 is not in the certificate: libpq in the child refuses too.
    const bad = await execa(psql, ['-X', '-At', '-c', 'SELECT 1'], { env: libpqEnv({ ...conn, host: '127.0.0.1' }, { PATH: process.env.PATH }), extendEnv: false, reject: false });
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stderr).toMatch(/does not match host name "127\.0\.0\.1"/);
  });

  it('sslmode has libpq meaning: verify-full checks the host name, verify-ca only the chain, require only encrypts', async () => {
    expect(await sslInUse(tcp('localhost', { sslmode: 'verify-full', sslrootcert: rootCert }))).toBe(true);

    const mismatch = await rejectionOf(connectPg(tcp('127.0.0.1', { sslmode: 'verify-full', sslrootcert: rootCert })));
    expect(mismatch).toBeInstanceOf(PgConnectionError);
    expect(mismatch.reason).toBe('ssl');
    expect(mismatch.message).toMatch(/host name mismatch: the server's certificate does not name "127\.0\.0\.1"/);
    expect(mismatch.message).toContain('sslmode=verify-ca');

    expect(await sslInUse(tcp('127.0.0.1', { sslmode: 'verify-ca', sslrootcert: rootCert }))).toBe(true);
    const wrongCa = await rejectionOf(connectPg(tcp('127.0.0.1', { sslmode: 'verify-ca', sslrootcert: otherCa })));
    expect(wrongCa.reason).toBe('ssl');
    expect(wrongCa.message).toMatch(/could not be verified with the root certificate/);
    const noRoot = await rejectionOf(connectPg(tcp('localhost', { sslmode: 'verify-full', sslrootcert: path.join(work, 'missing.crt') })));
    expect(noRoot.message).toMatch(/root certificate file ".*missing\.crt" does not exist/);

    // require: encrypted, with no root certificate at all.
    expect(await sslInUse(tcp('127.0.0.1', { sslmode: 'require', sslrootcert: path.join(work, 'missing.crt') }))).toBe(true);
    // prefer (the default) encrypts when the server can; disable never does.
    expect(await sslInUse(tcp('127.0.0.1'))).toBe(true);
    expect(await sslInUse(tcp('127.0.0.1', { sslmode: 'disable' }))).toBe(false);

    // Through the CLI: the mismatch is reported, naming the cause.
    const cli = await runCli(['--procedure', 'verify', '--dbname', `host=127.0.0.1 port=${cluster.port} user=postgres dbname=postgres sslmode=verify-full sslrootcert=${rootCert}`], {
      PGRUNBOOK_STATE_DIR: path.join(work, 'state-ssl'),
    });
    expect(cli.exitCode).not.toBe(0);
    expect(cli.stdout + cli.stderr).toMatch(/host name mismatch/);
  });

  it('PGPASSFILE is honoured by our connections and by child programs', async () => {
    const passfile = path.join(work, 'pgpass');
    fs.writeFileSync(passfile, `# comment\nelsewhere:5432:*:pwuser:wrong\n127.0.0.1:${cluster.port}:*:pwuser:${PASSWORD}\n`, { mode: 0o600 });
    const conn = { host: '127.0.0.1', port: cluster.port, user: 'pwuser', database: 'postgres' };
    const none = await rejectionOf(connectPg({ ...conn, passfile: path.join(work, 'no-such-passfile') }));
    expect(none.reason).toBe('no-password');
    expect(await sslInUse({ ...conn, passfile })).toBe(true);

    const resolved = resolveConnection({ host: '127.0.0.1', port: cluster.port, user: 'pwuser', dbname: 'postgres' }, { PGPASSFILE: passfile });
    expect(resolved.password).toBeUndefined();
    const child = await execa(psql, ['-X', '-At', '--no-password', '-c', 'SELECT current_user'], { env: libpqEnv(resolved, { PATH: process.env.PATH }), extendEnv: false, reject: false });
    expect(child.exitCode, child.stderr).toBe(0);
    expect(child.stdout.trim()).toBe('pwuser');

    const r = await runCli(['--procedure', 'verify', '--json', '--host', '127.0.0.1', '--port', String(cluster.port), '--user', 'pwuser', '--dbname', 'postgres'], {
      PGPASSFILE: passfile,
      PGRUNBOOK_STATE_DIR: path.join(work, 'state-passfile'),
    });
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
  });

  it('a password in --dbname is warned about once and reaches neither stdout nor the journal', async () => {
    const state = path.join(work, 'state-password');
    const r = await runCli(['--procedure', 'verify', '--json', '--dbname', `postgresql://pwuser:${PASSWORD}@127.0.0.1:${cluster.port}/postgres`], { PGRUNBOOK_STATE_DIR: state });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr.match(/holds a password/g)).toHaveLength(1);
    expect(r.stderr).toMatch(/~\/\.pgpass, or the file PGPASSFILE names/);
    expect(r.stdout).not.toContain(PASSWORD);
    expect(r.stderr).not.toContain(PASSWORD);
    const files = filesUnder(state);
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) expect(fs.readFileSync(f, 'utf8'), f).not.toContain(PASSWORD);
  });
});
