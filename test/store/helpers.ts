import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { strict as assert } from 'node:assert';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { tempDir } from '../support/process';
import { rootfs as runCli } from '../support/cli';

export const MiB = 1024 * 1024;

/** sha256 of a file, read here rather than by the code under test. */
export function sha256File(file: string): string {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(8 * MiB);
  try {
    for (let n; (n = fs.readSync(fd, buf)) > 0; ) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

export function randomFile(file: string, bytes: number): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const fd = fs.openSync(file, 'w');
  for (let done = 0; done < bytes; done += 16 * MiB)
    fs.writeSync(fd, crypto.randomBytes(Math.min(16 * MiB, bytes - done)));
  fs.closeSync(fd);
}

/** A sparse file of `size` bytes with random data at the given [offset, length] regions only. */
export function sparseFile(file: string, size: number, regions: Array<[number, number]>): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const fd = fs.openSync(file, 'w');
  for (const [offset, length] of regions) {
    for (let done = 0; done < length; done += 16 * MiB) {
      fs.writeSync(fd, crypto.randomBytes(Math.min(16 * MiB, length - done)), 0, undefined, offset + done);
    }
  }
  fs.ftruncateSync(fd, size);
  fs.closeSync(fd);
}

/** An empty workspace: `<dir>/images/`. */
export function workspace(prefix = 'ws'): string {
  const ws = tempDir(prefix);
  fs.mkdirSync(path.join(ws, 'images'));
  return ws;
}

/** Bytes a file takes on disk. */
export const allocated = (file: string) => fs.statSync(file).blocks * 512;

/** The CLI as a program, with the environment given and nothing else of this process's. */
export const rootfs = (args: string[], env: Record<string, string> = {}) => runCli(args, env, { clean: true });

/** An object's content as text, read here rather than by the code under test. */
export async function objectText(client: S3Client, bucket: string, key: string): Promise<string> {
  return (await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToString();
}

/** Asserts that some line of `log` ends with exactly `text` (log lines start with a timestamp). */
export function assertLine(log: string, text: string): void {
  assert.ok(
    log.split('\n').some((line) => line.endsWith(text)),
    `no line ends with ${JSON.stringify(text)} in:\n${log}`,
  );
}
