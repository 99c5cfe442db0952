import { workflowInfo } from '@temporalio/workflow';
import type { BuildSpec } from '../src/pipeline/build-spec';
import { refuseOtherBuildHost, stepActivities } from './create-rootfs';
import { stepRunner } from './step-runner';
import { KERNEL, KERNEL_STEPS, type CreateKernelInput, type KernelSummary } from './types';

/**
 * Builds the guest kernel the images boot with: source package, config, vmlinux, upload. Its
 * steps are content-addressed like an image's, so a second build reuses them; a failed one
 * waits for `retryStep` like an image's.
 */
export async function createKernel(input: CreateKernelInput): Promise<KernelSummary> {
  const { options } = input;
  let spec: BuildSpec = input.spec;
  const { runStep, runAll, outcome, skip } = stepRunner({
    name: KERNEL,
    steps: KERNEL_STEPS,
    spec: () => spec,
    validateSpec: (next) => {
      if (!next.kernel) throw new Error('the new configuration has no kernel');
      refuseOtherBuildHost(spec, next);
    },
    takeSpec: (next) => {
      spec = next;
    },
  });
  const acts = stepActivities(options);

  async function steps() {
    const source = await runStep('kernel-source', acts.kernelSource, () => ({ spec }));
    const config = await runStep('kernel-config', acts.kernelConfig, () => ({ sourceKey: source.key, spec }));
    const built = await runStep('kernel-build', acts.kernelBuild, () => ({
      sourceKey: source.key,
      configKey: config.key,
      spec,
    }));
    let s3Key: string | undefined;
    if (options.upload ?? true) {
      const uploaded = await runStep('kernel-upload', acts.kernelUpload, () => ({ buildKey: built.key, spec }));
      s3Key = uploaded.data.s3Key;
    } else {
      skip('kernel-upload');
    }
    return { built, s3Key };
  }

  const { built, s3Key } = await runAll(steps);
  return {
    workflowId: workflowInfo().workflowId,
    state: 'done',
    kernelKey: built.key,
    sha256: built.data.sha256,
    sizeBytes: built.data.sizeBytes,
    release: built.data.release,
    source: built.data.source,
    ...outcome(),
    s3Key,
  };
}
