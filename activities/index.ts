import * as path from 'node:path';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { z } from 'zod';
import { checkBuildHost, localInputs, PinnedFileMissing, WrongBuildHost, BuildSpec } from '../src/pipeline/build-spec';
import { ConfigError, Name, Sha256Hex, type LoadedConfig, type S3Config } from '../src/config';
import { BuildError, StepRunner, WouldBuild, type Progress } from '../src/pipeline/context';
import { KEY_PATTERN, stepKey } from '../src/pipeline/keys';
import { Pipeline, type ArchiveSnapshot } from '../src/pipeline/pipeline';
import { ImageArtifactData, type ImageOrigin } from '../src/pipeline/step-data';
import { uploadKeyInput } from '../src/pipeline/step-keys';
import { HostKeyMismatchError, type Host } from '../src/host';
import {
  KernelBuildData,
  KernelPipeline,
  type KernelConfigData,
  type KernelSourceData,
} from '../src/kernel/kernel-pipeline';
import type {
  BootData,
  BucketListing,
  ImageData,
  ProbedStep,
  StepResult,
  UploadData,
  VerifyData,
} from '../workflows/types';
import { bootImage } from '../src/pipeline/boot';

/**
 * Activities: one small function per build step. Each validates its input — which carries the
 * build's spec, so every worker builds what the build was started with — runs the domain code in
 * src/ on the build host, heartbeats its progress, and returns keys, sizes and versions only.
 */

export interface ActivityDeps {
  /** This worker's own config: the build host it drives, where its local files are. Never what a build builds. */
  worker: LoadedConfig;
  /** The build host this worker drives. */
  host(): Promise<Host>;
  /** Uploads a finished image; absent when no store is configured. */
  upload?(args: {
    spec: BuildSpec;
    language: string;
    /** The image inside its artifact on the build host: immutable, unlike the published copy. */
    artifactImagePath: string;
    host: Host;
    /** What the build knows of the image: the uploaded manifest is made from it. */
    image: {
      versions: string[];
      artifactKey: string;
      sha256: string;
      sizeBytes: number;
      origin?: ImageOrigin;
      boot?: { bootMs: number; kernelSha256: string };
    };
    signal?: AbortSignal;
    /** Only answer whether the bucket already holds it: where it would upload, throw WouldBuild. */
    probe?: boolean;
  }): Promise<StepResult<UploadData>>;
  /** Uploads a built kernel (`vmlinux`, its .config and manifest); absent when no store is configured. */
  uploadKernel?(args: {
    spec: BuildSpec;
    /** The kernel's artifact directory on the build host (vmlinux and config). */
    artifactDir: string;
    host: Host;
    kernel: { artifactKey: string; sha256: string; configSha256: string; versions: string[] };
    signal?: AbortSignal;
  }): Promise<StepResult<UploadData>>;
  listBucket?(s3: S3Config): Promise<BucketListing>;
}

const Key = z.string().regex(KEY_PATTERN);
const Snapshot = z.record(z.string().regex(/^[a-z0-9][a-z0-9.-]{0,63}$/), Sha256Hex);

/**
 * Every step's input carries the build's spec. One that does not comes from a build started
 * before specs existed: its worker would build from whatever config it has, so it is refused
 * (optional in the schema only so that the refusal can say that).
 */
const Pinned = { spec: BuildSpec.optional() };

