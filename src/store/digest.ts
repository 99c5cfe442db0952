import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';

/** CRC32 as S3 writes it: the 4 big-endian bytes, base64. */
export function crc32Base64(crc: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(crc >>> 0);
  return b.toString('base64');
}

export interface FileDigest {
  size: number;
  sha256: string;
  /** Full-object CRC32 (base64), which S3 checks on completion. */
  crc32: string;
}

/** Reads the file once for both sums. */
export async function digestFile(file: string, onBytes?: (n: number) => void): Promise<FileDigest> {
  const sha = crypto.createHash('sha256');
  let crc = 0;
  let size = 0;
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    sha.update(chunk);
    crc = zlib.crc32(chunk, crc);
    size += chunk.length;
    onBytes?.(chunk.length);
  }
  return { size, sha256: sha.digest('hex'), crc32: crc32Base64(crc) };
}
