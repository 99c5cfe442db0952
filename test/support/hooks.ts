import { runCleanups } from './process';

/** Mocha root hooks: the shared servers start lazily on first use and all stop here, pass or fail. */
export const mochaHooks = {};

export async function mochaGlobalTeardown(): Promise<void> {
  await runCleanups();
}
