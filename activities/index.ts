import * as path from 'node:path';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { z } from 'zod';
import { ConfigError, Name, type LoadedConfig } from '../src/config';
import { BuildError, StepRunner, type Progress } from '../src/build/context';
import { KEY_PATTERN, stepKey } from '../src/build/keys';
import { Pipeline, type ArchiveSnapshot } from '../src/build/pipeline';
import { HostKeyMismatchError, type Host } from '../src/host';
import type { BucketListing, StepResult } from '../workflows/types';

/**
 * Activities: one small function per build step. Each validates its input, loads the current
 * config (so a fix made while a build waits for a retry is picked up), runs the domain code in
 * src/ on the build host, heartbeats its progress, and returns keys, sizes and versions only.
 */

export interface ActivityDeps {
  /** Reads the config afresh; throws ConfigError when it is invalid. */
  loadConfig(): LoadedConfig;
  /** The build host this worker drives. */
  host(): Promise<Host>;
  /** Resolves the operator binary and keyring paths for a loaded config. */
  paths(loaded: LoadedConfig): { operatorPath: string; keyringPath: string };
  /** Uploads a finished image (S3 issue); absent until a store is configured. */
  upload?(args: {
    loaded: LoadedConfig;
    language: string;
    imagePath: string;
    /** The image inside its artifact on the build host: immutable, unlike the published copy. */
    artifactImagePath: string;
    host: Host;
    manifest: Record<string, unknown>;
    signal?: AbortSignal;
  }): Promise<StepResult>;
  listBucket?(loaded: LoadedConfig): Promise<BucketListing>;
}

const Key = z.string().regex(KEY_PATTERN);
const LanguageInput = z.strictObject({ language: Name });
const Snapshot = z.record(z.string().regex(/^[a-z0-9][a-z0-9.-]{0,63}$/), z.string().regex(/^[0-9a-f]{64}$/));

function toFailure(err: unknown): unknown {
  if (err instanceof BuildError) return ApplicationFailure.create({ message: err.message, type: err.type, nonRetryable: true });
  if (err instanceof ConfigError) return ApplicationFailure.create({ message: err.message, type: 'ConfigError', nonRetryable: true });
  if (err instanceof HostKeyMismatchError) return ApplicationFailure.create({ message: err.message, type: 'HostKeyMismatch', nonRetryable: true });
  if (err instanceof z.ZodError) {
    return ApplicationFailure.create({ message: `invalid activity input: ${z.prettifyError(err)}`, type: 'InvalidInput', nonRetryable: true });
  }
  return err;
}

export function createActivities(deps: ActivityDeps) {
  /** Runs `fn` with a pipeline whose commands heartbeat and stop when the activity is cancelled. */
  async function withPipeline<T>(fn: (pipeline: Pipeline, loaded: LoadedConfig) => Promise<T>): Promise<T> {
    const ctx = Context.current();
    let latest: Progress = { phase: 'starting' };
    ctx.heartbeat(latest);
    // Heartbeat on a timer too: a quiet command (mkfs, a big download) must not look dead.
    const timer = setInterval(() => ctx.heartbeat(latest), 2000);
    try {
      const loaded = deps.loadConfig();
      const runner = new StepRunner(await deps.host(), (p) => (latest = p), ctx.cancellationSignal);
      const pipeline = new Pipeline(runner, { config: loaded.config, ...deps.paths(loaded) });
      return await fn(pipeline, loaded);
    } catch (err) {
      throw toFailure(err);
    } finally {
      clearInterval(timer);
    }
  }

  return {
    /** The configured languages, in build order. */
    async plan(): Promise<{ languages: string[] }> {
      try {
        return { languages: Object.keys(deps.loadConfig().config.languages) };
      } catch (err) {
        throw toFailure(err);
      }
    },

    async allocate(input: { language: string }): Promise<{ operatorSha256: string }> {
      return withPipeline(async (p) => p.prepare(LanguageInput.parse(input).language));
    },

    /** The archive's state, read once per build so that every image of it agrees on the base. */
    async archiveSnapshot(): Promise<ArchiveSnapshot> {
      return withPipeline((p) => p.archiveSnapshot());
    },

    async base(input: { language: string; archive?: ArchiveSnapshot }): Promise<StepResult> {
      const { archive } = z.strictObject({ language: Name, archive: Snapshot.optional() }).parse(input);
      return withPipeline((p) => p.base(archive));
    },

    async runtime(input: { language: string; baseKey: string; archive?: ArchiveSnapshot }): Promise<StepResult> {
      const { language, baseKey, archive } = z.strictObject({ language: Name, baseKey: Key, archive: Snapshot.optional() }).parse(input);
      return withPipeline((p) => p.runtime(language, baseKey, archive));
    },

    async operator(input: { language: string; runtimeKey: string; operatorSha256: string }): Promise<StepResult> {
      const { language, runtimeKey, operatorSha256 } = z
        .strictObject({ language: Name, runtimeKey: Key, operatorSha256: z.string().regex(/^[0-9a-f]{64}$/) })
        .parse(input);
      return withPipeline((p) => p.operator(language, runtimeKey, operatorSha256));
    },

    async verify(input: { language: string; operatorKey: string }): Promise<StepResult> {
      const { language, operatorKey } = z.strictObject({ language: Name, operatorKey: Key }).parse(input);
      return withPipeline((p) => p.verify(language, operatorKey));
    },

    async image(input: { language: string; verifyKey: string; operatorKey: string }): Promise<StepResult> {
      const { language, verifyKey, operatorKey } = z.strictObject({ language: Name, verifyKey: Key, operatorKey: Key }).parse(input);
      return withPipeline((p) => p.image(language, verifyKey, operatorKey));
    },

    async upload(input: { language: string; imageKey: string; versions: string[] }): Promise<StepResult> {
      const { language, imageKey, versions } = z
        .strictObject({ language: Name, imageKey: Key, versions: z.array(z.string().max(500)).max(20) })
        .parse(input);
      return withPipeline(async (p, loaded) => {
        const meta = await p.store.lookup(imageKey);
        if (!meta) throw new BuildError(`image artifact ${imageKey} is gone from the build host`, 'InvalidInput');
        if (!deps.upload) throw new BuildError('no image store is configured for uploads', 'InvalidInput');
        const result = await deps.upload({
          loaded,
          language,
          imagePath: p.imagePath(language),
          artifactImagePath: path.posix.join(p.store.dir(imageKey), String(meta.data.file ?? `rootfs-${language}.ext4`)),
          host: await deps.host(),
          signal: Context.current().cancellationSignal,
          manifest: { language, versions, artifactKey: imageKey, sha256: meta.data.sha256, sizeBytes: meta.data.sizeBytes },
        });
        const { bucket, region, endpoint } = loaded.config.s3;
        return { ...result, key: stepKey('upload', imageKey, { bucket, region, endpoint: endpoint ?? null }) };
      });
    },

    async listBucket(): Promise<BucketListing> {
      try {
        const loaded = deps.loadConfig();
        if (!deps.listBucket) throw new BuildError('no image store is configured', 'InvalidInput');
        return await deps.listBucket(loaded);
      } catch (err) {
        throw toFailure(err);
      }
    },
  };
}

export type BuildActivities = ReturnType<typeof createActivities>;
