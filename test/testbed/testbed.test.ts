import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { bundleWorkflowCode, Worker } from '@temporalio/worker';
import { SEARCH_ATTRIBUTES } from '../../src/temporal/search-attributes';
import { testTemporal } from '../support/temporal';

describe('test bed @real', () => {
  it('runs a real Temporal server with the search attributes registered and a worker that executes', async function () {
    this.timeout(180_000);
    const temporal = await testTemporal();
    const { client, nativeConnection } = temporal.env;
    const attrs = await client.connection.operatorService.listSearchAttributes({ namespace: temporal.namespace });
    for (const key of SEARCH_ATTRIBUTES) assert.ok(attrs.customAttributes?.[key.name], `${key.name} is registered`);

    const workflowBundle = await bundleWorkflowCode({ workflowsPath: require.resolve('../fixtures/echo-workflow') });
    const worker = await Worker.create({
      connection: nativeConnection,
      taskQueue: 'testbed',
      workflowBundle,
      activities: { shout: async (s: string) => s.toUpperCase() },
    });
    const result = await worker.runUntil(
      client.workflow.execute('echo', { taskQueue: 'testbed', workflowId: `echo-${Date.now()}`, args: ['hello'] }),
    );
    assert.equal(result, 'HELLO');
    assert.ok(fs.existsSync(temporal.dbFile), 'the server persists to its SQLite file');
  });
});
