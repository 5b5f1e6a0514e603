// Profiles live in one JSON file managed by `conf`, always mode 0600 because a profile may
// hold a password or a repository credential.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Profile } from './profile.js';
import { validateProfile } from './profile.js';
import { pgrunbookCommand } from '../engine/command-name.js';

export interface ProfileStore {
  path: string;
  list(): string[];
  get(name: string): Profile | undefined;
  set(name: string, profile: Profile): void;
  delete(name: string): boolean;
}

export class ProfileError extends Error {}

export async function openProfileStore(env: NodeJS.ProcessEnv = process.env): Promise<ProfileStore> {
  const { default: Conf } = await import('conf');
  const cwd = env.PGRUNBOOK_CONFIG_DIR ? path.resolve(env.PGRUNBOOK_CONFIG_DIR) : undefined;
  const conf = new Conf<{ profiles: Record<string, Profile> }>({
    projectName: 'pgrunbook',
    projectSuffix: '',
    ...(cwd ? { cwd } : {}),
    configName: 'profiles',
    configFileMode: 0o600,
    accessPropertiesByDotNotation: false,
    defaults: { profiles: {} },
  });
  const tighten = () => {
    try {
      fs.chmodSync(conf.path, 0o600);
    } catch {
      /* not written yet */
    }
  };
  return {
    path: conf.path,
    list: () => Object.keys(conf.get('profiles') ?? {}).sort(),
    get: (name) => conf.get('profiles')?.[name],
    set(name, profile) {
      if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new ProfileError(`profile name "${name}" may use letters, digits, ".", "_" and "-" only`);
      const errors = validateProfile(name, profile);
      if (errors.length) throw new ProfileError(errors.join('\n'));
      conf.set('profiles', { ...(conf.get('profiles') ?? {}), [name]: profile });
      tighten();
    },
    delete(name) {
      const all = { ...(conf.get('profiles') ?? {}) };
      if (!(name in all)) return false;
      delete all[name];
      conf.set('profiles', all);
      tighten();
      return true;
    },
  };
}

/** Load and validate one profile; the error names the profiles that exist. */
export async function loadProfile(name: string, env: NodeJS.ProcessEnv = process.env): Promise<Profile> {
  // Opening the store creates its file: a lookup where none was ever saved must create nothing.
  const file = knownProfilesFile(env);
  if (file && !fs.existsSync(file)) {
    throw new ProfileError(`no profile named "${name}" in ${file}. There are no profiles yet. Create one with: ${pgrunbookCommand(`profile save ${name}`)} --host HOST --port PORT --user USER`);
  }
  const store = await openProfileStore(env);
  const profile = store.get(name);
  if (!profile) {
    const known = store.list();
    throw new ProfileError(
      `no profile named "${name}" in ${store.path}. ${known.length ? `Profiles: ${known.join(', ')}.` : 'There are no profiles yet.'} Create one with: ${pgrunbookCommand(`profile save ${name}`)} --host HOST --port PORT --user USER`,
    );
  }
  const errors = validateProfile(name, profile);
  if (errors.length) throw new ProfileError(errors.join('\n'));
  return profile;
}

/** Where conf keeps the profiles, where that is certain (PGRUNBOOK_CONFIG_DIR; Linux's XDG rule). */
export function knownProfilesFile(env: NodeJS.ProcessEnv): string | undefined {
  if (env.PGRUNBOOK_CONFIG_DIR) return path.join(path.resolve(env.PGRUNBOOK_CONFIG_DIR), 'profiles.json');
  if (process.platform === 'linux') return path.join(env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config'), 'pgrunbook', 'profiles.json');
  return undefined;
}
