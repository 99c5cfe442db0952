import * as path from 'node:path';
import { Connection } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { devServerSearchAttributeArgs } from '../../src/temporal/search-attributes';
import { requireTool } from '../../src/setup/tools';
import { freePort, onCleanup, portAccepts, startServer, sharedTempDir, waitUntilReady } from './process';

/**
 * A real Temporal dev server (the pinned CLI) on free loopback ports, SQLite in a temp dir,
 * Web UI on, the project's search attributes registered at start.
 */
export interface TestTemporal {
  address: string;
  namespace: string;
  uiUrl: string;
  env: TestWorkflowEnvironment;
  dbFile: string;
}

async function startTemporal(): Promise<TestTemporal> {
  const temporal = requireTool('temporal');
  const dir = sharedTempDir('temporal');
  const port = await freePort();
  const uiPort = await freePort();
  const dbFile = path.join(dir, 'temporal.db');
  const server = startServer(
    temporal,
    // prettier-ignore
    [
      'server', 'start-dev',
      '--ip', '127.0.0.1',
      '--port', String(port),
      '--ui-port', String(uiPort),
      '--db-filename', dbFile,
      '--log-level', 'warn',
      ...devServerSearchAttributeArgs(),
    ],
    { logFile: path.join(dir, 'temporal.log'), graceMs: 10_000 },
  );
  const address = `127.0.0.1:${port}`;
  await waitUntilReady(server, 'temporal dev server', async () => {
    if (!(await portAccepts(port))) return false;
    const conn = await Connection.connect({ address, connectTimeout: 2000 });
    try {
      await conn.workflowService.getSystemInfo({});
      return true;
    } finally {
      await conn.close();
    }
  });
  const env = await TestWorkflowEnvironment.createFromExistingServer({ address, namespace: 'default' });
  onCleanup(() => env.teardown());
  return { address, namespace: 'default', uiUrl: `http://127.0.0.1:${uiPort}`, env, dbFile };
}

let shared: Promise<TestTemporal> | undefined;

/** The test run's Temporal server, started on first use and stopped by the global teardown. */
export function testTemporal(): Promise<TestTemporal> {
  return (shared ??= startTemporal());
}

let bundle: Promise<WorkflowBundleWithSourceMap> | undefined;

/** The workflow code, bundled once per test run. */
export function workflowBundle(): Promise<WorkflowBundleWithSourceMap> {
  return (bundle ??= bundleWorkflowCode({
    workflowsPath: require.resolve('../../workflows'),
    logger: { trace() {}, debug() {}, info() {}, warn: console.warn, error: console.error, log() {} } as never,
  }));
}
