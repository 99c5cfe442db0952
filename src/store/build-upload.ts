import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ActivityDeps } from '../../activities';
import type { BuildSpec } from '../pipeline/build-spec';
import type { StepResult, UploadData } from '../../workflows/types';
import { WouldBuild } from '../pipeline/context';
import { capture } from '../util/exec';
import { userCacheDir } from '../util/paths';
import { toolPaths } from '../setup/tools';
import type { Host } from '../host';
import { currentManifest } from './blocks';
import { createClient, type StoreContext } from './client';
import { fileDigest } from './digest';
import { imageKey } from './layout';
import { listBucket, readManifest, summarize } from './list';
import { statObject } from './client';
import { uploadImage, uploadKernel, uploadKernelConfig, type UploadResult } from './upload';

/**
 * The S3 side of the build: the upload step and the closing bucket listing. Credentials come
 * from the AWS SDK's own chain in the worker's environment; they never enter workflow data.
 *
 * On a local build host the image is uploaded from its artifact, which never changes (the
 * published copy under images/ is replaced by whichever build of that language in the same
 * workspace finishes last, so it may not be this build's image). From an SSH build host the
 * image is first copied here (SFTP) into a staging cache, holes punched back, and checked
 * against the sha256 the build host computed; then it is uploaded like a local one. When the
 * bucket already holds exactly this image (same sha256, size and artifact), nothing is copied.
 */

/** Where images pulled from SSH build hosts wait for their upload; one per language and host. */
export function stagingDir(alias: string): string {
  return path.join(userCacheDir(), 'staging', alias);
}

