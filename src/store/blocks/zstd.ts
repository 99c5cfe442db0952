import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StoreError } from '../errors';

/**
 * zstd through its command (Node 20 has no zstd of its own). Compression gives one process many
 * files, so a pack of thousands of frames costs a few process starts, not thousands; the output
 * is those files' frames back to back, cut apart again by reading the frames' own headers.
 */

const ZSTD = 'zstd';
const MAGIC = 0xfd2fb528;
const STDERR_KEEP = 2000;

/** The length of the zstd frame at `at` (RFC 8878 §3.1.1), read from its headers alone. */
export function frameLength(buf: Buffer, at: number): number {
  const need = (n: number) => {
    if (at + n > buf.length) throw new Error(`zstd frame at ${at} is cut short`);
  };
  need(5);
  if (buf.readUInt32LE(at) !== MAGIC) throw new Error(`no zstd frame at ${at}`);
  const fhd = buf[at + 4]!;
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const checksum = (fhd >> 2) & 1;
  const dictFlag = fhd & 3;
  let p = at + 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][dictFlag]! + [singleSegment, 2, 4, 8][fcsFlag]!;
  for (;;) {
    need(p + 3 - at);
    const bh = buf.readUIntLE(p, 3);
    const last = bh & 1;
    const type = (bh >> 1) & 3;
    const size = bh >> 3;
    if (type === 3) throw new Error(`zstd frame at ${at}: reserved block type`);
    p += 3 + (type === 1 ? 1 : size);
    if (last) break;
  }
  p += checksum ? 4 : 0;
  need(p - at);
  return p - at;
}

/** Runs zstd with `args`, `input` (bytes or a stream) on stdin; stdout goes to `onOutput`. */
export function runZstd(
  args: string[],
  input: Buffer | AsyncIterable<Buffer> | undefined,
  onOutput: (chunk: Buffer) => void,
  signal?: AbortSignal,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(ZSTD, ['-q', ...args], { stdio: ['pipe', 'pipe', 'pipe'], signal });
    let stderr = '';
    let inputError: Error | undefined;
    child.stdout.on('data', (c: Buffer) => {
      try {
        onOutput(c);
      } catch (err) {
        inputError ??= err as Error;
        child.kill();
      }
    });
    child.stderr.on('data', (c: Buffer) => (stderr = (stderr + c.toString('utf8')).slice(-STDERR_KEEP)));
    child.once('error', (err) =>
      reject(
        signal?.aborted
          ? new StoreError('interrupted', 'Stopped: the operation was interrupted.', { cause: err })
          : new Error(`cannot run ${ZSTD}: ${err.message}`, { cause: err }),
      ),
    );
    child.once('close', (code, sig) => {
      if (inputError) reject(inputError);
      else if (code === 0) resolve();
      else
        reject(
          new Error(`${ZSTD} ${args.slice(0, 3).join(' ')} failed (${code ?? sig}): ${stderr.trim() || 'no message'}`),
        );
    });
    child.stdin.on('error', () => {
      /* zstd stopped reading: its exit status says why */
    });
    if (input === undefined || Buffer.isBuffer(input)) child.stdin.end(input);
    else
      void (async () => {
        try {
          for await (const chunk of input) {
            if (!child.stdin.write(chunk)) await new Promise((r) => child.stdin.once('drain', r));
          }
          child.stdin.end();
        } catch (err) {
          inputError ??= err as Error;
          child.kill();
        }
      })();
  });
}

/**
 * Compresses each buffer into one zstd frame (with its content checksum), one zstd process for
 * all of them: they are written to files in `tmpDir` (which must exist) and given to zstd at once.
 */
export async function compressFrames(
  contents: Buffer[],
  tmpDir: string,
  level: number,
  signal?: AbortSignal,
): Promise<Buffer[]> {
  if (!contents.length) return [];
  const files = contents.map((c, i) => {
    const file = path.join(tmpDir, `frame-${i}`);
    fs.writeFileSync(file, c);
    return file;
  });
  const out: Buffer[] = [];
  try {
    await runZstd([`-${level}`, '-c', '--', ...files], undefined, (c) => out.push(c), signal);
  } finally {
    for (const f of files) fs.rmSync(f, { force: true });
  }
  const all = Buffer.concat(out);
  const frames: Buffer[] = [];
  for (let at = 0; at < all.length; ) {
    const len = frameLength(all, at);
    frames.push(all.subarray(at, at + len));
    at += len;
  }
  if (frames.length !== contents.length)
    throw new Error(`zstd wrote ${frames.length} frames for ${contents.length} inputs`);
  return frames;
}

/** Decompresses one or more frames back to back into one buffer (small objects: an index). */
export async function decompress(input: Buffer, signal?: AbortSignal): Promise<Buffer> {
  const out: Buffer[] = [];
  await runZstd(['-d', '-c'], input, (c) => out.push(c), signal);
  return Buffer.concat(out);
}

/** Compresses a small buffer into one frame (an index). */
export async function compress(input: Buffer, level: number, signal?: AbortSignal): Promise<Buffer> {
  const out: Buffer[] = [];
  await runZstd([`-${level}`, '-c'], input, (c) => out.push(c), signal);
  return Buffer.concat(out);
}
