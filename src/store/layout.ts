import { z } from 'zod';
import { NAME_PATTERN } from '../config/schema';

/**
 * Objects at the bucket root, as the original layout has them:
 *   vmlinux                             the kernel
 *   rootfs-<lang>.ext4                  an image
 *   rootfs-<lang>.ext4.manifest.json    written only after its image is complete and verified
 * Every object also carries its sha256 as `x-amz-meta-sha256`, so a sync compares content.
 */

export const KERNEL_KEY = 'vmlinux';
export const IMAGE_KEY_PATTERN = new RegExp(`^rootfs-(${NAME_PATTERN.source.slice(1, -1)})\\.ext4$`);

export const imageKey = (language: string) => {
  if (!NAME_PATTERN.test(language)) throw new Error(`not a language name: ${JSON.stringify(language)}`);
  return `rootfs-${language}.ext4`;
};
export const manifestKey = (imageObjectKey: string) => `${imageObjectKey}.manifest.json`;
export const languageOfKey = (key: string) => IMAGE_KEY_PATTERN.exec(key)?.[1];

export const Manifest = z.object({
  language: z.string().regex(NAME_PATTERN),
  key: z.string(),
  sizeBytes: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  versions: z.array(z.string()).default([]),
  builtAt: z.string(),
  artifactKey: z.string().optional(),
});
export type Manifest = z.infer<typeof Manifest>;
