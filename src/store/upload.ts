import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListPartsCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { S3Config } from '../config/schema';
import { describeError, StoreError } from './client';
import { crc32Base64, digestFile, type FileDigest } from './digest';
import { silentProgress, type TransferProgress } from './progress';

export interface UploadOptions {
  client: S3Client;
  config: S3Config;
  key: string;
  file: string;
  /** Where an interrupted multipart upload remembers its ID, so the next run resumes it. */
  stateDir: string;
  partSizeBytes?: number;
  concurrency?: number;
  progress?: TransferProgress;
  /** Already computed sums of `file`, to avoid reading it twice. */
  digest?: FileDigest;
  /** Called for every part actually sent (tests count them). */
  onPartSent?: (partNumber: number) => void;
  contentType?: string;
}

export interface UploadOutcome {
  key: string;
  status: 'unchanged' | 'uploaded';
  sizeBytes: number;
  sha256: string;
  bytesSent: number;
  partsSent: number;
  partsReused: number;
}

interface UploadState {
  bucket: string;
  key: string;
  uploadId: string;
  sha256: string;
  size: number;
  partSize: number;
}

const DEFAULT_PART = 16 * 1024 * 1024;
const MIN_PART = 5 * 1024 * 1024;

function statePath(dir: string, bucket: string, key: string): string {
  return path.join(dir, `${bucket}__${key}.upload.json`);
}

function readState(file: string): UploadState | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as UploadState;
  } catch {
    return undefined;
  }
}

function writeState(file: string, state: UploadState): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(state));
  fs.renameSync(`${file}.tmp`, file);
}

/** The object's stored sha256 and size, or null when there is no object. */
export async function remoteIdentity(client: S3Client, config: S3Config, key: string): Promise<{ sha256?: string; size: number } | null> {
  try {
    const head = await client.send(new HeadObjectCommand({ Bucket: config.bucket, Key: key }));
    return { sha256: head.Metadata?.sha256, size: head.ContentLength ?? -1 };
  } catch (err) {
    const e = describeError(err, config, key);
    if (/does not exist$/.test(e.message) && !/^bucket/.test(e.message)) return null;
    throw e;
  }
}

/**
 * Uploads one file unless the object already holds the same content (its stored sha256).
 * Large files go multipart: parts in parallel with bounded memory, each with its CRC32, and the
 * full-object CRC32 on completion, which S3 checks. When the upload is cut off by a transient
 * failure or by the process dying, its ID stays in `stateDir` and the next run sends only the
 * parts S3 does not already have; any other failure aborts it, leaving no parts behind.
 */
export async function uploadFile(opts: UploadOptions): Promise<UploadOutcome> {
  const { client, config, key, file } = opts;
  const progress = opts.progress ?? silentProgress;
  const digest = opts.digest ?? (await digestFile(file));
  const base = { key, sizeBytes: digest.size, sha256: digest.sha256 };
  const remote = await remoteIdentity(client, config, key);
  if (remote && remote.sha256 === digest.sha256 && remote.size === digest.size) {
    progress.finish(key, 'unchanged');
    return { ...base, status: 'unchanged', bytesSent: 0, partsSent: 0, partsReused: 0 };
  }
  const partSize = Math.max(MIN_PART, opts.partSizeBytes ?? DEFAULT_PART);
  progress.start(key, digest.size);
  const outcome =
    digest.size <= partSize
      ? await putSmall(opts, digest)
      : await multipart(opts, digest, partSize, progress);
  progress.finish(key, `uploaded ${outcome.partsSent} part(s)${outcome.partsReused ? `, ${outcome.partsReused} already stored` : ''}`);
  return { ...base, status: 'uploaded', ...outcome };
}

async function putSmall(opts: UploadOptions, digest: FileDigest) {
  const body = await fs.promises.readFile(opts.file);
  try {
    await opts.client.send(
      new PutObjectCommand({
        Bucket: opts.config.bucket,
        Key: opts.key,
        Body: body,
        ContentLength: body.length,
        ChecksumCRC32: digest.crc32,
        Metadata: { sha256: digest.sha256 },
        ContentType: opts.contentType ?? 'application/octet-stream',
      }),
    );
  } catch (err) {
    throw describeError(err, opts.config, opts.key);
  }
  opts.progress?.advance(opts.key, body.length);
  opts.onPartSent?.(1);
  return { bytesSent: body.length, partsSent: 1, partsReused: 0 };
}

