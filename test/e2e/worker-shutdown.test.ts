import { strict as assert } from 'node:assert';
import type { ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import { ORCHESTRATOR_TASK_QUEUE } from '../../worker';
import { createRootfs } from '../../workflows';
import { childWorkflowId } from '../../workflows/types';
import { createBuildEnv } from '../support/build-env';
import { activityRuns, completedActivity, waitForRunningStep } from '../support/history';
import { processesLeftUnder } from '../support/process';
import { testTemporal } from '../support/temporal';

const exited = (child: ChildProcess) =>
  new Promise<{ code: number | null; at: number }>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve({ code: child.exitCode, at: Date.now() });
    else child.once('exit', (code) => resolve({ code, at: Date.now() }));
  });

/** When the history says the step's activity completed (ms since epoch), if it did. */
async function completedAt(handle: WorkflowHandle, type: string): Promise<number | undefined> {
  const time = (await completedActivity(handle, type))?.eventTime;
  return time ? Number(time.seconds) * 1000 + Math.floor((time.nanos ?? 0) / 1e6) : undefined;
}

describe('worker shutdown @real @heavy', function () {
  this.timeout(30 * 60 * 1000);

  it('SIGTERM lets a running step finish within the grace period, cancels it after, and the next worker resumes without repeating steps', async () => {
    const { client } = (await testTemporal()).env;
    const env = await createBuildEnv('shutdown', { languages: { bash: null, nodejs: null, go: null, rust: null } });
    const runTag = `shutdown-${crypto.randomBytes(3).toString('hex')}`;

    // 1. A long grace: the base step (debootstrap, ~20 s) is finished before the worker goes.
    const patient = await env.spawnWorker(['--grace', '300']);
    const handle = await client.workflow.start(createRootfs, {
      taskQueue: ORCHESTRATOR_TASK_QUEUE,
      workflowId: childWorkflowId(runTag, 'python'),
      args: [{ language: 'python', runTag, options: { ...env.options, maxAttempts: 3 }, spec: env.spec(['python']) }],
    });
    await waitForRunningStep(handle, 'base');
    await new Promise((r) => setTimeout(r, 2000));
    patient.kill('SIGTERM');
    const first = await exited(patient);
    assert.equal(first.code, 0, 'a graceful stop exits 0');
    const baseDone = await completedAt(handle, 'base');
    assert.ok(baseDone !== undefined, 'the running step was finished, not abandoned');
    assert.ok(baseDone <= first.at, 'the worker waited for it');
    assert.deepEqual(await activityRuns(handle, 'base'), [1]);

    // 2. A short grace: the runtime step (apt in the chroot) is cancelled, its processes killed.
    const hasty = await env.spawnWorker(['--grace', '2']);
    await waitForRunningStep(handle, 'runtime');
    await new Promise((r) => setTimeout(r, 3000));
    const t0 = Date.now();
    hasty.kill('SIGTERM');
    const second = await exited(hasty);
    assert.equal(second.code, 0);
    assert.ok(second.at - t0 < 20_000, `stopped ${(second.at - t0) / 1000} s after SIGTERM`);
    assert.deepEqual(await processesLeftUnder(env.workspace, 10_000), [], 'the cancelled step left nothing running');
    assert.equal(await completedAt(handle, 'runtime'), undefined, 'the runtime step did not finish');
    const tmp = path.join(env.workspace, 'artifacts', '.tmp');
    assert.deepEqual(fs.existsSync(tmp) ? fs.readdirSync(tmp) : [], [], 'no half-built artifact is left');

    // 3. The next worker takes over from the cancelled step.
    await env.spawnWorker();
    const summary = await handle.result();
    assert.equal(summary.state, 'done');
    assert.match(summary.versions[0]!, /^Python 3\.10\.\d+$/);
    // The probe checked the inputs (allocate's work) and found nothing else built: the steps
    // from the base on ran as activities, allocate's result came from the probe.
    assert.deepEqual(await activityRuns(handle, 'probe'), [1]);
    assert.deepEqual(await activityRuns(handle, 'allocate'), []);
    assert.deepEqual(await activityRuns(handle, 'base'), [1]);
    assert.equal((await activityRuns(handle, 'runtime')).length, 1, 'one runtime activity, retried');
    assert.equal(summary.steps.base, 'ran');
  });
});
