import { DefaultLogger, Runtime } from '@temporalio/worker';
import type { Context, Suite, Test } from 'mocha';
import { markRunning, runCleanups, runSuiteCleanups } from './process';

// Workers log every state change at INFO; tests want warnings and errors only.
Runtime.install({ logger: new DefaultLogger('WARN') });

/** The last test a suite runs: its own tests come before its child suites'. */
function lastTest(suite: Suite): Test | undefined {
  for (let i = suite.suites.length - 1; i >= 0; i--) {
    const t = lastTest(suite.suites[i]!);
    if (t) return t;
  }
  return suite.tests.at(-1);
}

/**
 * Mocha root hooks: the shared servers start lazily on first use and all stop at the end of the
 * run, pass or fail; what a top-level suite made for itself goes when its last test has run.
 */
export const mochaHooks = {
  beforeAll(): void {
    markRunning();
  },
  async afterEach(this: Context): Promise<void> {
    const test = this.currentTest;
    let top = test?.parent;
    while (top?.parent && !top.parent.root) top = top.parent;
    if (test && top && lastTest(top) === test) {
      // Removing a suite's images and buckets can take a while on a slow disk: not the test's own time limit.
      this.timeout(10 * 60 * 1000);
      await runSuiteCleanups();
    }
  },
};

export async function mochaGlobalTeardown(): Promise<void> {
  await runCleanups();
}
