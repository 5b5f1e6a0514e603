// Step "repository" and what the apply steps prepare: PostgreSQL runs archive_command as the
// server's OS user, so that user must reach and write the repository (a file:// one), read the
// program archive_command runs, and read the 0600 env file holding the repository's credentials.
// The checks only read; the directory and the env file are written after every confirmation.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { shellQuote } from '../../engine/runner.js';
import { firstUntraversableDir, isRoot, userNameOf } from '../../postgres/osuser.js';
import { openRepository } from '../../repo/repository.js';
import { parseRepoUrl, secretsOf } from '../../storage/url.js';
import { defaultServerEnvFile, serverEnvFileStatus, serverEnvFileVars, writeServerEnvFile } from '../pgrunbook-command.js';
import { dataDirOf, desiredArchiveCommand, inspectionOf, localDataDir, proposalOf, registerRepoSecrets, repoPrepOf, repoUrl } from './context.js';
import { ownerText } from './plan.js';
import type { EnvFilePlan, Finding, RepoPrep, ServerUser, WalCtx } from './types.js';

/** The OS user owning the data directory (PostgreSQL runs as it), with its groups; undefined when the directory is not visible here. */
async function serverOsUser(dir: string | undefined): Promise<ServerUser | undefined> {
  if (!dir) return undefined;
  const st = await fsp.stat(dir).catch(() => undefined);
  if (!st) return undefined; // a remote server
  const name = (await userNameOf(st.uid)) ?? String(st.uid);
  const groups = new Set<number>([st.gid]);
  let groupName = String(st.gid);
  try {
    for (const line of (await fsp.readFile('/etc/group', 'utf8')).split('\n')) {
      const [gname, , gid, members] = line.split(':');
      if (gid === undefined) continue;
      if (Number(gid) === st.gid) groupName = gname;
      if ((members ?? '').split(',').includes(name)) groups.add(Number(gid));
    }
  } catch {
    // no /etc/group: primary group only
  }
  // The server's own primary group is the owner's primary group in practice; the data dir's gid stands in for it.
  return { name, uid: st.uid, gid: st.gid, groupName, groups: [...groups] };
}

function permits(st: fs.Stats, user: ServerUser, bits: { r?: boolean; w?: boolean; x?: boolean }): boolean {
  if (user.uid === 0) return true;
  const want = (bits.r ? 4 : 0) | (bits.w ? 2 : 0) | (bits.x ? 1 : 0);
  const shift = st.uid === user.uid ? 6 : user.groups.includes(st.gid) ? 3 : 0;
  return ((st.mode >> shift) & want) === want;
}

/** firstUntraversableDir with the user's supplementary groups taken into account. */
async function firstUntraversableDirFor(dir: string, user: ServerUser): Promise<string | undefined> {
  for (const gid of user.groups) {
    // A directory blocks only if no membership lets the user through.
    if (!(await firstUntraversableDir(dir, { uid: user.uid, gid }))) return undefined;
  }
  return firstUntraversableDir(dir, { uid: user.uid, gid: user.gid });
}

/** Check the repository, the env file and the archive program for the server's OS user; record what to prepare in the state. */
export async function checkRepository(ctx: WalCtx): Promise<Finding[]> {
  const svc = ctx.services;
  const repo = repoUrl(ctx);
  const loc = parseRepoUrl(repo, svc.env);
  inspectionOf(ctx);
  const serverUser = await serverOsUser(dataDirOf(ctx));
  const prep: RepoPrep = { kind: loc.kind, serverUser };
  ctx.state.repoPrep = prep;
  const out: Finding[] = [];

  if (loc.kind === 'file') {
    prep.root = loc.root;
    if (!serverUser) {
      out.push({
        text: `cannot see the server's data directory here, so cannot check that its OS user can write ${loc.root}; a file:// repository must be on the server's machine and writable by the user PostgreSQL runs as`,
        level: 'warn',
      });
    } else out.push(await checkFileRepository(loc.root, serverUser, prep));
  } else out.push(await reachRepository(repo, svc.env));

  const envFile = ctx.state.envFile;
  if (envFile) out.push(...(await checkEnvFile(ctx, envFile, serverUser, prep)));
  else if (loc.kind !== 'file') out.push({ text: noEnvFileReason(ctx, loc.kind), level: 'warn' });

  const keyFile = svc.env.PGRUNBOOK_REPO_KEY_FILE;
  if (keyFile && !ctx.params.archiveCommand) out.push(await checkKeyFile(keyFile, serverUser));
  await checkArchiveProgram(ctx, serverUser);
  if (secretsOf(loc).some((s) => repo.includes(s) || repo.includes(encodeURIComponent(s)))) {
    out.push({
      text: 'the repository URL carries credentials; in archive_command they would be stored in postgresql.auto.conf. Prefer credentials in the server\'s environment or a wrapper script (--archive-command).',
      level: 'warn',
    });
  }
  return out;
}

