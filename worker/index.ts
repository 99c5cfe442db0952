import { NativeConnection, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { createActivities, type ActivityDeps } from '../activities';
import { loadConfig, type LoadedConfig, type LoadOptions } from '../src/config';
import { connectBuildHost, type Host } from '../src/host';
import { s3StoreDeps } from '../src/store/build-upload';

/** Workflows run here; activities run on each build host's own queue. */
export const ORCHESTRATOR_TASK_QUEUE = 'rootfs-orchestrator';
export const hostTaskQueue = (alias: string) => `rootfs-host-${alias}`;

export interface WorkerOptions {
  connection: NativeConnection;
  namespace: string;
  /** How this worker's config is found: read once, for the build host it drives and its local files. */
  configOptions?: LoadOptions;
  /** Pre-bundled workflow code (tests bundle once); default: bundle from source. */
  workflowBundle?: WorkflowBundleWithSourceMap;
  /** The image store; default: S3 as the config says. */
  store?: Pick<ActivityDeps, 'upload' | 'listBucket'>;
  /** How long running steps may finish on shutdown before they are cancelled. */
  shutdownGraceMs?: number;
}

/** One connection to the build host, made on first use; a failed attempt is made again on the next. */
function hostProvider(loaded: LoadedConfig): { host(): Promise<Host>; close(): Promise<void> } {
  let current: Promise<Host> | undefined;
  return {
    host() {
      if (!current) {
        current = connectBuildHost(loaded);
        current.catch(() => (current = undefined));
      }
      return current;
    },
    async close() {
      if (current) await (await current.catch(() => undefined))?.close();
    },
  };
}

/** Runs the orchestrator worker and the build-host worker until `signal` aborts (graceful shutdown). */
export async function runWorkers(opts: WorkerOptions, signal: AbortSignal): Promise<void> {
  // What a build builds comes with each step (its spec); this config says only which build host
  // this worker drives and where its local files are, so it is read once.
  const first = loadConfig(opts.configOptions);
  const hosts = hostProvider(first);
  const activities = createActivities({
    worker: first,
    host: () => hosts.host(),
    ...(opts.store ?? s3StoreDeps()),
  });
  const grace = opts.shutdownGraceMs ?? 30_000;
  const orchestrator = await Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: ORCHESTRATOR_TASK_QUEUE,
    ...(opts.workflowBundle
      ? { workflowBundle: opts.workflowBundle }
      : { workflowsPath: require.resolve('../workflows') }),
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
