import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';

/**
 * What an unfinished multipart upload leaves on disk so that the next run resumes it: the upload
 * ID and part size, and what the file was (size, sha256, CRC32) so that a changed file is not
 * resumed. One small JSON file per bucket and key, written by rename.
 */

const UploadStateSchema = z.object({
  endpoint: z.string(),
  bucket: z.string(),
  key: z.string(),
  uploadId: z.string().min(1),
  partSizeBytes: z.int().positive(),
  sizeBytes: z.int().nonnegative(),
  sha256: z.string(),
  crc32: z.string(),
  startedAt: z.string(),
});
export type UploadState = z.infer<typeof UploadStateSchema>;

export const STATE_SUFFIX = '.upload.json';

export const statePath = (stateDir: string, bucket: string, key: string): string =>
  path.join(stateDir, `${bucket}__${key}${STATE_SUFFIX}`);

/** The state in `file`; undefined when there is none or it is unreadable (the upload starts over). */
export function readState(file: string): UploadState | undefined {
  try {
    return UploadStateSchema.parse(JSON.parse(fs.readFileSync(file, 'utf8')));
  } catch {
    return undefined;
  }
}

export function writeState(file: string, state: UploadState): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(state, null, 2) + '\n');
  fs.renameSync(`${file}.tmp`, file);
}

export const forgetState = (file: string): void => fs.rmSync(file, { force: true });
