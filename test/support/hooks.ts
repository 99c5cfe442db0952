import { DefaultLogger, Runtime } from '@temporalio/worker';
import { runCleanups } from './process';

// Workers log every state change at INFO; tests want warnings and errors only.
Runtime.install({ logger: new DefaultLogger('WARN') });

/** Mocha root hooks: the shared servers start lazily on first use and all stop here, pass or fail. */
export const mochaHooks = {};

export async function mochaGlobalTeardown(): Promise<void> {
  await runCleanups();
}
