import { isCancellation, patched, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { BuildActivities } from '../activities';
import type { BuildSpec } from '../src/pipeline/build-spec';
import { stepRunner } from './step-runner';
import { NON_RETRYABLE_ERRORS, STEPS, type BuildOptions, type CreateRootfsInput, type ImageSummary } from './types';

export { shortMessage } from './step-runner';

/**
 * A reload may change what a build builds, not where: its steps go to the task queue of the build
 * host it was started for, whose worker refuses a spec for another host.
 */
export function refuseOtherBuildHost(current: BuildSpec, next: BuildSpec): void {
  const describe = (h: BuildSpec['buildHost']) =>
    h.kind === 'local' ? h.alias : `${h.alias} (${h.user}@${h.host}:${h.port}, ${h.hostKeySha256})`;
  if (describe(current.buildHost) !== describe(next.buildHost)) {
    throw new Error(
      `a build stays on the build host it was started for (${describe(current.buildHost)}), not ${describe(next.buildHost)}: start a new build there`,
    );
  }
}

/** The activities of a build's steps, on the build host's task queue, with the build's retry policy. */
export function stepActivities(options: BuildOptions) {
  return proxyActivities<BuildActivities>({
    taskQueue: options.hostTaskQueue,
    startToCloseTimeout: options.stepTimeoutMs ?? 2 * 60 * 60 * 1000,
    heartbeatTimeout: options.heartbeatTimeoutMs ?? 60_000,
    retry: {
      maximumAttempts: options.maxAttempts ?? 3,
      initialInterval: options.retryInitialIntervalMs ?? 5000,
      backoffCoefficient: 2,
      nonRetryableErrorTypes: [...NON_RETRYABLE_ERRORS],
    },
  });
}

/**
 * The `probe` activity: one short attempt, on the build host's queue. When it fails the steps
 * simply run one by one, and they report whatever made it fail.
 */
function probeActivities(options: BuildOptions) {
  return proxyActivities<BuildActivities>({
    taskQueue: options.hostTaskQueue,
    startToCloseTimeout: 10 * 60 * 1000,
    heartbeatTimeout: options.heartbeatTimeoutMs ?? 60_000,
    retry: { maximumAttempts: 1 },
  });
}

/** Builds one language image, step by step; a failed step waits for `retryStep` instead of failing. */
export async function createRootfs(input: CreateRootfsInput): Promise<ImageSummary> {
  const { language, options } = input;
  let spec: BuildSpec | undefined = input.spec;
  let archiveSnapshot = options.archive;
  const { runStep, runAll, outcome, skip, preset } = stepRunner({
    name: language,
    steps: STEPS,
    spec: () => spec,
    validateSpec: (next) => {
      const names = Object.keys(next.languages ?? {});
      if (names.length !== 1 || names[0] !== language)
        throw new Error(`the new configuration must be for ${language} alone, not ${names.join(', ') || 'none'}`);
      refuseOtherBuildHost(spec!, next);
      // The kernel and the boot are what make an image done: a reload may change them, not drop them.
      if (spec?.kernel && !(next.kernel && next.boot))
        throw new Error(`the new configuration has no kernel or boot settings: ${language} would go out unbooted`);
    },
    takeSpec: (next) => {
      // The archive state was read for the old base: with another base (a mirror, a suite), read it again.
      if (spec && JSON.stringify(spec.base) !== JSON.stringify(next.base)) archiveSnapshot = undefined;
      spec = next;
    },
  });
  const acts = stepActivities(options);
  const probeActs = probeActivities(options);

  /** The steps in order. Every activity gets the spec: what it builds does not depend on the worker. */
  async function steps() {
    const pinned = spec ? { spec } : {};
    const archive = archiveSnapshot ? { archive: archiveSnapshot } : {};
    // An unchanged build's steps are found in one activity rather than looked up one by one.
    // Histories from before the probe replay without it.
    if (spec && patched('probe-finished-steps')) {
      const upload = options.upload ?? true;
      const probed = await probeActs.probe
        .executeWithOptions({ summary: `${language}: look up finished steps` }, [
          { language, ...archive, upload, spec },
        ])
        .catch((err: unknown) => {
          if (isCancellation(err)) throw err;
          return { steps: [] };
        });
      await preset(probed.steps);
    }
    const { operatorSha256 } = await runStep('allocate', acts.allocate, () => ({ language, ...pinned }));
    const base = await runStep('base', acts.base, () => ({ language, ...archive, ...pinned }));
    const runtime = await runStep('runtime', acts.runtime, () => ({
      language,
      baseKey: base.key,
      ...archive,
      ...pinned,
    }));
    const operator = await runStep('operator', acts.operator, () => ({
      language,
      runtimeKey: runtime.key,
      operatorSha256,
      ...pinned,
    }));
    const verify = await runStep('verify', acts.verify, () => ({ language, operatorKey: operator.key, ...pinned }));
    const image = await runStep('image', acts.image, () => ({
      language,
      verifyKey: verify.key,
      operatorKey: operator.key,
      ...pinned,
    }));
    // An image is done only once it has booted and answered from inside. Builds whose spec has no
    // kernel (started before the pipeline built one) have nothing to boot it with.
    const booted =
      spec?.kernel && spec.boot
        ? await runStep('boot', acts.boot, () => ({
            language,
            imageKey: image.key,
            versions: verify.data.versions,
            ...pinned,
          }))
        : (skip('boot'), undefined);
    const boot = booted && { bootMs: booted.data.bootMs, kernelSha256: booted.data.kernelSha256 };
    let s3Key: string | undefined;
    if (options.upload ?? true) {
      const uploaded = await runStep('upload', acts.upload, () => ({
        language,
        imageKey: image.key,
        versions: verify.data.versions,
        ...(boot ? { boot } : {}),
        ...pinned,
      }));
      s3Key = uploaded.data.s3Key;
    } else {
      skip('upload');
    }
    return { verify, image, boot, s3Key };
  }

  const { verify, image, boot, s3Key } = await runAll(steps);
  return {
    language,
    workflowId: workflowInfo().workflowId,
    state: 'done',
    imageKey: image.key,
    path: image.data.path,
    sizeBytes: image.data.sizeBytes,
    sha256: image.data.sha256,
    versions: verify.data.versions,
    ...boot,
    ...outcome(['allocate']),
    s3Key,
  };
}