function pinnedSpec(spec: BuildSpec | undefined): BuildSpec {
  if (!spec)
    throw new BuildError(
      'this build was started by an older version that did not pin its configuration: start it again',
      'InvalidInput',
    );
  return spec;
}
const LanguageInput = z.strictObject({ language: Name, ...Pinned });
const ArchiveInput = z.strictObject({ ...Pinned });
const BaseInput = z.strictObject({ language: Name, archive: Snapshot.optional(), ...Pinned });
const RuntimeInput = z.strictObject({ language: Name, baseKey: Key, archive: Snapshot.optional(), ...Pinned });
const OperatorInput = z.strictObject({ language: Name, runtimeKey: Key, operatorSha256: Sha256Hex, ...Pinned });
const VerifyInput = z.strictObject({ language: Name, operatorKey: Key, ...Pinned });
const ImageInput = z.strictObject({ language: Name, verifyKey: Key, operatorKey: Key, ...Pinned });
const Versions = z.array(z.string().max(500)).max(20);
const BootInput = z.strictObject({ language: Name, imageKey: Key, versions: Versions, ...Pinned });
const UploadInput = z.strictObject({
  language: Name,
  imageKey: Key,
  versions: Versions,
  /** What the boot step measured: the manifest records it. */
  boot: z.strictObject({ bootMs: z.int().nonnegative(), kernelSha256: Sha256Hex }).optional(),
  ...Pinned,
});
const ProbeInput = z.strictObject({ language: Name, archive: Snapshot.optional(), upload: z.boolean(), ...Pinned });

const KernelConfigInput = z.strictObject({ sourceKey: Key, ...Pinned });
const KernelBuildInput = z.strictObject({ sourceKey: Key, configKey: Key, ...Pinned });
const KernelUploadInput = z.strictObject({ buildKey: Key, ...Pinned });

function toFailure(err: unknown): unknown {
  if (err instanceof BuildError)
    return ApplicationFailure.create({ message: err.message, type: err.type, nonRetryable: true });
  if (err instanceof ConfigError)
    return ApplicationFailure.create({ message: err.message, type: 'ConfigError', nonRetryable: true });
  if (err instanceof HostKeyMismatchError)
    return ApplicationFailure.create({ message: err.message, type: 'HostKeyMismatch', nonRetryable: true });
  if (err instanceof PinnedFileMissing || err instanceof WrongBuildHost) {
    return ApplicationFailure.create({ message: err.message, type: err.name, nonRetryable: true });
  }
  if (err instanceof z.ZodError) {
    return ApplicationFailure.create({
      message: `invalid activity input: ${z.prettifyError(err)}`,
      type: 'InvalidInput',
      nonRetryable: true,
    });
  }
  return err;
}

