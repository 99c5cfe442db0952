import * as fs from 'node:fs';
import { NativeConnection, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { createActivities, type ActivityDeps } from '../activities';
import { DEFAULT_OPERATOR_PATH, loadConfig, resolveConfigPath, type BuildHostConfig, type LoadedConfig, type LoadOptions } from '../src/config';
import { toolPaths } from '../src/setup/tools';
import { connectHost, type Host } from '../src/host';
import { s3StoreDeps } from './store';

/** Workflows run here; activities run on each build host's own queue. */
export const ORCHESTRATOR_TASK_QUEUE = 'rootfs-orchestrator';
export const hostTaskQueue = (alias: string) => `rootfs-host-${alias}`;

export interface WorkerOptions {
  connection: NativeConnection;
  namespace: string;
  /** How the config is found; it is re-read for every step. */
  configOptions?: LoadOptions;
  /** Pre-bundled workflow code (tests bundle once); default: bundle from source. */
  workflowBundle?: WorkflowBundleWithSourceMap;
  /** The image store; default: S3 as the config says. */
  store?: Pick<ActivityDeps, 'upload' | 'listBucket'>;
  /** How long running steps may finish on shutdown before they are cancelled. */
  shutdownGraceMs?: number;
}

/** Keeps one connection to the build host, reconnecting when its config changes or it drops. */
/** Connects to the configured build host (an SSH key path is taken relative to the config file). */
export function connectBuildHost(loaded: LoadedConfig): Promise<Host> {
  const target: BuildHostConfig = loaded.config.buildHost;
  return connectHost(target.kind === 'ssh' ? { ...target, keyPath: resolveConfigPath(loaded, target.keyPath) } : target);
}

function hostProvider(): { host(loaded: LoadedConfig): Promise<Host>; close(): Promise<void> } {
  let current: { config: string; host: Promise<Host> } | undefined;
  return {
    async host(loaded) {
      const config = JSON.stringify(loaded.config.buildHost);
      if (current?.config !== config) {
        const previous = current;
        current = { config, host: connectBuildHost(loaded) };
        current.host.catch(() => (current = undefined));
        if (previous) void previous.host.then((h) => h.close()).catch(() => {});
      }
      return current.host;
    },
    async close() {
      if (current) await (await current.host.catch(() => undefined))?.close();
    },
  };
}

/**
 * The operator binary to install: the configured one; when the config leaves the default
 * (`./infra.operator-linux`) and no such file exists, the reference operator setup built.
 */
export function operatorPath(loaded: LoadedConfig): string {
  const configured = resolveConfigPath(loaded, loaded.config.operator.path);
  if (loaded.config.operator.path === DEFAULT_OPERATOR_PATH && !fs.existsSync(configured)) return toolPaths().referenceOperator;
  return configured;
}

/** The local files a pipeline needs for a loaded config: the operator binary and the archive keyring. */
export function pipelinePaths(loaded: LoadedConfig): { operatorPath: string; keyringPath: string } {
  return {
    operatorPath: operatorPath(loaded),
    keyringPath: loaded.config.base.keyring ? resolveConfigPath(loaded, loaded.config.base.keyring) : toolPaths().ubuntuKeyring,
  };
}

/** Runs the orchestrator worker and the build-host worker until `signal` aborts (graceful shutdown). */
export async function runWorkers(opts: WorkerOptions, signal: AbortSignal): Promise<void> {
  const read = () => loadConfig(opts.configOptions);
  const first = read();
  const hosts = hostProvider();
  const activities = createActivities({
    loadConfig: read,
    host: () => hosts.host(read()),
    paths: pipelinePaths,
    ...(opts.store ?? s3StoreDeps()),
  });
  const grace = opts.shutdownGraceMs ?? 30_000;
  const orchestrator = await Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: ORCHESTRATOR_TASK_QUEUE,
    ...(opts.workflowBundle ? { workflowBundle: opts.workflowBundle } : { workflowsPath: require.resolve('../workflows') }),
    shutdownGraceTime: grace,
  });
  const host = await Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: hostTaskQueue(first.config.buildHost.alias),
    activities,
    // Steps are heavy (debootstrap, mkfs): a few at a time on one host.
    maxConcurrentActivityTaskExecutions: 4,
    // The live view and Temporal Web show a step's phase and last output line from its heartbeat:
    // send them every 2 s instead of the default (up to 80% of the heartbeat timeout).
    maxHeartbeatThrottleInterval: '2s',
    shutdownGraceTime: grace,
  });
  const stop = () => {
    orchestrator.shutdown();
    host.shutdown();
  };
  if (signal.aborted) stop();
  else signal.addEventListener('abort', stop, { once: true });
  try {
    // Both run to their end before this returns, also when one fails: the caller closes the
    // connection next, which must not happen while a worker still holds it.
    const ended = await Promise.allSettled([orchestrator.run(), host.run()]);
    const failed = ended.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      stop();
      throw failed.reason;
    }
  } finally {
    await hosts.close();
  }
}