async function pullFile(
  host: Host,
  remote: string,
  local: string,
  sha256: string,
  signal?: AbortSignal,
): Promise<void> {
  const cached = fs.existsSync(local)
    ? await fileDigest(local, { crc32: false, signal }).catch(() => undefined)
    : undefined;
  if (cached?.sha256 === sha256) return;
  fs.mkdirSync(path.dirname(local), { recursive: true });
  const tmp = `${local}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  try {
    await host.getFile(remote, tmp);
    // SFTP reads holes as zeros: punch them again, so a 2 GiB image takes its data size here too.
    await capture('fallocate', ['--dig-holes', tmp]);
    fs.renameSync(tmp, local);
    // Digested under its final name, so the upload that follows finds the digest cached.
    const got = await fileDigest(local, { crc32: true, signal });
    if (got.sha256 !== sha256) {
      fs.rmSync(local, { force: true });
      // A damaged transfer, not a damaged image: an ordinary error, so the step is retried.
      throw new Error(
        `the copy of ${remote} from the build host has sha256 ${got.sha256}, the build recorded ${sha256}`,
      );
    }
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/** Runs `fn` with a store context for the build's bucket, and closes the client after. */
async function withStore<T>(
  spec: BuildSpec,
  signal: AbortSignal | undefined,
  fn: (ctx: StoreContext) => Promise<T>,
): Promise<T> {
  const client = createClient({ config: spec.s3 });
  try {
    return await fn({ client, config: spec.s3, workspace: spec.workspace, signal, fetcher: toolPaths().blockFetcher });
  } finally {
    client.destroy();
  }
}

/**
 * Whether the bucket holds this image already, in every layout the config writes: the plain object
 * with its manifest, and the block store's current version (same content, same artifact).
 */
async function storedAlready(
  ctx: StoreContext,
  key: string,
  sha256: string,
  sizeBytes: number,
  artifactKey: string,
): Promise<boolean> {
  if (ctx.config.plainObjects !== false) {
    const remote = await statObject(ctx, key);
    if (remote?.sha256 !== sha256 || remote.sizeBytes !== sizeBytes) return false;
    const current = (await readManifest(ctx, key)).manifest;
    if (current?.sha256 !== sha256 || current.artifactKey !== artifactKey) return false;
  }
  if (ctx.config.blockStore !== false) {
    const current = await currentManifest(ctx, key);
    if (current?.sha256 !== sha256 || current.artifactKey !== artifactKey) return false;
  }
  return true;
}

/** The upload step's result for an uploaded (or already stored) artifact. */
const uploaded = (spec: BuildSpec, artifactKey: string, outcome: UploadResult): StepResult<UploadData> => ({
  key: artifactKey,
  reused: outcome.status === 'unchanged',
  data: { s3Key: outcome.key, bucket: spec.s3.bucket, bytesSent: outcome.bytesSent, sha256: outcome.sha256 },
});

/**
 * Removes what `dir` holds besides `keep` and its dotfiles (the digest cache): older artifacts'
 * staging copies, once this one is in.
 */
function removeOthers(dir: string, keep: string): void {
  for (const name of fs.readdirSync(dir)) {
    if (name !== keep && !name.startsWith(`.${keep}.`))
      fs.rmSync(path.join(dir, name), { recursive: true, force: true });
  }
}

export function s3StoreDeps(): Pick<ActivityDeps, 'upload' | 'uploadKernel' | 'listBucket'> {
  return {
    upload: ({ spec, language, artifactImagePath, host, image, signal, probe }) =>
      withStore(spec, signal, async (ctx) => {
        const { origin } = image;
        const facts = {
          versions: image.versions,
          artifactKey: image.artifactKey,
          ...(origin
            ? { archive: origin.archive, packages: origin.packages, operatorSha256: origin.operatorSha256 }
            : {}),
          ...(image.boot
            ? { boot: { seconds: Math.round(image.boot.bootMs / 100) / 10, kernelSha256: image.boot.kernelSha256 } }
            : {}),
        };
        let file = artifactImagePath;
        const { buildHost } = spec;
        if (buildHost.kind !== 'local') {
          const key = imageKey(language);
          const { sha256 } = image;
          // The local store keeps its resumable-upload state and index cache beside the staging copy, not at the remote's path.
          ctx.workspace = stagingDir(buildHost.alias);
          if (await storedAlready(ctx, key, sha256, image.sizeBytes, facts.artifactKey)) {
            return {
              key: facts.artifactKey,
              reused: true,
              data: { s3Key: key, bucket: spec.s3.bucket, bytesSent: 0, sha256 },
            };
          }
          if (probe) throw new WouldBuild('upload', facts.artifactKey);
          // One copy per artifact: two builds of a language at once must not swap images under
          // each other's manifests. Copies of the language's older artifacts go once this one is in.
          const languageDir = path.join(stagingDir(buildHost.alias), language);
          file = path.join(languageDir, `${facts.artifactKey}.ext4`);
          await pullFile(host, artifactImagePath, file, sha256, signal);
          removeOthers(languageDir, path.basename(file));
        }
        const outcome = await uploadImage(ctx, language, file, facts, { onlyIfStored: probe });
        if (outcome.status === 'absent') throw new WouldBuild('upload', facts.artifactKey);
        return uploaded(spec, facts.artifactKey, outcome);
      }),

    uploadKernel: ({ spec, host, artifactDir, kernel, signal }) =>
      withStore(spec, signal, async (ctx) => {
        let dir = artifactDir;
        const { buildHost } = spec;
        if (buildHost.kind !== 'local') {
          // One copy per artifact, as for images; the config is small and checked by its sha256 too.
          const kernelsDir = path.join(stagingDir(buildHost.alias), 'kernel');
          dir = path.join(kernelsDir, kernel.artifactKey);
          for (const [name, sha256] of [
            ['vmlinux', kernel.sha256],
            ['config', kernel.configSha256],
          ] as const) {
            await pullFile(host, path.posix.join(artifactDir, name), path.join(dir, name), sha256, signal);
          }
          removeOthers(kernelsDir, kernel.artifactKey);
          ctx.workspace = stagingDir(buildHost.alias);
        }
        await uploadKernelConfig(ctx, path.join(dir, 'config'));
        const outcome = await uploadKernel(ctx, path.join(dir, 'vmlinux'), {
          versions: kernel.versions,
          artifactKey: kernel.artifactKey,
          configSha256: kernel.configSha256,
        });
        return uploaded(spec, kernel.artifactKey, outcome);
      }),

    async listBucket(s3) {
      const client = createClient({ config: s3 });
      try {
        return summarize(await listBucket({ client, config: s3 }));
      } finally {
        client.destroy();
      }
    },
  };
}