/** An S3 or Azure repository: prove we reach it; the server's own credentials are only proven by the final segment. */
async function reachRepository(url: string, env: NodeJS.ProcessEnv): Promise<Finding> {
  const repo = await openRepository(url, env);
  try {
    for await (const entry of repo.store.list('wal/')) return { text: `${repo.describe()} is reachable and already holds WAL (first: ${entry.key})` };
    return { text: `${repo.describe()} is reachable (no WAL archived there yet)` };
  } finally {
    await repo.close().catch(() => undefined);
  }
}

function noEnvFileReason(ctx: WalCtx, kind: 's3' | 'azure'): string {
  if (ctx.params.archiveCommand) {
    return 'PostgreSQL starts with a clean environment: your --archive-command must find the repository\'s credentials itself (e.g. a wrapper that reads them from a file only the server\'s OS user can read). The last step proves it.';
  }
  if (serverEnvFileVars(repoUrl(ctx), ctx.services.env)) {
    return 'the server\'s data directory is not visible here, so no env file with the repository\'s credentials is written for it: pass --server-env-file FILE (a path on the server\'s machine), or give the server the credentials yourself. The last step proves it.';
  }
  return `this environment holds no ${kind === 's3' ? 'AWS_*' : 'AZURE_STORAGE_*'} variables, so archive_command gets no env file: the server must find the repository's credentials itself (e.g. an instance role). The last step proves it.`;
}

/** A file:// repository the server's OS user can write, or one we may create for it (recorded in prep.create). */
async function checkFileRepository(root: string, serverUser: ServerUser, prep: RepoPrep): Promise<Finding> {
  const chownHint = `chown -R ${serverUser.name}:${serverUser.groupName} ${shellQuote(root)}`;
  let st: fs.Stats | undefined;
  try {
    st = await fsp.stat(root);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`cannot inspect the repository directory ${root}: ${(e as Error).message}`);
  }
  if (!st) return planRepositoryDir(root, serverUser, prep, chownHint);
  if (!st.isDirectory()) throw new Error(`the repository ${root} is not a directory; pass --repo file:///a/directory`);
  const blocked = await firstUntraversableDirFor(root, serverUser);
  if (blocked) {
    throw new Error(
      `PostgreSQL runs archive_command as OS user ${serverUser.name}, which cannot enter ${blocked} (on the way to the repository ${root}). ` +
        `Let it through: chmod o+x ${shellQuote(blocked)} (or choose a repository directory it can reach).`,
    );
  }
  const walDir = path.join(root, 'wal');
  const walSt = await fsp.stat(walDir).catch(() => undefined);
  const notWritable = [
    !permits(st, serverUser, { w: true, x: true }) ? { dir: root, st } : undefined,
    walSt && !permits(walSt, serverUser, { w: true, x: true }) ? { dir: walDir, st: walSt } : undefined,
  ].find(Boolean);
  if (notWritable) {
    const owner = (await userNameOf(notWritable.st.uid)) ?? String(notWritable.st.uid);
    throw new Error(
      `the repository directory ${notWritable.dir} is not writable by ${serverUser.name}, the OS user PostgreSQL runs archive_command as ` +
        `(it is owned by ${owner}, mode ${(notWritable.st.mode & 0o7777).toString(8).padStart(4, '0')}). Fix it with: ${chownHint}`,
    );
  }
  return { text: `${root} exists and ${serverUser.name} (the server's OS user) can write it` };
}

/** A missing repository directory: created (after confirmation) owned by the server's OS user, when we can. */
async function planRepositoryDir(root: string, serverUser: ServerUser, prep: RepoPrep, chownHint: string): Promise<Finding> {
  const missing: string[] = [];
  let parent = root;
  while (!fs.existsSync(parent)) {
    missing.unshift(parent);
    parent = path.dirname(parent);
  }
  const parentSt = await fsp.stat(parent);
  const self = isRoot() || process.getuid?.() === serverUser.uid;
  const blocked = await firstUntraversableDirFor(parent, serverUser);
  if (blocked) {
    throw new Error(
      `the repository ${root} does not exist, and ${serverUser.name} (the server's OS user) cannot enter ${blocked} to reach it. ` +
        `Choose a directory it can reach, or: chmod o+x ${shellQuote(blocked)}`,
    );
  }
  const canCreate = self && (isRoot() || (parentSt.uid === process.getuid?.() && (parentSt.mode & 0o300) === 0o300));
  if (!canCreate) throw new Error(`the repository directory ${root} does not exist. Create it for the server's OS user: mkdir -p ${shellQuote(root)} && ${chownHint}`);
  prep.create = missing;
  return { text: `${root} does not exist: it will be created owned by ${serverUser.name}:${serverUser.groupName} once the settings are confirmed`, level: 'warn' };
}