export function createActivities(deps: ActivityDeps) {
  /**
   * Runs `fn` on this worker's build host for the build's spec, with a runner whose commands
   * heartbeat and stop when the activity is cancelled.
   */
  async function withStep<I extends { spec?: BuildSpec }, T>(
    schema: z.ZodType<I>,
    input: unknown,
    fn: (runner: StepRunner, args: I & { spec: BuildSpec }) => Promise<T>,
  ): Promise<T> {
    const ctx = Context.current();
    let latest: Progress = { phase: 'starting' };
    ctx.heartbeat(latest);
    // Heartbeat on a timer too: a quiet command (mkfs, a big download) must not look dead.
    const timer = setInterval(() => ctx.heartbeat(latest), 2000);
    try {
      const args = schema.parse(input);
      const spec = pinnedSpec(args.spec);
      checkBuildHost(spec, deps.worker);
      const runner = new StepRunner(await deps.host(), (p) => (latest = p), ctx.cancellationSignal);
      return await fn(runner, { ...args, spec });
    } catch (err) {
      throw toFailure(err);
    } finally {
      clearInterval(timer);
    }
  }

  /** `withStep` with the image pipeline for the build's spec. */
  const withPipeline = <I extends { spec?: BuildSpec }, T>(
    schema: z.ZodType<I>,
    input: unknown,
    fn: (pipeline: Pipeline, args: I & { spec: BuildSpec }) => Promise<T>,
  ): Promise<T> =>
    withStep(schema, input, (runner, args) =>
      fn(new Pipeline(runner, { config: args.spec, ...localInputs(args.spec, deps.worker) }), args),
    );

  /** `withStep` with the kernel pipeline for the build's spec. */
  const withKernel = <I extends { spec?: BuildSpec }, T>(
    schema: z.ZodType<I>,
    input: unknown,
    fn: (kernel: KernelPipeline, args: I & { spec: BuildSpec }) => Promise<T>,
  ): Promise<T> =>
    withStep(schema, input, (runner, args) => {
      if (!args.spec.kernel)
        throw new BuildError('this build was started without a kernel in its configuration', 'InvalidInput');
      return fn(new KernelPipeline(runner, args.spec.workspace, args.spec.kernel), args);
    });

  async function allocateStep(p: Pipeline, { language, spec }: { language: string; spec: BuildSpec }) {
    await p.prepare(language);
    return { operatorSha256: spec.operatorSha256 };
  }

  async function uploadStep(
    p: Pipeline,
    { language, imageKey, versions, boot, spec }: z.infer<typeof UploadInput> & { spec: BuildSpec },
    probe = false,
  ): Promise<StepResult<UploadData>> {
    const meta = await p.store.lookup(imageKey);
    if (!meta) throw new BuildError(`image artifact ${imageKey} is gone from the build host`, 'InvalidInput');
    const artifact = ImageArtifactData.parse(meta.data);
    if (!deps.upload) throw new BuildError('no image store is configured for uploads', 'InvalidInput');
    const result = await deps.upload({
      spec,
      language,
      artifactImagePath: path.posix.join(p.store.dir(imageKey), artifact.file),
      host: await deps.host(),
      signal: Context.current().cancellationSignal,
      image: {
        versions,
        artifactKey: imageKey,
        sha256: artifact.sha256,
        sizeBytes: artifact.sizeBytes,
        origin: artifact.origin,
        ...(boot ? { boot } : {}),
      },
      probe,
    });
    return { ...result, key: stepKey('upload', imageKey, uploadKeyInput({ s3: spec.s3 })) };
  }

  return {
    /** Builds started before specs existed asked the worker for the languages; they are refused now. */
    async plan(): Promise<{ languages: string[] }> {
      throw toFailure(pinnedSpec(undefined));
    },

    /** Checks the build's inputs on this worker; answers the operator binary's digest the build pinned. */
    async allocate(input: z.input<typeof LanguageInput>): Promise<{ operatorSha256: string }> {
      return withPipeline(LanguageInput, input, allocateStep);
    },

    /** The archive's state, read once per build so that every image of it agrees on the base. */
    async archiveSnapshot(input: z.input<typeof ArchiveInput>): Promise<ArchiveSnapshot> {
      return withPipeline(ArchiveInput, input, (p) => p.archiveSnapshot());
    },

    async base(input: z.input<typeof BaseInput>): Promise<StepResult> {
      return withPipeline(BaseInput, input, (p, { archive }) => p.base(archive));
    },

    async runtime(input: z.input<typeof RuntimeInput>): Promise<StepResult> {
      return withPipeline(RuntimeInput, input, (p, { language, baseKey, archive }) =>
        p.runtime(language, baseKey, archive),
      );
    },

    async operator(input: z.input<typeof OperatorInput>): Promise<StepResult> {
      return withPipeline(OperatorInput, input, (p, { language, runtimeKey, operatorSha256 }) =>
        p.operator(language, runtimeKey, operatorSha256),
      );
    },

    async verify(input: z.input<typeof VerifyInput>): Promise<StepResult<VerifyData>> {
      return withPipeline(VerifyInput, input, (p, { language, operatorKey }) => p.verify(language, operatorKey));
    },

    async image(input: z.input<typeof ImageInput>): Promise<StepResult<ImageData>> {
      return withPipeline(ImageInput, input, (p, { language, verifyKey, operatorKey }) =>
        p.image(language, verifyKey, operatorKey),
      );
    },

    async boot(input: z.input<typeof BootInput>): Promise<StepResult<BootData>> {
      return withStep(BootInput, input, (runner, { language, imageKey, versions, spec }) =>
        bootImage(runner, spec, language, imageKey, versions),
      );
    },

    async upload(input: z.input<typeof UploadInput>): Promise<StepResult<UploadData>> {
      return withPipeline(UploadInput, input, (p, args) => uploadStep(p, args));
    },

    /**
     * The finished steps of an image, looked up in one activity: the steps in the order
     * `createRootfs` runs them, each through its own reuse path (a runner that only probes), up
     * to the first one that would have to build. An unchanged build then takes one activity per
     * image instead of one per step. Keep it in step with `createRootfs`'s sequence.
     */
    async probe(input: z.input<typeof ProbeInput>): Promise<{ steps: ProbedStep[] }> {
      return withStep(ProbeInput, input, async (stepRunner, args) => {
        const { language, archive, spec } = args;
        const runner = stepRunner.probing();
        const p = new Pipeline(runner, { config: spec, ...localInputs(spec, deps.worker) });
        const steps: ProbedStep[] = [];
        const take = async <R extends ProbedStep['result']>(step: ProbedStep['step'], fn: () => Promise<R>) => {
          const started = Date.now();
          const result = await fn();
          steps.push({ step, result, durationMs: Date.now() - started });
          return result;
        };
        try {
          const { operatorSha256 } = await take('allocate', () => allocateStep(p, args));
          const base = await take('base', () => p.base(archive));
          const runtime = await take('runtime', () => p.runtime(language, base.key, archive));
          const operator = await take('operator', () => p.operator(language, runtime.key, operatorSha256));
          const verify = await take('verify', () => p.verify(language, operator.key));
          const image = await take('image', () => p.image(language, verify.key, operator.key));
          const { versions } = verify.data;
          const booted =
            spec.kernel && spec.boot
              ? await take('boot', () => bootImage(runner, spec, language, image.key, versions))
              : undefined;
          const boot = booted && { bootMs: booted.data.bootMs, kernelSha256: booted.data.kernelSha256 };
          if (args.upload) {
            const uploadArgs = { language, imageKey: image.key, versions, spec, ...(boot ? { boot } : {}) };
            await take('upload', () => uploadStep(p, uploadArgs, true));
          }
        } catch (err) {
          if (!(err instanceof WouldBuild)) throw err;
        }
        return { steps };
      });
    },

    async kernelSource(input: z.input<typeof ArchiveInput>): Promise<StepResult<KernelSourceData>> {
      return withKernel(ArchiveInput, input, (k) => k.source());
    },

    async kernelConfig(input: z.input<typeof KernelConfigInput>): Promise<StepResult<KernelConfigData>> {
      return withKernel(KernelConfigInput, input, (k, { sourceKey }) => k.configure(sourceKey));
    },

    async kernelBuild(input: z.input<typeof KernelBuildInput>): Promise<StepResult<KernelBuildData>> {
      return withKernel(KernelBuildInput, input, (k, { sourceKey, configKey }) => k.build(sourceKey, configKey));
    },

    async kernelUpload(input: z.input<typeof KernelUploadInput>): Promise<StepResult<UploadData>> {
      return withKernel(KernelUploadInput, input, async (k, { buildKey, spec }) => {
        const meta = await k.store.lookup(buildKey);
        if (!meta) throw new BuildError(`kernel artifact ${buildKey} is gone from the build host`, 'InvalidInput');
        const built = KernelBuildData.parse(meta.data);
        if (!deps.uploadKernel) throw new BuildError('no image store is configured for uploads', 'InvalidInput');
        const result = await deps.uploadKernel({
          spec,
          artifactDir: k.store.dir(buildKey),
          host: await deps.host(),
          signal: Context.current().cancellationSignal,
          kernel: {
            artifactKey: buildKey,
            sha256: built.sha256,
            configSha256: built.configSha256,
            versions: [`Linux ${built.release} (${built.source})`],
          },
        });
        return { ...result, key: stepKey('kernel-upload', buildKey, uploadKeyInput({ s3: spec.s3 })) };
      });
    },

    async listBucket(input: z.input<typeof ArchiveInput>): Promise<BucketListing> {
      try {
        const spec = pinnedSpec(ArchiveInput.parse(input).spec);
        if (!deps.listBucket) throw new BuildError('no image store is configured', 'InvalidInput');
        return await deps.listBucket(spec.s3);
      } catch (err) {
        throw toFailure(err);
      }
    },
  };
}

export type BuildActivities = ReturnType<typeof createActivities>;
