import { spawn, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NativeConnection } from '@temporalio/worker';
import { stringify } from 'yaml';
import { buildSpecOf, type BuildSpec } from '../../src/pipeline/build-spec';
import { loadConfig, type S3Config } from '../../src/config';
import { requireTool } from '../../src/setup/tools';
import { hostTaskQueue, runWorkers, type WorkerOptions } from '../../worker';
import type { BuildOptions } from '../../workflows/types';
import { seedKernel } from './kernel';
import { onCleanup, tempDir } from './process';
import { testS3 } from './s3';
import { testTemporal, workflowBundle } from './temporal';

/**
 * A build environment for end-to-end tests: a config file in a temp dir with its own workspace
 * (an empty artifact store) and its own build-host alias (so its task queue is its own), and
 * workers that run in this process or as a separate process that a test can kill.
 */
export interface BuildEnv {
  dir: string;
  s3: S3Config;
  workspace: string;
  configFile: string;
  alias: string;
  options: BuildOptions;
  /** Rewrites the config file: what `spec()` reads (a running worker keeps the config it started with). */
  writeConfig(extra: Record<string, unknown>): void;
  /** The spec of a build of `languages` from the config file as it is now, as `rootfs create` makes it. */
  spec(languages?: string[], sshHost?: string): BuildSpec;
  startWorker(extra?: Partial<WorkerOptions>): Promise<{ stop(): Promise<void> }>;
  /** A worker process (`worker/main.js`), as a service manager runs it; `args` e.g. `['--grace', '5']`. */
  spawnWorker(args?: string[]): Promise<ChildProcess>;
}

export interface BuildEnvOptions {
  /**
   * `prebuilt` (default): the workspace starts with the artifacts of this run's one kernel build
   * (test/support/kernel.ts), so that tests about other things do not each spend minutes building
   * the same kernel; its steps are then reused, as in any workspace that built it before.
   * `build`: an empty artifact store, the kernel included.
   */
  kernel?: 'prebuilt' | 'build';
}

export async function createBuildEnv(
  name: string,
  extra: Record<string, unknown> = {},
  opts: BuildEnvOptions = {},
): Promise<BuildEnv> {
  const temporal = await testTemporal();
  const s3 = await testS3();
  const s3Config = await s3.freshBucket();
  // The worker takes S3 credentials from its environment, like a real one (and so does a spawned worker).
  Object.assign(process.env, s3.env);
  const dir = tempDir(name);
  const workspace = path.join(dir, 'workspace');
  const alias = `${name}-${crypto.randomBytes(3).toString('hex')}`;
  const configFile = path.join(dir, 'rootfs.yaml');
  const writeConfig = (more: Record<string, unknown>) => {
    const doc = {
      workspace,
      operator: { path: requireTool('referenceOperator') },
      buildHost: { kind: 'local', alias },
      temporal: { address: temporal.address, namespace: temporal.namespace },
      s3: s3Config,
      ...more,
    };
    fs.writeFileSync(`${configFile}.tmp`, stringify(doc));
    fs.renameSync(`${configFile}.tmp`, configFile);
  };
  writeConfig(extra);
  if ((opts.kernel ?? 'prebuilt') === 'prebuilt') await seedKernel(workspace);
  const options: BuildOptions = {
    hostTaskQueue: hostTaskQueue(alias),
    maxAttempts: 2,
    retryInitialIntervalMs: 200,
    heartbeatTimeoutMs: 15_000,
    stepTimeoutMs: 30 * 60 * 1000,
    upload: true,
  };
  return {
    dir,
    s3: s3Config,
    workspace,
    configFile,
    alias,
    options,
    writeConfig,
    spec: (languages, sshHost) => buildSpecOf(loadConfig({ file: configFile, sshHost }), languages),
    async startWorker(more = {}) {
      const controller = new AbortController();
      // A connection of its own: the SDK refuses two workers for one task queue on one connection,
      // and another test's worker may still be running.
      const connection = await NativeConnection.connect({ address: temporal.address });
      const running = runWorkers(
        {
          connection,
          namespace: temporal.namespace,
          configOptions: { file: configFile },
          workflowBundle: await workflowBundle(),
          shutdownGraceMs: 1000,
          ...more,
        },
        controller.signal,
      );
      const stop = async () => {
        controller.abort();
        try {
          await running;
        } finally {
          await connection.close();
        }
      };
      onCleanup(() => stop().catch(() => {}));
      return { stop };
    },
    async spawnWorker(args = []) {
      const child = spawn(
        process.execPath,
        [path.join(__dirname, '../../worker/main.js'), '--config', configFile, ...args],
        {
          stdio: ['ignore', 'inherit', 'inherit'],
        },
      );
      onCleanup(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      });
      return child;
    },
  };
}
