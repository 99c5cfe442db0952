import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import { WorkflowFailedError, WorkflowUpdateFailedError, type WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/activity';
import { NativeConnection, Worker } from '@temporalio/worker';
import type { BuildActivities } from '../../activities';
import { BuildSpec } from '../../src/pipeline/build-spec';
import { PROFILES } from '../../src/config';
import { createAllRootfs, createRootfs } from '../../workflows';
import { abortUpdate, progressQuery, replaceSpecUpdate, retryStepUpdate, specQuery } from '../../workflows/messages';
import {
  childWorkflowId,
  parentWorkflowId,
  type BuildOptions,
  type LanguageProgress,
  type ProbedStep,
  type Step,
} from '../../workflows/types';
import { waitFor } from '../support/history';
import { testTemporal, workflowBundle } from '../support/temporal';

/**
 * The workflows against a real Temporal server with fake activities: retry, abort, the update
 * validators, a skipped upload, a reload, a failed child in its parent. Seconds, not minutes:
 * the activities only record what they were asked and fail when a test says so.
 */

type Call = { activity: string; input: Record<string, unknown> };

const KERNEL_SPEC = {
  package: 'linux-source-6.1',
  version: '6.1.192-2',
  fragment: { name: 'test.config', content: 'CONFIG_64BIT=y\n' },
};

const spec = (packages: string[] = [], languages = ['python'], kernel = false) =>
  BuildSpec.parse({
    ...(kernel ? { kernel: KERNEL_SPEC, boot: {} } : {}),
    source: 'test',
    base: {},
    keyringSha256: '1'.repeat(64),
    operatorSha256: '2'.repeat(64),
    languages: Object.fromEntries(languages.map((l) => [l, { ...PROFILES.default[l], packages }])),
    image: {},
    workspace: '/srv/test',
    s3: {},
    buildHost: { kind: 'local', alias: 'local' },
  });

/**
 * Fake activities: a step fails while `failing` names it (non-retryably, so the build pauses at
 * once), and does not finish while `held` names it.
 */
function fakeActivities(
  calls: Call[],
  failing: Map<string, string>,
  held: Set<string>,
  probes: { inputs: Record<string, unknown>[]; answer: (input: Record<string, unknown>) => ProbedStep[] },
): BuildActivities {
  const step = (activity: string) => async (input: Record<string, unknown>) => {
    calls.push({ activity, input });
    const who = String(input.language ?? 'kernel');
    while (held.has(`${who}/${activity}`)) await new Promise((r) => setTimeout(r, 50));
    const reason = failing.get(`${who}/${activity}`);
    if (reason) throw ApplicationFailure.nonRetryable(reason, 'VerificationFailed');
    const key = `${activity}-${crypto.createHash('sha256').update(JSON.stringify(input)).digest('hex').slice(0, 32)}`;
    const data =
      activity === 'image'
        ? { path: '/srv/test/images/x.ext4', sizeBytes: 1024, sha256: 'a'.repeat(64) }
        : activity === 'verify'
          ? { versions: ['Python 3.10.12'] }
          : activity === 'upload'
            ? { s3Key: `rootfs-${String(input.language)}.ext4` }
            : activity === 'kernelBuild'
              ? { sha256: 'b'.repeat(64), sizeBytes: 4096, release: '6.1.192', source: 'linux-source-6.1 6.1.192-2' }
              : activity === 'kernelUpload'
                ? { s3Key: 'vmlinux' }
                : activity === 'boot'
                  ? {
                      bootMs: 7000,
                      lines: ['Python 3.10.12'],
                      kernelKey: 'k',
                      kernelSha256: 'b'.repeat(64),
                      accelerator: 'tcg',
                    }
                  : {};
    return { key, reused: activity === 'base', data };
  };
  return {
    probe: async (input: Record<string, unknown>) => {
      probes.inputs.push(input);
      return { steps: probes.answer(input) };
    },
    plan: async () => ({ languages: ['python'] }),
    allocate: async (input: Record<string, unknown>) => {
      calls.push({ activity: 'allocate', input });
      return { operatorSha256: '2'.repeat(64) };
    },
    archiveSnapshot: async () => ({ jammy: 'c'.repeat(64) }),
    base: step('base'),
    runtime: step('runtime'),
    operator: step('operator'),
    verify: step('verify'),
    image: step('image'),
    upload: step('upload'),
    boot: step('boot'),
    kernelSource: step('kernelSource'),
    kernelConfig: step('kernelConfig'),
    kernelBuild: step('kernelBuild'),
    kernelUpload: step('kernelUpload'),
    listBucket: async (input: Record<string, unknown>) => ({
      bucket: (input as { spec?: BuildSpec }).spec?.s3.bucket ?? '?',
      objects: 2,
      totalBytes: 2048,
    }),
  } as unknown as BuildActivities;
}

describe('workflows with fake activities', function () {
  this.timeout(120_000);
  const calls: Call[] = [];
  const failing = new Map<string, string>();
  const held = new Set<string>();
  /** What the fake probe was asked, and what it answers (by default: nothing is finished). */
  const probes = { inputs: [] as Record<string, unknown>[], answer: (_: Record<string, unknown>): ProbedStep[] => [] };
  let queue: string;
  let options: BuildOptions;
  let stop: () => Promise<void>;

  before(async () => {
    const temporal = await testTemporal();
    queue = `workflows-${crypto.randomBytes(3).toString('hex')}`;
    options = { hostTaskQueue: queue, maxAttempts: 1, retryInitialIntervalMs: 100, heartbeatTimeoutMs: 10_000 };
    const connection = await NativeConnection.connect({ address: temporal.address });
    const worker = await Worker.create({
      connection,
      namespace: temporal.namespace,
      taskQueue: queue,
      workflowBundle: await workflowBundle(),
      activities: fakeActivities(calls, failing, held, probes),
    });
    const running = worker.run();
    stop = async () => {
      worker.shutdown();
      await running;
      await connection.close();
    };
  });
  after(() => stop());
  beforeEach(() => {
    calls.length = 0;
    failing.clear();
    held.clear();
    probes.inputs.length = 0;
    probes.answer = () => [];
  });

  const client = async () => (await testTemporal()).env.client;
  const startChild = async (runTag: string, extra: Partial<BuildOptions> = {}, pinned = spec()) =>
    (await client()).workflow.start(createRootfs, {
      taskQueue: queue,
      workflowId: childWorkflowId(runTag, 'python'),
      args: [{ language: 'python', runTag, options: { ...options, ...extra }, spec: pinned }],
    });
  const tag = () => `wf-${crypto.randomBytes(4).toString('hex')}`;
  const waiting = (handle: WorkflowHandle, step: Step) =>
    waitFor(
      `${step} to wait for a retry`,
      async () => {
        const [p]: LanguageProgress[] = await handle.query(progressQuery);
        return p?.state === 'awaiting-retry' && p.steps.find((s) => s.state === 'awaiting-retry')?.name === step
          ? p
          : undefined;
      },
      30_000,
    );
  const rejectsUpdate = (p: Promise<unknown>, message: RegExp) =>
    assert.rejects(
      p,
      (err: unknown) => err instanceof WorkflowUpdateFailedError && message.test(String(err.cause?.message)),
    );

  it('runs every step in order with the spec, reports ran and reused, and skips the upload when asked', async () => {
    const pinned = spec(['python3-venv'], ['python'], true);
    const summary = await (await startChild(tag(), { upload: false }, pinned)).result();
    assert.deepEqual(
      calls.map((c) => c.activity),
      ['allocate', 'base', 'runtime', 'operator', 'verify', 'image', 'boot'],
    );
    assert.deepEqual(calls.at(-1)!.input.versions, ['Python 3.10.12'], 'the boot compares with what verify recorded');
    assert.ok(
      calls.every((c) => JSON.stringify(c.input.spec) === JSON.stringify(pinned)),
      'every step got the spec',
    );
    assert.deepEqual(summary.steps, {
      base: 'reused',
      runtime: 'ran',
      operator: 'ran',
      verify: 'ran',
      image: 'ran',
      boot: 'ran',
      upload: 'skipped',
    });
    assert.deepEqual(summary.versions, ['Python 3.10.12']);
    assert.equal(summary.s3Key, undefined);
  });

  it('takes the steps a probe found finished without running them, and runs the rest with their keys', async () => {
    const pinned = spec([], ['python'], true);
    const done = (step: ProbedStep['step'], key: string, data: Record<string, unknown> = {}): ProbedStep => ({
      step,
      result: { key, reused: true, data },
      durationMs: 30,
    });
    probes.answer = () => [
      { step: 'allocate', result: { operatorSha256: '2'.repeat(64) }, durationMs: 10 },
      done('base', 'base-probed'),
      done('runtime', 'runtime-probed'),
      done('operator', 'operator-probed'),
      done('verify', 'verify-probed', { versions: ['Python 3.10.12'] }),
    ];
    const summary = await (await startChild(tag(), {}, pinned)).result();
    assert.equal(probes.inputs.length, 1, 'one probe');
    assert.equal(probes.inputs[0]!.upload, true);
    assert.equal(JSON.stringify(probes.inputs[0]!.spec), JSON.stringify(pinned));
    assert.deepEqual(
      calls.map((c) => c.activity),
      ['image', 'boot', 'upload'],
    );
    assert.deepEqual(
      [calls[0]!.input.verifyKey, calls[0]!.input.operatorKey],
      ['verify-probed', 'operator-probed'],
      'the image step starts from the probed keys',
    );
    assert.deepEqual(calls[1]!.input.versions, ['Python 3.10.12']);
    assert.deepEqual(summary.steps, {
      base: 'reused',
      runtime: 'reused',
      operator: 'reused',
      verify: 'reused',
      image: 'ran',
      boot: 'ran',
      upload: 'ran',
    });
    assert.equal(summary.durationsMs?.runtime, 30, 'the probe says how long each lookup took');
  });

  it('an unchanged build is one probe and no step activity; a failing probe leaves the steps to run one by one', async () => {
    probes.answer = () =>
      (['allocate', 'base', 'runtime', 'operator', 'verify', 'image', 'upload'] as const).map((step) => ({
        step,
        result:
          step === 'allocate'
            ? { operatorSha256: '2'.repeat(64) }
            : {
                key: `${step}-probed`,
                reused: true,
                data:
                  step === 'verify'
                    ? { versions: ['Python 3.10.12'] }
                    : step === 'image'
                      ? { path: '/srv/test/images/x.ext4', sizeBytes: 1024, sha256: 'a'.repeat(64) }
                      : step === 'upload'
                        ? { s3Key: 'rootfs-python.ext4' }
                        : {},
              },
        durationMs: 1,
      }));
    const unchanged = await (await startChild(tag())).result();
    assert.equal(calls.length, 0, 'no step activity ran');
    assert.deepEqual(unchanged.steps, {
      base: 'reused',
      runtime: 'reused',
      operator: 'reused',
      verify: 'reused',
      image: 'reused',
      boot: 'skipped',
      upload: 'reused',
    });
    assert.equal(unchanged.imageKey, 'image-probed');
    assert.equal(unchanged.s3Key, 'rootfs-python.ext4');

    probes.answer = () => {
      throw ApplicationFailure.nonRetryable('the worker for builder-9 refuses this build', 'WrongBuildHost');
    };
    const fallback = await (await startChild(tag())).result();
    assert.deepEqual(
      calls.map((c) => c.activity),
      ['allocate', 'base', 'runtime', 'operator', 'verify', 'image', 'upload'],
    );
    assert.equal(fallback.state, 'done');
  });

  it('concurrency bounds the images built at once', async () => {
    held.add('python/base');
    const runTag = tag();
    const parent = await (
      await client()
    ).workflow.start(createAllRootfs, {
      taskQueue: queue,
      workflowId: parentWorkflowId(runTag),
      args: [{ runTag, options, spec: spec([], ['python', 'go', 'bash']), concurrency: 1 }],
    });
    await waitFor('python base', async () => (calls.some((c) => c.activity === 'base') ? true : undefined), 30_000);
    await new Promise((r) => setTimeout(r, 1500));
    const started = () => [...new Set(calls.map((c) => String(c.input.language)))];
    assert.deepEqual(started(), ['python'], 'one image at a time');
    held.clear();
    const summary = await parent.result();
    assert.deepEqual(
      summary.images.map((i) => i.state),
      ['done', 'done', 'done'],
    );
    // One after the other: each child's first step comes after the previous child's last.
    const order = calls.map((c) => String(c.input.language));
    assert.deepEqual(
      order.filter((l, i) => l !== order[i - 1]),
      ['python', 'go', 'bash'],
    );
  });

  it('a failed step waits; retryStep validates the step and runs only that step again', async () => {
    failing.set('python/runtime', 'no such package');
    const handle = await startChild(tag());
    const paused = await waiting(handle, 'runtime');
    assert.equal(paused.steps.find((s) => s.name === 'runtime')?.error, 'no such package');
    await rejectsUpdate(
      handle.executeUpdate(retryStepUpdate, { args: [{ step: 'base' }] }),
      /waiting on step runtime, not base/,
    );
    const elsewhere = { ...spec(), buildHost: { kind: 'local' as const, alias: 'builder-9' } };
    await rejectsUpdate(
      handle.executeUpdate(retryStepUpdate, { args: [{ spec: elsewhere }] }),
      /^a build stays on the build host it was started for \(local\), not builder-9: start a new build there$/,
    );
    await rejectsUpdate(
      handle.executeUpdate(retryStepUpdate, { args: [{ spec: spec([], ['go']) }] }),
      /must be for python alone, not go/,
    );
    failing.clear();
    calls.length = 0;
    assert.deepEqual(await handle.executeUpdate(retryStepUpdate, { args: [{ step: 'runtime' }] }), {
      language: 'python',
      step: 'runtime',
    });
    const summary = await handle.result();
    assert.deepEqual(
      calls.map((c) => c.activity),
      ['runtime', 'operator', 'verify', 'image', 'upload'],
    );
    assert.equal(summary.s3Key, 'rootfs-python.ext4');
  });

  it('a running build refuses retryStep and abort: nothing waits for them', async () => {
    held.add('python/base');
    const handle = await startChild(tag());
    await waitFor('base to run', async () => (calls.some((c) => c.activity === 'base') ? true : undefined), 30_000);
    await rejectsUpdate(
      handle.executeUpdate(retryStepUpdate, { args: [{}] }),
      /^python is running: no step is waiting for a retry$/,
    );
    await rejectsUpdate(
      handle.executeUpdate(abortUpdate),
      /^python is running: only a build waiting for a retry can be aborted$/,
    );
    held.clear();
    assert.equal((await handle.result()).state, 'done');
  });

  it('a retry with a new spec goes through every step again with it', async () => {
    failing.set('python/verify', 'python3 -m venv failed');
    const handle = await startChild(tag());
    await waiting(handle, 'verify');
    failing.clear();
    calls.length = 0;
    const next = spec(['python3-venv']);
    assert.deepEqual(await handle.executeUpdate(retryStepUpdate, { args: [{ spec: next }] }), {
      language: 'python',
      step: 'allocate',
    });
    await handle.result();
    assert.deepEqual(
      calls.map((c) => c.activity),
      ['allocate', 'base', 'runtime', 'operator', 'verify', 'image', 'upload'],
    );
    assert.ok(calls.every((c) => JSON.stringify(c.input.spec) === JSON.stringify(next)));
    assert.deepEqual(await handle.query(specQuery), next);
  });

  it('a reload may change the kernel, not drop it: an image with a kernel is never uploaded unbooted', async () => {
    failing.set('python/image', 'mkfs failed');
    const handle = await startChild(tag(), {}, spec([], ['python'], true));
    await waiting(handle, 'image');
    await rejectsUpdate(
      handle.executeUpdate(retryStepUpdate, { args: [{ spec: spec() }] }),
      /no kernel or boot settings: python would go out unbooted/,
    );
    failing.clear();
    await handle.executeUpdate(retryStepUpdate, { args: [{}] });
    const summary = await handle.result();
    assert.deepEqual([summary.steps.boot, summary.steps.upload], ['ran', 'ran']);
  });

  it('abort ends a waiting build as aborted', async () => {
    failing.set('python/image', 'mkfs failed');
    const handle = await startChild(tag());
    await waiting(handle, 'image');
    assert.deepEqual(await handle.executeUpdate(abortUpdate), { language: 'python', aborted: true });
    await assert.rejects(
      handle.result(),
      (err: unknown) =>
        err instanceof WorkflowFailedError &&
        /aborted by the operator at step image: mkfs failed/.test(String(err.cause?.message)),
    );
    const [after]: LanguageProgress[] = await handle.query(progressQuery);
    assert.equal(after?.state, 'aborted');
    assert.equal(after?.steps.find((s) => s.name === 'image')?.state, 'aborted');
  });

  it("a parent with an aborted child finishes the others and fails with that child's reason", async () => {
    failing.set('go/runtime', 'checksum mismatch for go.zip');
    const runTag = tag();
    const pinned = spec([], ['python', 'go']);
    const parent = await (
      await client()
    ).workflow.start(createAllRootfs, {
      taskQueue: queue,
      workflowId: parentWorkflowId(runTag),
      args: [{ runTag, options, spec: pinned, concurrency: 2 }],
    });
    const go = (await client()).workflow.getHandle(childWorkflowId(runTag, 'go'));
    await waiting(go, 'runtime');
    await rejectsUpdate(parent.executeUpdate(replaceSpecUpdate, { args: [spec([], ['python'])] }), /has no go/);
    await go.executeUpdate(abortUpdate);
    await assert.rejects(parent.result(), (err: unknown) => {
      assert.ok(err instanceof WorkflowFailedError);
      assert.match(
        String(err.cause?.message),
        /^go aborted \(go: aborted by the operator at step runtime: checksum mismatch for go\.zip\)/,
      );
      return true;
    });
    const children = (await parent.query(progressQuery)).map((p) => `${p.language} ${p.state}`);
    assert.deepEqual(children.sort(), ['go aborted', 'python done']);
    // Each child got its own language only.
    assert.deepEqual([...new Set(calls.map((c) => Object.keys((c.input.spec as BuildSpec).languages).join()))].sort(), [
      'go',
      'python',
    ]);
  });

  it('a build with a kernel runs its child beside the images; a failed kernel step waits, and the summary has the kernel', async () => {
    failing.set('kernel/kernelBuild', 'the kernel config does not honour CONFIG_X');
    const runTag = tag();
    const parent = await (
      await client()
    ).workflow.start(createAllRootfs, {
      taskQueue: queue,
      workflowId: parentWorkflowId(runTag),
      args: [{ runTag, options, spec: spec([], ['python'], true) }],
    });
    const kernel = (await client()).workflow.getHandle(childWorkflowId(runTag, 'kernel'));
    await waiting(kernel, 'kernel-build');
    await waitFor(
      'python to finish while the kernel waits',
      async () => {
        const all: LanguageProgress[] = await parent.query(progressQuery);
        return all.find((p) => p.language === 'python')?.state === 'done' ? all : undefined;
      },
      30_000,
    );
    const sourceCalls = calls.filter((c) => c.activity === 'kernelSource').length;
    failing.clear();
    const ack = await kernel.executeUpdate(retryStepUpdate, { args: [{}] });
    assert.deepEqual(ack, { language: 'kernel', step: 'kernel-build' });
    const summary = await parent.result();
    assert.equal(summary.kernel?.state, 'done');
    assert.equal(summary.kernel?.release, '6.1.192');
    assert.deepEqual(summary.kernel?.steps, {
      'kernel-source': 'ran',
      'kernel-config': 'ran',
      'kernel-build': 'ran',
      'kernel-upload': 'ran',
    });
    assert.equal(summary.kernel?.s3Key, 'vmlinux');
    // The image booted (with the kernel), and its upload carries what the boot measured.
    const python = summary.images[0]!;
    assert.deepEqual([python.steps.boot, python.bootMs, python.kernelSha256], ['ran', 7000, 'b'.repeat(64)]);
    const upload = calls.find((c) => c.activity === 'upload' && c.input.language === 'python')!;
    assert.deepEqual(upload.input.boot, { bootMs: 7000, kernelSha256: 'b'.repeat(64) });
    assert.equal(
      calls.filter((c) => c.activity === 'kernelSource').length,
      sourceCalls,
      'the source step did not run again',
    );
    // The kernel's child holds no language, and every kernel step got the kernel spec.
    const kernelCalls = calls.filter((c) => c.activity.startsWith('kernel'));
    assert.ok(kernelCalls.every((c) => Object.keys((c.input.spec as BuildSpec).languages).length === 0));
    assert.ok(kernelCalls.every((c) => (c.input.spec as BuildSpec).kernel?.version === '6.1.192-2'));
    assert.deepEqual(
      (await parent.query(progressQuery)).map((p) => `${p.language} ${p.state}`),
      ['kernel done', 'python done'],
    );
  });
});
