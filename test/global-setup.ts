// vitest globalSetup: one shared sandbox PostgreSQL cluster for the whole run.
// Tests reach it through test/helpers/cluster.ts (sharedCluster()).
import type { TestProject } from 'vitest/node';
import { createSandboxCluster, killSandboxClustersSync } from '../src/postgres/sandbox.js';

/** Plain JSON handed to the test workers. */
export interface SharedClusterInfo {
  /** Unix socket directory (use as host). */
  host: string;
  port: number;
  /** Database superuser. */
  user: string;
  dataDir: string;
  logFile: string;
  baseDir: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    sharedCluster: SharedClusterInfo;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const cluster = await createSandboxCluster({ name: 'vitest-shared' });

  // Ctrl-C / kill of the vitest process: the postmaster runs in its own session (pg_ctl setsid),
  // so it would outlive us. Kill it and delete its directory synchronously.
  const onSignal = (signal: NodeJS.Signals) => {
    killSandboxClustersSync();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    // If nobody else handles the signal, re-raise it for the default behaviour (exit).
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const info: SharedClusterInfo = {
    host: cluster.host,
    port: cluster.port,
    user: cluster.user,
    dataDir: cluster.dataDir,
    logFile: cluster.logFile,
    baseDir: cluster.baseDir,
  };
  project.provide('sharedCluster', info);

  return async () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cluster.remove();
  };
}
