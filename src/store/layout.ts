import * as path from 'node:path';
import { z } from 'zod';
import { NAME_PATTERN, Sha256Hex } from '../config/schema';

/**
 * The bucket, flat at its root as Firecracker hosts have always fetched it:
 *
 *   vmlinux                               the kernel
 *   vmlinux.manifest.json                 its manifest
 *   vmlinux.config                        the .config it was built with
 *   rootfs-<lang>.ext4                    one image per language
 *   rootfs-<lang>.ext4.manifest.json      its manifest
 *
 * An object also carries its sha256 as `x-amz-meta-sha256` and the full-object CRC32 that S3
 * checked on upload. A manifest is written only after its object is complete and its checksum
 * confirmed, and readers trust an object only when its content matches its manifest's sha256.
 *
 * The workspace, as the pipeline writes it and Firecracker hosts read it:
 *
 *   <workspace>/vmlinux
 *   <workspace>/images/rootfs-<lang>.ext4
 *   <workspace>/rootfs.ext4 -> images/rootfs-python.ext4   the image hosts boot by default
 *
 * The default link is where the hosts' Firecracker configs have always found it. Earlier versions
 * put it at `images/rootfs.ext4`; a sync removes that link when it is one of ours.
 *
 * Beside each file, a dotfile `.<name>.digest.json` remembers its sha256 and CRC32, valid while
 * size, mtime and inode are unchanged. While an upload is unfinished, its ID and part size are
 * kept in `<workspace>/.uploads/<bucket>__<key>.upload.json`, so the next run resumes it.
 */

export const KERNEL_KEY = 'vmlinux';
export const KERNEL_CONFIG_KEY = 'vmlinux.config';
export const MANIFEST_SUFFIX = '.manifest.json';
export const DEFAULT_LANGUAGE = 'python';
/** The default link, in the workspace itself. */
export const DEFAULT_LINK = 'rootfs.ext4';
/** Where earlier versions put the default link: `images/rootfs.ext4 -> rootfs-<lang>.ext4`. */
export const OLD_LINK = path.join('images', DEFAULT_LINK);
/** A manifest is a few KiB (an image's package list is most of it); one larger than this is not read (nor written). */
export const MAX_MANIFEST_BYTES = 64 * 1024;

const LANG = NAME_PATTERN.source.replace(/^\^|\$$/g, '');
export const IMAGE_KEY_PATTERN = new RegExp(`^rootfs-(${LANG})\\.ext4$`);

export function imageKey(language: string): string {
  if (!NAME_PATTERN.test(language)) throw new Error(`not a language name: ${JSON.stringify(language).slice(0, 80)}`);
  return `rootfs-${language}.ext4`;
}

export const languageOfKey = (key: string): string | undefined => IMAGE_KEY_PATTERN.exec(key)?.[1];
export const manifestKey = (key: string): string => `${key}${MANIFEST_SUFFIX}`;
/** Keys this tool writes (and may abort uploads of): the kernel, images and their manifests. */
export const isStoreKey = (key: string): boolean =>
  key === KERNEL_KEY ||
  key === KERNEL_CONFIG_KEY ||
  IMAGE_KEY_PATTERN.test(key) ||
  (key.endsWith(MANIFEST_SUFFIX) && isStoreKey(key.slice(0, -MANIFEST_SUFFIX.length)));

export const imagesDir = (workspace: string) => path.join(workspace, 'images');
export const kernelPath = (workspace: string) => path.join(workspace, KERNEL_KEY);
/** Where an object of the bucket lives in the workspace. */
export const localPathOf = (workspace: string, key: string) =>
  key === KERNEL_KEY ? kernelPath(workspace) : path.join(imagesDir(workspace), key);
export const uploadStateDir = (workspace: string) => path.join(workspace, '.uploads');
/** A dotfile beside `file`: `.<name><suffix>`. */
export const besideFile = (file: string, suffix: string) =>
  path.join(path.dirname(file), `.${path.basename(file)}${suffix}`);

/** Facts the build knows about an image, recorded in its manifest. */
export interface ImageFacts {
  /** First lines of the version checks that passed, e.g. `Python 3.10.12`. */
  versions?: string[];
  /** When the image was built (ISO 8601); the file's mtime when unknown. */
  builtAt?: string;
  /** The pipeline's content-addressed key of the image artifact. */
  artifactKey?: string;
  /** What the image was built from: see `Manifest`. */
  archive?: ArchiveSnapshot;
  packages?: string[];
  operatorSha256?: string;
  /** The boot step's result: see `Manifest`. */
  boot?: ImageBoot;
  /** A kernel's: the sha256 of the .config it was built with (`vmlinux.config`). */
  configSha256?: string;
}

/** The image booted in a microVM before it was published: how long to /health, and with which kernel. */
export const ImageBoot = z.strictObject({ seconds: z.number().nonnegative(), kernelSha256: Sha256Hex });
export type ImageBoot = z.infer<typeof ImageBoot>;

/** An apt dist's name, e.g. `jammy-updates`. */
export const DIST_PATTERN = /^[a-z0-9][a-z0-9.-]{0,63}$/;
/** sha256 of the signed InRelease per dist: the archive state a build saw. */
export const ArchiveSnapshot = z.record(z.string().regex(DIST_PATTERN), Sha256Hex);
export type ArchiveSnapshot = z.infer<typeof ArchiveSnapshot>;
/** `name version` of an installed package, as `dpkg-query -W` prints it. */
export const PackageLine = z.string().regex(/^[a-z0-9][a-z0-9+.-]* [A-Za-z0-9.+~:-]+$/);

export const Manifest = z.object({
  format: z.literal(1),
  key: z.string().refine((k) => k === KERNEL_KEY || IMAGE_KEY_PATTERN.test(k), { error: 'not a kernel or image key' }),
  kind: z.enum(['kernel', 'image']),
  language: z.string().regex(NAME_PATTERN).optional(),
  sizeBytes: z.int().nonnegative(),
  sha256: Sha256Hex,
  /** The full-object CRC32 (base64) S3 checked when the object was uploaded. */
  crc32: z.string().regex(/^[A-Za-z0-9+/]{6}==$/),
  versions: z.array(z.string()).default([]),
  builtAt: z.string(),
  artifactKey: z.string().optional(),
  uploadedAt: z.string(),
  // What the image was built from (absent in manifests written before): after the fields above, so
  // that the bootstrap script's one-field-a-line reader meets the top-level `key` and `sha256` first.
  /** The archive snapshot: sha256 of each dist's signed InRelease. */
  archive: ArchiveSnapshot.optional(),
  /** The installed packages, `name version`, sorted. */
  packages: z.array(PackageLine).max(10_000).optional(),
  /** sha256 of the guest operator binary in the image. */
  operatorSha256: Sha256Hex.optional(),
  /** The boot that preceded the upload (absent for images uploaded by hand, or built before the boot step). */
  boot: ImageBoot.optional(),
  /** A kernel's .config (the `vmlinux.config` beside it): a reader can tell the pair belongs together. */
  configSha256: Sha256Hex.optional(),
});
export type Manifest = z.infer<typeof Manifest>;
