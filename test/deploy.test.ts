// The Dockerfile and deploy/kubernetes/ as a platform team would apply them. No container engine
// or cluster here: the files are parsed and checked against each other and against the built CLI
// (procedure names and options come from `pgrunbook --list` / `--help`, not from a copy).
import fs from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { ROOT, runCli, tempDir } from './helpers/cli.js';

const DEPLOY = path.join(ROOT, 'deploy', 'kubernetes');

interface Doc {
  file: string;
  obj: any;
}

function loadManifests(): Doc[] {
  const docs: Doc[] = [];
  for (const file of fs.readdirSync(DEPLOY).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    for (const d of parseAllDocuments(fs.readFileSync(path.join(DEPLOY, file), 'utf8'))) {
      if (d.errors.length) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
      const obj = d.toJS();
      if (obj) docs.push({ file, obj });
    }
  }
  return docs;
}

interface Instruction {
  cmd: string;
  args: string;
}

function parseDockerfile(text: string): Instruction[] {
  const joined = text
    .split('\n')
    .filter((l) => !/^\s*#/.test(l))
    .join('\n')
    .replace(/\\\n/g, ' ');
  return joined
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => {
      const m = /^(\S+)\s+(.*)$/.exec(l);
      if (!m) throw new Error(`Dockerfile: cannot parse "${l}"`);
      return { cmd: m[1].toUpperCase(), args: m[2] };
    });
}

