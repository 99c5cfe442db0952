import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ORCHESTRATOR_TASK_QUEUE } from '../../worker';
import { createRootfs } from '../../workflows';
import { childWorkflowId } from '../../workflows/types';
import { createBuildEnv } from '../support/build-env';
import { processesLeftUnder } from '../support/process';
import { activityRuns, waitForRunningStep } from '../support/history';
import { e2fsckStatus } from '../support/image';
import { testTemporal } from '../support/temporal';

describe('worker crash @real @heavy', function () {
  this.timeout(30 * 60 * 1000);
  let env: Awaited<ReturnType<typeof createBuildEnv>>;

  it('a worker killed during the runtime step is replaced and the build finishes without repeating earlier steps', async () => {
    const { client } = (await testTemporal()).env;
    env = await createBuildEnv('crash', { languages: { bash: null, nodejs: null, go: null, rust: null } });
    const first = await env.spawnWorker();
    const runTag = `crash-${crypto.randomBytes(3).toString('hex')}`;
    const handle = await client.workflow.start(createRootfs, {
      taskQueue: ORCHESTRATOR_TASK_QUEUE,
      workflowId: childWorkflowId(runTag, 'python'),
      args: [{ language: 'python', runTag, options: { ...env.options, maxAttempts: 3 }, spec: env.spec(['python']) }],
    });
    await waitForRunningStep(handle, 'runtime');
    await new Promise((r) => setTimeout(r, 3000)); // well inside apt's work
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));
    // Everything the dead worker started dies with it (the kernel tears down the build's PID
    // namespace; a process in uninterruptible I/O may take a moment): no apt keeps writing the tree.
    assert.deepEqual(await processesLeftUnder(env.workspace, 10_000), [], 'no build process outlives its worker');

    await env.spawnWorker();
    const summary = await handle.result();
    assert.equal(summary.state, 'done');
    assert.match(summary.versions[0]!, /^Python 3\.10\.\d+$/);
    assert.equal(e2fsckStatus(summary.path!), 0);
    // The probe checked the inputs (allocate's work) and found nothing else built: the steps
    // from the base on ran as activities, allocate's result came from the probe.
    assert.deepEqual(await activityRuns(handle, 'probe'), [1]);
    assert.deepEqual(await activityRuns(handle, 'allocate'), []);
    assert.deepEqual(await activityRuns(handle, 'base'), [1]);
    // One runtime activity: its first attempt died with the worker (heartbeat timeout), the next finished.
    assert.deepEqual(await activityRuns(handle, 'runtime'), [2]);
  });

  it('cancelling a build stops the running step at once: its processes are killed and nothing half-built is kept', async () => {
    const { client } = (await testTemporal()).env;
    // A language whose runtime step has not been built yet (the base is reused from the test above).
    env.writeConfig({
      languages: {
        bash: null,
        nodejs: null,
        go: null,
        rust: null,
        tools: {
          runtime: [{ kind: 'apt', packages: ['python3-pip', 'git'] }],
          verify: [{ argv: ['git', '--version'], expect: '^git version' }],
        },
      },
    });
    const runTag = `cancel-${crypto.randomBytes(3).toString('hex')}`;
    const handle = await client.workflow.start(createRootfs, {
      taskQueue: ORCHESTRATOR_TASK_QUEUE,
      workflowId: childWorkflowId(runTag, 'tools'),
      args: [
        {
          language: 'tools',
          runTag,
          options: { ...env.options, heartbeatTimeoutMs: 10_000 },
          spec: env.spec(['tools']),
        },
      ],
    });
    await waitForRunningStep(handle, 'runtime');
    await new Promise((r) => setTimeout(r, 3000));
    const t0 = Date.now();
    await handle.cancel();
    await assert.rejects(handle.result(), /cancel/i);
    assert.deepEqual(await processesLeftUnder(env.workspace, 15_000), [], 'the step was stopped');
    assert.ok(Date.now() - t0 < 30_000, `stopped in ${(Date.now() - t0) / 1000} s`);
    const tmp = path.join(env.workspace, 'artifacts', '.tmp');
    for (let i = 0; i < 50 && fs.readdirSync(tmp).length; i++) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(fs.readdirSync(tmp), [], 'no half-built artifact is left');
    assert.deepEqual(
      fs.readdirSync(path.join(env.workspace, 'artifacts')).filter((n) => n.startsWith('runtime-')).length,
      1,
      'only the python runtime was published',
    );
  });
});
