import * as crypto from 'node:crypto';
import * as path from 'node:path';
import type { StepRunner } from './context';

/**
 * The published image of a language: `<workspace>/images/rootfs-<lang>.ext4` (the layout the S3
 * commands and Firecracker use) and its manifest beside it, which `rootfs customize` and
 * `rootfs explain` start from.
 */

export interface PublishedManifest {
  artifactKey?: string;
  /** The tree the image was made from. */
  treeKey?: string;
  customizations?: string[][];
  /** What the image was built from (absent before it was recorded): archive snapshot, packages, operator. */
  archive?: Record<string, string>;
  packages?: string[];
  operatorSha256?: string;
}

/** What the build wrote beside the published image `dest`, if it has been built. */
export async function publishedManifest(runner: StepRunner, dest: string): Promise<PublishedManifest | null> {
  const file = `${dest}.manifest.json`;
  if (!(await runner.host.stat(file))) return null;
  return JSON.parse((await runner.host.readFile(file)).toString('utf8')) as PublishedManifest;
}

/**
 * Copies the image `source` (inside the artifact `key`) to `dest`, sparse, by rename, then writes
 * the manifest beside it. A copy, not a link: a VM writing to its rootfs must not change the
 * artifact. A marker file remembers which artifact the copy is of, so an unchanged image is not
 * copied again.
 */
export async function publishImage(
  runner: StepRunner,
  source: string,
  dest: string,
  key: string,
  manifest: Record<string, unknown>,
): Promise<void> {
  const marker = path.posix.join(path.posix.dirname(dest), `.${path.posix.basename(dest)}.source`);
  const current = async () => `${key} ${(await runner.read(['stat', '-c', '%s %Y %i', dest]).catch(() => '')).trim()}`;
  const published =
    (await runner.host.stat(marker)) && (await runner.host.readFile(marker)).toString('utf8') === (await current());
  if (!published) {
    runner.phase(`publishing ${dest}`);
    await replaceAtomically(runner, dest, (tmp) => runner.run(['cp', '--sparse=always', source, tmp]));
    await runner.host.writeFile(marker, await current());
  }
  // What the build knows about the image, beside it (the S3 upload publishes it as the manifest):
  // written after the image and by rename, so a reader finds the image with this manifest or the
  // previous pair, never a manifest without its image.
  const text = JSON.stringify(manifest, null, 2) + '\n';
  await replaceAtomically(runner, `${dest}.manifest.json`, (tmp) => runner.host.writeFile(tmp, text));
}

/** Makes `file` anew through a temp name beside it and one rename. */
async function replaceAtomically(
  runner: StepRunner,
  file: string,
  make: (tmp: string) => Promise<void>,
): Promise<void> {
  const tmp = `${file}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  try {
    await make(tmp);
    await runner.run(['mv', '-f', tmp, file]);
  } finally {
    await runner.run(['rm', '-f', tmp]);
  }
}
