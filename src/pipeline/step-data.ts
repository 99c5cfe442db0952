import { z } from 'zod';
import { Sha256Hex } from '../config/schema';

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

/** The image artifact's own record. */
export const ImageArtifactData = z.object({
  file: z.string().regex(/^rootfs-[a-z][a-z0-9-]{0,31}\.ext4$/),
  sizeBytes: z.int().nonnegative(),
  sizeMiB: z.int().positive(),
  usedMiB: z.number().nonnegative(),
  sha256: Sha256Hex,
});

export const ImageData = ImageArtifactData.extend({
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
