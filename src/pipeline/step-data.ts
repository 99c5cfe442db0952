import { z } from 'zod';
import { Sha256Hex } from '../config/schema';
import { ArchiveSnapshot, PackageLine } from '../store/layout';

/**
 * What the steps whose results the workflow reads hand back, one schema each: the pipeline parses
 * an artifact's meta.json with them (it is read from disk, so it is checked), and the workflow
 * types come from them (`import type`), so the two cannot drift apart.
 */

export const VerifyData = z.object({
  /** The first line each version check printed, in the configured order. */
  versions: z.array(z.string()),
});
export type VerifyData = z.infer<typeof VerifyData>;

/**
 * What a finished tree (the operator step's, a customize step's) was built from, in its meta.json:
 * the image step makes the image's times from `epoch` and records the rest in the manifest.
 */
export const TreeOrigin = z.object({
  /** The archive snapshot behind the base: sha256 of each dist's signed InRelease. */
  archive: ArchiveSnapshot,
  /** Seconds since 1970 every time in the tree (and the image) is clamped to; from `archive`. */
  epoch: z.int().nonnegative(),
  operatorSha256: Sha256Hex,
});
export type TreeOrigin = z.infer<typeof TreeOrigin>;

/** What the image was built from: the tree's origin and the packages installed in it. */
export const ImageOrigin = TreeOrigin.extend({
  /** `name version`, sorted, as `dpkg-query -W` lists them from the tree's database. */
  packages: z.array(PackageLine),
});
export type ImageOrigin = z.infer<typeof ImageOrigin>;

/** The image artifact's own record. */
export const ImageArtifactData = z.object({
  file: z.string().regex(/^rootfs-[a-z][a-z0-9-]{0,31}\.ext4$/),
  sizeBytes: z.int().nonnegative(),
  sizeMiB: z.int().positive(),
  usedMiB: z.number().nonnegative(),
  sha256: Sha256Hex,
  /** Absent in images built before it was recorded. Kept out of the step's result (the package list is long). */
  origin: ImageOrigin.optional(),
});

export const ImageData = ImageArtifactData.omit({ origin: true }).extend({
  /** The published copy under `<workspace>/images/`. */
  path: z.string(),
  versions: z.array(z.string()),
});
export type ImageData = z.infer<typeof ImageData>;

export const UploadData = z.object({
  s3Key: z.string(),
  bucket: z.string(),
  bytesSent: z.number().nonnegative(),
  sha256: Sha256Hex,
});
export type UploadData = z.infer<typeof UploadData>;

/** What the boot step found: the image booted with this kernel and answered from inside. */
export const BootData = z.object({
  /** From the microVM's start to the operator's first GET /health answer. */
  bootMs: z.int().nonnegative(),
  /** The first line each version check printed inside the running guest. */
  lines: z.array(z.string()),
  kernelKey: z.string(),
  kernelSha256: Sha256Hex,
  accelerator: z.enum(['kvm', 'tcg']),
});
export type BootData = z.infer<typeof BootData>;