const docs = loadManifests();
const byKind = (kind: string) => docs.filter((d) => d.obj.kind === kind);
const dockerfile = parseDockerfile(fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'));
/** The instructions of the stage named `name` (`FROM ... AS name`), its FROM first. */
function stage(name: string): Instruction[] {
  const start = dockerfile.findIndex((i) => i.cmd === 'FROM' && new RegExp(`\\sAS\\s+${name}$`, 'i').test(i.args));
  if (start < 0) return [];
  const next = dockerfile.findIndex((i, n) => n > start && i.cmd === 'FROM');
  return dockerfile.slice(start, next < 0 ? undefined : next);
}
// The client-only image every job but restore-test runs; `restore-test` adds the server programs.
const finalStage = stage('runtime');
const restoreTestStage = stage('restore-test');
const imageUid = Number(/useradd\b[^&]*--uid (\d+)/.exec(finalStage.filter((i) => i.cmd === 'RUN').map((i) => i.args).join(' '))?.[1]);

let procedures: string[] = [];
const helpFor = new Map<string, string>();
let globalHelp = '';
const env = { PGRUNBOOK_STATE_DIR: tempDir('pgrunbook-deploy-') };

beforeAll(async () => {
  const list = await runCli(['--list'], env);
  expect(list.exitCode).toBe(0);
  procedures = list.stdout.split('\n').map((l) => l.split(/\s+/)[0]).filter(Boolean);
  globalHelp = (await runCli(['--help'], env)).stdout;
  for (const name of [...procedures, 'status']) {
    const r = await runCli(name === 'status' ? ['status', '--help'] : ['--procedure', name, '--help'], env);
    helpFor.set(name, r.stdout);
  }
});

describe('Dockerfile', () => {
  it('builds in a stage with npm ci, keeps production dependencies only, and runs pgrunbook on Node LTS as a non-root user with the PostgreSQL client', () => {
    const froms = dockerfile.filter((i) => i.cmd === 'FROM');
    expect(froms.length).toBeGreaterThanOrEqual(2);
    expect(froms[0].args).toMatch(/\bAS build$/i);
    for (const f of froms) expect(f.args).toMatch(/^(node:(20|22|24)-[a-z-]+|runtime)(\s|$)/);
    // `docker build .` (no --target) makes the client-only image.
    expect(froms.at(-1)!.args).toBe('runtime');
    expect(finalStage.length).toBeGreaterThan(1);

    const buildRuns = dockerfile.slice(0, dockerfile.indexOf(finalStage[0])).filter((i) => i.cmd === 'RUN').map((i) => i.args);
    expect(buildRuns.some((r) => /npm ci\b(?!.*--omit=dev)/.test(r))).toBe(true); // with dev deps: the build
    expect(buildRuns.some((r) => /npm ci\b.*--omit=dev/.test(r))).toBe(true); // then production only

    const arg = dockerfile.find((i) => i.cmd === 'ARG' && i.args.startsWith('PG_MAJOR='));
    expect(finalStage.some((i) => i.cmd === 'ARG' && i.args === 'PG_MAJOR')).toBe(true);
    expect(Number(arg?.args.split('=')[1])).toBeGreaterThanOrEqual(15);
    expect(finalStage.some((i) => i.cmd === 'RUN' && /apt-get install\b.*postgresql-client-\$\{PG_MAJOR\}/.test(i.args))).toBe(true);
    expect(finalStage.some((i) => i.cmd === 'RUN' && /apt-get install\b.*"postgresql-\$\{PG_MAJOR\}"/.test(i.args))).toBe(false);
    expect(finalStage.some((i) => i.cmd === 'COPY' && /--from=build\s+\S*node_modules/.test(i.args))).toBe(true);

    const users = finalStage.filter((i) => i.cmd === 'USER');
    expect(users.length).toBeGreaterThan(0);
    const user = users[users.length - 1].args.split(':')[0];
    expect(['root', '0']).not.toContain(user);
    expect(Number(user)).toBe(imageUid); // numeric, so Kubernetes' runAsNonRoot can check it
    expect(dockerfile.indexOf(users[users.length - 1])).toBeGreaterThan(dockerfile.lastIndexOf(finalStage.filter((i) => i.cmd === 'RUN').at(-1)!));

    const entry = finalStage.filter((i) => i.cmd === 'ENTRYPOINT').at(-1);
    expect(JSON.parse(entry!.args)).toEqual(['pgrunbook']);
    const stateDir = finalStage.filter((i) => i.cmd === 'ENV').map((i) => /PGRUNBOOK_STATE_DIR=(\S+)/.exec(i.args)?.[1]).find(Boolean);
    expect(stateDir).toBe('/var/lib/pgrunbook');
  });

  it('a restore-test target: the runtime image plus the PostgreSQL server programs (no cluster of its own), still non-root', () => {
    expect(restoreTestStage[0]?.args).toMatch(/^runtime\s+AS\s+restore-test$/i);
    expect(restoreTestStage.some((i) => i.cmd === 'ARG' && i.args === 'PG_MAJOR')).toBe(true);
    const run = restoreTestStage.filter((i) => i.cmd === 'RUN').map((i) => i.args).join(' ');
    expect(run).toMatch(/apt-get install\b.*"postgresql-\$\{PG_MAJOR\}"/);
    expect(run).toMatch(/create_main_cluster = false/);
    const users = restoreTestStage.filter((i) => i.cmd === 'USER');
    expect(Number(users.at(-1)?.args.split(':')[0])).toBe(imageUid);
    expect(restoreTestStage.indexOf(users.at(-1)!)).toBeGreaterThan(restoreTestStage.lastIndexOf(restoreTestStage.filter((i) => i.cmd === 'RUN').at(-1)!));
  });

  it('copies only files that exist and that .dockerignore lets through', () => {
    const ignored = fs
      .readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    const sources = dockerfile
      .filter((i) => i.cmd === 'COPY' && !i.args.includes('--from='))
      .flatMap((i) => i.args.split(/\s+/).slice(0, -1));
    expect(sources.length).toBeGreaterThan(0);
    for (const src of sources) {
      expect(fs.existsSync(path.join(ROOT, src)), src).toBe(true);
      expect(ignored.filter((pat) => src === pat || src.startsWith(`${pat}/`)), src).toEqual([]);
    }
    for (const needed of ['package.json', 'package-lock.json', 'tsconfig.build.json', 'src', 'scripts/disaster-recovery']) expect(sources).toContain(needed);
    expect(ignored).toEqual(expect.arrayContaining(['node_modules', 'dist', 'test', '.git']));
  });
});

describe('deploy/kubernetes', () => {
  it('parses, and kustomization.yaml applies every manifest in the folder', () => {
    const kustomization = docs.find((d) => d.file === 'kustomization.yaml')!.obj;
    const manifests = fs.readdirSync(DEPLOY).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml').sort();
    expect([...kustomization.resources].sort()).toEqual(manifests);
    const names = byKind('CronJob').map((d) => d.obj.metadata.name).sort();
    expect(names).toEqual(['pgrunbook-backup-base', 'pgrunbook-backup-logical', 'pgrunbook-restore-test', 'pgrunbook-retention', 'pgrunbook-status']);
    expect(docs.some((d) => JSON.stringify(d.obj).includes('emptyDir'))).toBe(false);
  });

  it('every CronJob: the image, a known procedure with known options, the journal on the PVC, secrets by secretKeyRef, Forbid, non-root', () => {
    const kustomization = docs.find((d) => d.file === 'kustomization.yaml')!.obj;
    const imageName = kustomization.images[0].name as string;
    // restore-test runs the image built with --target restore-test (it needs the server programs).
    const imageNames = (kustomization.images as { name: string }[]).map((i) => i.name);
    expect(imageNames).toEqual([imageName, `${imageName}-restore-test`]);
    const pvcs = new Set(byKind('PersistentVolumeClaim').map((d) => d.obj.metadata.name));
    const secrets = new Map(byKind('Secret').map((d) => [d.obj.metadata.name, d.obj]));
    const used = new Set<string>();
    expect(procedures).toContain('backup-logical');

    for (const { file, obj } of byKind('CronJob')) {
      const what = `${file} (${obj.metadata.name})`;
      expect(obj.apiVersion, what).toBe('batch/v1');
      expect(obj.spec.concurrencyPolicy, what).toBe('Forbid');
      const job = obj.spec.jobTemplate.spec;
      expect(job.backoffLimit, what).toBe(0);
      const pod = job.template.spec;
      expect(pod.restartPolicy, what).toBe('Never');
      expect(pod.securityContext.runAsNonRoot, what).toBe(true);
      expect(pod.securityContext.runAsUser, what).toBe(imageUid);
      expect(pod.containers).toHaveLength(1);
      const c = pod.containers[0];
      const wantImage = c.args[0] === '--procedure' && c.args[1] === 'restore-test' ? `${imageName}-restore-test` : imageName;
      expect(c.image.split(':')[0], what).toBe(wantImage);
      expect(c.command, `${what}: the image's ENTRYPOINT runs pgrunbook`).toBeUndefined();

      // args: `--procedure NAME ...` with NAME from `pgrunbook --list`, or `status ...`
      const args: string[] = c.args;
      expect(args.every((a) => typeof a === 'string'), what).toBe(true);
      const name = args[0] === 'status' ? 'status' : args[0] === '--procedure' ? args[1] : undefined;
      expect(name && (name === 'status' || procedures.includes(name)), `${what}: args ${JSON.stringify(args)}`).toBe(true);
      used.add(name!);
      if (name !== 'status') expect(args, what).toEqual(expect.arrayContaining(['--yes', '--json']));
      for (const flag of args.filter((a) => a.startsWith('--'))) {
        const known = helpFor.get(name!)!.includes(flag) || globalHelp.includes(flag);
        expect(known, `${what}: ${flag} is not an option of ${name}`).toBe(true);
      }

      // The journal directory is a mount of a PersistentVolumeClaim defined here.
      const envs: any[] = c.env;
      const stateDir = envs.find((e) => e.name === 'PGRUNBOOK_STATE_DIR')?.value;
      expect(stateDir, what).toBeTruthy();
      const mount = c.volumeMounts.find((m: any) => m.mountPath === stateDir);
      expect(mount, `${what}: nothing mounted at ${stateDir}`).toBeDefined();
      const volume = pod.volumes.find((v: any) => v.name === mount.name);
      expect(pvcs.has(volume?.persistentVolumeClaim?.claimName), `${what}: ${stateDir} is not on a PVC of pvc.yaml`).toBe(true);
      expect(pod.volumes.every((v: any) => v.persistentVolumeClaim), what).toBe(true);

      // Credentials only by reference to the Secret, which has the key.
      for (const e of envs.filter((e) => /PASSWORD|SECRET|ACCESS_KEY|TOKEN|CONNECTION_STRING|STORAGE_KEY/.test(e.name))) {
        const ref = e.valueFrom?.secretKeyRef;
        expect(ref, `${what}: ${e.name} must come from a secretKeyRef`).toBeDefined();
        expect(e.value, what).toBeUndefined();
        expect(Object.keys(secrets.get(ref.name)?.stringData ?? {}), `${what}: ${ref.name}/${ref.key}`).toContain(ref.key);
      }
      expect(envs.some((e) => e.name === 'PGPASSWORD'), what).toBe(true);
      const repo = envs.find((e) => e.name === 'PGRUNBOOK_REPO')?.value as string;
      expect(repo, what).toMatch(/^(s3|azure|file):\/\//);

      if (name === 'restore-test') {
        const dir = args[args.indexOf('--scratch-dir') + 1];
        const m = c.volumeMounts.find((v: any) => v.mountPath === dir);
        expect(m, `${what}: --scratch-dir ${dir} is on no mounted volume`).toBeDefined();
        expect(pvcs.has(pod.volumes.find((v: any) => v.name === m.name).persistentVolumeClaim.claimName)).toBe(true);
      }
      if (name === 'retention') expect(args[args.indexOf('--confirm') + 1], `${what}: --confirm is the repository URL without its query`).toBe(repo.split('?')[0]);
      if (name === 'status') {
        expect(args).toContain('--prometheus');
        const out = args[args.indexOf('--output') + 1];
        const outMount = c.volumeMounts.find((m: any) => out.startsWith(`${m.mountPath}/`));
        expect(outMount, `${what}: ${out} is on no mounted volume`).toBeDefined();
        expect(pvcs.has(pod.volumes.find((v: any) => v.name === outMount.name).persistentVolumeClaim.claimName)).toBe(true);
      }
    }
    expect([...used].sort()).toEqual(['backup-base', 'backup-logical', 'restore-test', 'retention', 'status']);
  });

  it('the Secret holds placeholders only', () => {
    const secretDocs = byKind('Secret');
    expect(secretDocs).toHaveLength(1);
    const secret = secretDocs[0].obj;
    expect(secret.data).toBeUndefined();
    const values = Object.values(secret.stringData as Record<string, string>);
    expect(values.length).toBeGreaterThan(0);
    for (const v of values) expect(v).toBe('CHANGE_ME');
  });

  it('the README points at the Dockerfile and deploy/kubernetes/ instead of inline YAML', () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const scheduling = readme.slice(readme.indexOf('### Scheduling'), readme.indexOf('### Health check script'));
    expect(scheduling).toContain('docker build -t pgrunbook .');
    expect(scheduling).toContain('deploy/kubernetes/');
    expect(scheduling).toContain('pgrunbook-state');
    expect(scheduling).not.toContain('```yaml');
    expect(scheduling).toContain('```cron');
  });
});