async function multipart(opts: UploadOptions, digest: FileDigest, partSize: number, progress: TransferProgress) {
  const { client, config, key } = opts;
  const Bucket = config.bucket;
  const stateFile = statePath(opts.stateDir, Bucket, key);
  const partCount = Math.ceil(digest.size / partSize);
  let state = readState(stateFile);
  const stored = new Map<number, { ETag: string; ChecksumCRC32?: string; Size: number }>();

  if (state && (state.bucket !== Bucket || state.key !== key || state.sha256 !== digest.sha256 || state.size !== digest.size || state.partSize !== partSize)) {
    // Left by an upload of other content: it can never complete.
    await client.send(new AbortMultipartUploadCommand({ Bucket, Key: key, UploadId: state.uploadId })).catch(() => undefined);
    state = undefined;
  }
  if (state) {
    try {
      let marker: string | undefined;
      do {
        const page = await client.send(new ListPartsCommand({ Bucket, Key: key, UploadId: state.uploadId, PartNumberMarker: marker }));
        for (const p of page.Parts ?? []) stored.set(p.PartNumber!, { ETag: p.ETag!, ChecksumCRC32: p.ChecksumCRC32, Size: p.Size ?? 0 });
        marker = page.IsTruncated ? page.NextPartNumberMarker : undefined;
      } while (marker);
    } catch (err) {
      if ((err as { name?: string }).name !== 'NoSuchUpload') throw describeError(err, config, key);
      state = undefined;
      stored.clear();
    }
  }
  if (!state) {
    try {
      const created = await client.send(
        new CreateMultipartUploadCommand({
          Bucket,
          Key: key,
          ChecksumAlgorithm: 'CRC32',
          ChecksumType: 'FULL_OBJECT',
          Metadata: { sha256: digest.sha256 },
          ContentType: opts.contentType ?? 'application/octet-stream',
        }),
      );
      state = { bucket: Bucket, key, uploadId: created.UploadId!, sha256: digest.sha256, size: digest.size, partSize };
      writeState(stateFile, state);
    } catch (err) {
      throw describeError(err, config, key);
    }
  }
  const uploadId = state.uploadId;
  const parts: Array<{ PartNumber: number; ETag: string; ChecksumCRC32: string }> = [];
  let bytesSent = 0;
  let partsSent = 0;
  let partsReused = 0;
  const fd = await fs.promises.open(opts.file, 'r');
  try {
    let next = 1;
    const worker = async () => {
      while (next <= partCount) {
        const n = next++;
        const offset = (n - 1) * partSize;
        const length = Math.min(partSize, digest.size - offset);
        const buf = Buffer.allocUnsafe(length);
        const { bytesRead } = await fd.read(buf, 0, length, offset);
        if (bytesRead !== length) throw new StoreError(`${opts.file} changed while it was uploaded`, false);
        const crc = crc32Base64(zlib.crc32(buf));
        const have = stored.get(n);
        if (have && have.Size === length && have.ChecksumCRC32 === crc) {
          parts.push({ PartNumber: n, ETag: have.ETag, ChecksumCRC32: crc });
          partsReused++;
          progress.advance(key, length);
          continue;
        }
        const res = await client.send(
          new UploadPartCommand({ Bucket, Key: key, UploadId: uploadId, PartNumber: n, Body: buf, ContentLength: length, ChecksumCRC32: crc }),
        );
        parts.push({ PartNumber: n, ETag: res.ETag!, ChecksumCRC32: crc });
        bytesSent += length;
        partsSent++;
        opts.onPartSent?.(n);
        progress.advance(key, length);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, opts.concurrency ?? 4) }, worker));
    parts.sort((a, b) => a.PartNumber - b.PartNumber);
    await client.send(
      new CompleteMultipartUploadCommand({
        Bucket,
        Key: key,
        UploadId: uploadId,
        MultipartUpload: { Parts: parts },
        ChecksumCRC32: digest.crc32,
        ChecksumType: 'FULL_OBJECT',
      }),
    );
  } catch (err) {
    const failure = describeError(err, config, key);
    if (failure.transient) {
      throw new StoreError(`${failure.message}; run the upload again to resume it from the parts already stored`, true, err);
    }
    await client.send(new AbortMultipartUploadCommand({ Bucket, Key: key, UploadId: uploadId })).catch(() => undefined);
    fs.rmSync(stateFile, { force: true });
    throw failure;
  } finally {
    await fd.close();
  }
  fs.rmSync(stateFile, { force: true });
  return { bytesSent, partsSent, partsReused };
}

/** Aborts every incomplete multipart upload in the bucket (and forgets their local state). */
export async function abortIncompleteUploads(client: S3Client, config: S3Config, stateDir?: string): Promise<number> {
  let aborted = 0;
  try {
    for (;;) {
      const page = await client.send(new ListMultipartUploadsCommand({ Bucket: config.bucket }));
      const uploads = page.Uploads ?? [];
      for (const u of uploads) {
        await client.send(new AbortMultipartUploadCommand({ Bucket: config.bucket, Key: u.Key!, UploadId: u.UploadId! }));
        if (stateDir) fs.rmSync(statePath(stateDir, config.bucket, u.Key!), { force: true });
        aborted++;
      }
      if (!page.IsTruncated || !uploads.length) break;
    }
  } catch (err) {
    throw describeError(err, config);
  }
  return aborted;
}