/** An encrypted repository: archive_command names the key file, which the server's OS user alone must read. */
async function checkKeyFile(file: string, serverUser: ServerUser | undefined): Promise<Finding> {
  if (!serverUser) return { text: `archive_command reads the repository key from ${file}: make sure it is on the server's machine, owned by the server's OS user, mode 0600`, level: 'warn' };
  const st = await fsp.stat(file);
  const fix = `chown ${serverUser.name} ${shellQuote(file)} && chmod 600 ${shellQuote(file)}`;
  if (serverUser.uid !== 0 && st.uid !== serverUser.uid) {
    const owner = (await userNameOf(st.uid)) ?? String(st.uid);
    throw new Error(`archive_command reads the repository key from ${file} as OS user ${serverUser.name}, but the file belongs to ${owner}. Give it to the server's user: ${fix}`);
  }
  if ((st.mode & 0o077) !== 0) throw new Error(`the repository key file ${file} can be read by other users (mode ${(st.mode & 0o777).toString(8)}): ${fix}`);
  const blocked = await firstUntraversableDirFor(path.dirname(file), serverUser);
  if (blocked) throw new Error(`${serverUser.name} (the server's OS user) cannot enter ${blocked}, so archive_command could not read the key file ${file}: move it, or chmod o+x ${shellQuote(blocked)}`);
  return { text: `${file} (mode 0600, owner ${serverUser.name}) holds the repository key; archive_command names only the file` };
}

/** The server's OS user must be able to run the command we set. */
async function checkArchiveProgram(ctx: WalCtx, serverUser: ServerUser | undefined): Promise<void> {
  const program = desiredArchiveCommand(ctx).program;
  if (!program || !serverUser || !proposalOf(ctx).changes.some((c) => c.name === 'archive_command')) return;
  const script = program.script;
  const blocked = await firstUntraversableDirFor(path.dirname(script), serverUser);
  const st = await fsp.stat(script).catch(() => undefined);
  if (blocked || !st || !permits(st, serverUser, { r: true })) {
    throw new Error(
      `archive_command would run ${script} as OS user ${serverUser.name}, which cannot ${blocked ? `enter ${blocked}` : `read ${script}`}. ` +
        `Install pgrunbook where ${serverUser.name} can read it (e.g. npm install -g), make it readable (chmod -R o+rX), or pass --archive-command.`,
    );
  }
}

/** Whether `file` is `dir` or lies inside it. */
function isInside(file: string, dir: string): boolean {
  const rel = path.relative(path.resolve(dir), path.resolve(file));
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** Where the env file goes, whether the server's OS user can read it there, and whether it must be (re)written. */
async function checkEnvFile(ctx: WalCtx, envFile: EnvFilePlan, serverUser: ServerUser | undefined, prep: RepoPrep): Promise<Finding[]> {
  const insp = inspectionOf(ctx);
  for (const d of [localDataDir(ctx), insp.serverDataDirectory]) {
    if (!d) continue;
    const real = await fsp.realpath(d).catch(() => d);
    if (isInside(envFile.path, d) || isInside(envFile.path, real)) {
      throw new Error(
        `--server-env-file ${envFile.path} is inside the data directory ${d}: base backups copy the data directory into the repository, credentials included. ` +
          `Put it next to it instead, e.g. --server-env-file ${shellQuote(defaultServerEnvFile(d, insp.clusterName))}`,
      );
    }
  }
  const dir = path.dirname(envFile.path);
  const dirSt = await fsp.stat(dir).catch(() => undefined);
  if (!dirSt?.isDirectory()) throw new Error(`the directory of the env file ${envFile.path} does not exist: create it (reachable by the server's OS user) or pass another --server-env-file`);
  if (serverUser) await checkEnvFileReachable(envFile, dir, serverUser);
  const owner = serverUser ? { uid: serverUser.uid, gid: serverUser.gid } : undefined;
  const status = await serverEnvFileStatus(envFile.path, repoUrl(ctx), ctx.services.env, owner);
  prep.writeEnvFile = status === 'missing' || status === 'stale';
  const who = ownerText(prep);
  const out: Finding[] = [];
  if (status === 'current') out.push({ text: `${envFile.path} (mode 0600, owner ${who}) holds the repository's variables for archive_command: ${envFile.names.join(', ')}` });
  else
    out.push({
      text:
        `PostgreSQL starts with a clean environment, so archive_command reads the repository's credentials from ${envFile.path}: ` +
        `${status === 'missing' ? 'it will be written' : 'it differs from this environment (contents, mode or owner) and will be rewritten'} ` +
        `(mode 0600, owner ${who}) with ${envFile.names.join(', ')} once the settings are confirmed`,
      level: 'warn',
    });
  if (!serverUser) out.push({ text: `the server's data directory is not visible here: make sure ${envFile.path} is on the server's machine and owned by its OS user`, level: 'warn' });
  return out;
}

async function checkEnvFileReachable(envFile: EnvFilePlan, dir: string, serverUser: ServerUser): Promise<void> {
  const blocked = await firstUntraversableDirFor(dir, serverUser);
  if (blocked) {
    throw new Error(
      `${serverUser.name} (the server's OS user) cannot enter ${blocked}, so archive_command could not read the env file ${envFile.path}. ` +
        `Pass --server-env-file in a directory it can reach, or: chmod o+x ${shellQuote(blocked)}`,
    );
  }
  if (!isRoot() && process.getuid?.() !== serverUser.uid) {
    throw new Error(
      `the env file ${envFile.path} must belong to ${serverUser.name} (the server's OS user) and be readable only by it; this user cannot give it away. Run this as root or as ${serverUser.name}.`,
    );
  }
}

/**
 * The spool of asynchronous archiving, mode 0700 and owned by the server's OS user (wal-push
 * creates it too, when the server may write its parent). Only when we may hand it over; else
 * the first wal-push makes it, or archives synchronously and says why.
 */
export async function createSpoolDir(ctx: WalCtx): Promise<void> {
  const spool = ctx.state.spool;
  const user = repoPrepOf(ctx).serverUser;
  if (!spool || !user || fs.existsSync(spool)) return;
  const mine = process.getuid?.() === user.uid;
  if (!isRoot() && !mine) return;
  try {
    await fsp.mkdir(spool, { mode: 0o700 });
    if (!mine) await fsp.chown(spool, user.uid, user.gid);
    ctx.log(`created the spool ${spool} (mode 0700, owner ${user.name})`);
  } catch (e) {
    ctx.log(`could not create the spool ${spool} (${(e as Error).message}); the first wal-push creates it, or archives synchronously`, 'warn');
  }
}

/** Create the missing repository directories the repository step found, owned by the server's OS user. */
export async function createRepositoryDir(ctx: WalCtx): Promise<void> {
  const prep = repoPrepOf(ctx);
  if (!prep.create?.length || !prep.serverUser) return;
  for (const dir of prep.create) {
    try {
      await fsp.mkdir(dir, { mode: 0o750 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`could not create the repository directory ${dir}: ${(e as Error).message}`);
    }
    if (isRoot()) await fsp.chown(dir, prep.serverUser.uid, prep.serverUser.gid);
  }
  ctx.log(`created ${prep.create.at(-1)} owned by ${prep.serverUser.name}:${prep.serverUser.groupName}`);
}

/**
 * Write the server's env file when the repository step found it missing or stale. Returns how to
 * undo it (remove a new file, put back the old one) for when the settings are rolled back.
 */
export async function writeEnvFile(ctx: WalCtx): Promise<() => Promise<void>> {
  const prep = repoPrepOf(ctx);
  const plan = ctx.state.envFile;
  if (!plan || !prep.writeEnvFile) return async () => undefined;
  registerRepoSecrets(ctx);
  const repo = repoUrl(ctx);
  const env = ctx.services.env;
  const previous = await fsp
    .stat(plan.path)
    .then(async (st) => ({ st, data: await fsp.readFile(plan.path) }))
    .catch(() => undefined);
  const owner = prep.serverUser ? { uid: prep.serverUser.uid, gid: prep.serverUser.gid } : undefined;
  const names = Object.keys(serverEnvFileVars(repo, env) ?? {});
  const written = await writeServerEnvFile(plan.path, repo, env, owner);
  if (!written) {
    throw new Error(
      `this environment no longer holds the repository's credentials (${plan.names.join(', ')}) that ${plan.path} was planned with: run again with them set (when resuming, the same environment as the run being resumed)`,
    );
  }
  ctx.log(`wrote ${written} (mode 0600, owner ${ownerText(prep)}): ${names.join(', ')}`);
  return async () => {
    try {
      if (!previous) {
        await fsp.rm(plan.path, { force: true });
        ctx.log(`rolled back: removed ${plan.path}`, 'warn');
      } else {
        await fsp.writeFile(plan.path, previous.data, { mode: 0o600 });
        await fsp.chmod(plan.path, previous.st.mode & 0o7777);
        if (isRoot()) await fsp.chown(plan.path, previous.st.uid, previous.st.gid);
        ctx.log(`rolled back: ${plan.path} has its previous contents again`, 'warn');
      }
    } catch (err) {
      ctx.log(`could not roll back ${plan.path} (${(err as Error).message})`, 'error');
    }
  };
}
