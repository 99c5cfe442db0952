import * as fs from 'node:fs';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { S3Config } from '../config/schema';
import { DEFAULT_RETRY, send, statObject, withRetry, type S3Access, type StoreContext } from './client';
import { crc32Of, type FileDigest } from './digest';
import { StoreError, where } from './errors';
import { IMAGE_KEY_PATTERN, isStoreKey, KERNEL_KEY } from './layout';
import { track } from './progress';
import { forgetState, readState, STATE_SUFFIX, statePath, writeState, type UploadState } from './upload-state';

/**
 * Sending one file to one key: a single PUT for small files, else a multipart upload of parts
 * sent in parallel (memory: `concurrency` part buffers), each with its CRC32, completed with the
 * full-object CRC32 that S3 checks. The upload ID and part size are kept in a small state file
 * (in `<workspace>/.uploads/`, see upload-state.ts) until the upload completes, so an upload cut off by a killed
 * process or an unreachable server resumes with the parts S3 already holds (ListParts) instead
 * of starting over. Any other failure aborts the upload, leaving no parts behind. No object
 * appears under the key until the upload completes, and then only with the checksum S3 verified.
 */

export const DEFAULT_PART_SIZE = 16 << 20;
export const MIN_PART_SIZE = 5 << 20;
const MAX_PARTS = 10_000;

/** What a transfer takes from the StoreContext. */
export type TransferContext = S3Access &
  Partial<Pick<StoreContext, 'progress' | 'partSizeBytes' | 'concurrency' | 'retry' | 'onPartSent'>>;

export interface PutFileOptions {
  key: string;
  file: string;
  digest: FileDigest & { crc32: string };
  metadata: Record<string, string>;
  /** Where the state of an unfinished multipart upload is kept. */
  stateDir: string;
  contentType?: string;
}

export interface PutFileResult {
  multipart: boolean;
  bytesSent: number;
  partsSent: number;
  /** Parts found already stored by an earlier, interrupted run. */
  partsReused: number;
}

export function choosePartSize(sizeBytes: number, requested = DEFAULT_PART_SIZE): number {
  const atLeast = Math.ceil(sizeBytes / MAX_PARTS);
  const size = Math.max(MIN_PART_SIZE, requested, atLeast);
  return Math.ceil(size / (1 << 20)) * (1 << 20);
}

const endpointOf = (config: S3Config) => config.endpoint ?? `aws:${config.region}`;

export async function putFile(target: TransferContext, opts: PutFileOptions): Promise<PutFileResult> {
  const { config } = target;
  const { digest } = opts;
  const partSize = choosePartSize(digest.sizeBytes, target.partSizeBytes);
  const stateFile = statePath(opts.stateDir, config.bucket, opts.key);
  let state = readState(stateFile);
  if (state && (state.endpoint !== endpointOf(config) || state.bucket !== config.bucket || state.key !== opts.key)) {
    // Another server's upload: its lifecycle rule or abortIncompleteUploads cleans it up there.
    state = undefined;
  } else if (state && (state.sha256 !== digest.sha256 || state.sizeBytes !== digest.sizeBytes)) {
    // An upload of older content of this file: it can never complete, so it is removed.
    await abortUpload(target, opts.key, state.uploadId).catch(() => undefined);
    forgetState(stateFile);
    state = undefined;
  }
  // A resumable upload of this very content is continued, whatever the part size is now.
  if (digest.sizeBytes <= partSize && !state) return putSmall(target, opts);
  return putMultipart(target, opts, partSize, stateFile, state);
}

async function putSmall(target: TransferContext, opts: PutFileOptions): Promise<PutFileResult> {
  const body = await fs.promises.readFile(opts.file);
  if (body.length !== opts.digest.sizeBytes || crc32Of(body) !== opts.digest.crc32) {
    throw new StoreError(
      'checksum',
      `Cannot upload ${where(target.config, opts.key)}: ${opts.file} changed while it was being uploaded.`,
      {
        bucket: target.config.bucket,
        key: opts.key,
      },
    );
  }
  const progress = track(target.progress, opts.key, 'upload', body.length);
  await withRetry(
    () =>
      send(target, { key: opts.key, verb: 'upload', action: 's3:PutObject' }, (c) =>
        c.send(
          new PutObjectCommand({
            Bucket: target.config.bucket,
            Key: opts.key,
            Body: body,
            ContentLength: body.length,
            ChecksumCRC32: opts.digest.crc32,
            Metadata: opts.metadata,
            ContentType: opts.contentType ?? 'application/octet-stream',
          }),
          { abortSignal: target.signal },
        ),
      ),
    target.retry ?? DEFAULT_RETRY,
    target.signal,
  );
  progress.add(body.length);
  progress.end();
  target.onPartSent?.(opts.key, 1);
  return { multipart: false, bytesSent: body.length, partsSent: 1, partsReused: 0 };
}

interface StoredPart {
  size: number;
  etag: string;
  crc32?: string;
}

async function storedParts(target: S3Access, key: string, uploadId: string): Promise<Map<number, StoredPart>> {
  const parts = new Map<number, StoredPart>();
  let marker: string | undefined;
  do {
    const page = await send(target, { key, verb: 'resume the upload of', action: 's3:ListMultipartUploadParts' }, (c) =>
      c.send(
        new ListPartsCommand({ Bucket: target.config.bucket, Key: key, UploadId: uploadId, PartNumberMarker: marker }),
        { abortSignal: target.signal },
      ),
    );
    for (const p of page.Parts ?? [])
      parts.set(p.PartNumber!, { size: p.Size ?? -1, etag: p.ETag!, crc32: p.ChecksumCRC32 });
    marker = page.IsTruncated ? page.NextPartNumberMarker : undefined;
  } while (marker);
  return parts;
}

async function abortUpload(target: S3Access, key: string, uploadId: string): Promise<void> {
  await send(target, { key, verb: 'abort the upload of', action: 's3:AbortMultipartUpload' }, (c) =>
    c.send(new AbortMultipartUploadCommand({ Bucket: target.config.bucket, Key: key, UploadId: uploadId })),
  );
}

/** The error, its sentence extended by what became of the upload. */
function withOutcome(err: StoreError, outcome: string): StoreError {
  return new StoreError(err.kind, `${err.userMessage.replace(/\.$/, '')}; ${outcome}.`, {
    bucket: err.bucket,
    key: err.key,
    transient: err.transient,
    cause: err,
  });
}

async function putMultipart(
  target: TransferContext,
  opts: PutFileOptions,
  requestedPartSize: number,
  stateFile: string,
  previous: UploadState | undefined,
): Promise<PutFileResult> {
  const { config, signal } = target;
  const { key, file, digest } = opts;
  const Bucket = config.bucket;
  let state = previous;
  let stored = new Map<number, StoredPart>();
  if (state) {
    try {
      stored = await storedParts(target, key, state.uploadId);
    } catch (err) {
      if (!(err instanceof StoreError && err.kind === 'not-found')) throw err;
      state = undefined; // aborted meanwhile (abortIncomplete, a lifecycle rule)
    }
  }
  if (!state) {
    forgetState(stateFile);
    const created = await send(target, { key, verb: 'upload', action: 's3:PutObject' }, (c) =>
      c.send(
        new CreateMultipartUploadCommand({
          Bucket,
          Key: key,
          ChecksumAlgorithm: 'CRC32',
          ChecksumType: 'FULL_OBJECT',
          Metadata: opts.metadata,
          ContentType: opts.contentType ?? 'application/octet-stream',
        }),
        { abortSignal: signal },
      ),
    );
    state = {
      endpoint: endpointOf(config),
      bucket: Bucket,
      key,
      uploadId: created.UploadId!,
      partSizeBytes: requestedPartSize,
      sizeBytes: digest.sizeBytes,
      sha256: digest.sha256,
      crc32: digest.crc32,
      startedAt: new Date().toISOString(),
    };
    writeState(stateFile, state);
  }

  const { uploadId, partSizeBytes } = state;
  const partCount = Math.max(1, Math.ceil(digest.sizeBytes / partSizeBytes));
  const before = fs.statSync(file);
  const progress = track(target.progress, key, 'upload', digest.sizeBytes);
  const done: Array<{ PartNumber: number; ETag: string; ChecksumCRC32: string }> = [];
  const result: PutFileResult = { multipart: true, bytesSent: 0, partsSent: 0, partsReused: 0 };
  const fd = await fs.promises.open(file, 'r');
  let next = 1;
  let failure: unknown;

  const worker = async () => {
    let buffer: Buffer | undefined;
    while (failure === undefined && next <= partCount) {
      const n = next++;
      const offset = (n - 1) * partSizeBytes;
      const length = Math.min(partSizeBytes, digest.sizeBytes - offset);
      buffer ??= Buffer.allocUnsafe(Math.min(partSizeBytes, digest.sizeBytes));
      const body = buffer.subarray(0, length);
      const { bytesRead } = await fd.read(body, 0, length, offset);
      if (bytesRead !== length)
        throw new StoreError(
          'checksum',
          `Cannot upload ${where(config, key)}: ${file} changed while it was being uploaded.`,
          { bucket: Bucket, key },
        );
      const crc = crc32Of(body);
      const have = stored.get(n);
      if (have && have.size === length && have.crc32 === crc) {
        done.push({ PartNumber: n, ETag: have.etag, ChecksumCRC32: crc });
        result.partsReused++;
        progress.add(length);
        continue;
      }
      const sent = await withRetry(
        () =>
          send(target, { key, verb: 'upload', action: 's3:PutObject' }, (c) =>
            c.send(
              new UploadPartCommand({
                Bucket,
                Key: key,
                UploadId: uploadId,
                PartNumber: n,
                Body: body,
                ContentLength: length,
                ChecksumCRC32: crc,
              }),
              { abortSignal: signal },
            ),
          ),
        target.retry ?? DEFAULT_RETRY,
        signal,
      );
      done.push({ PartNumber: n, ETag: sent.ETag!, ChecksumCRC32: crc });
      result.partsSent++;
      result.bytesSent += length;
      progress.add(length);
      target.onPartSent?.(key, n);
    }
  };

  try {
    // The first failure stops every worker from taking another part.
    await Promise.all(
      Array.from({ length: Math.max(1, Math.min(target.concurrency ?? 4, partCount)) }, () =>
        worker().catch((err: unknown) => {
          failure ??= err;
        }),
      ),
    );
    if (failure !== undefined) throw failure;
    const after = fs.statSync(file);
    if (after.size !== before.size || after.mtimeMs !== before.mtimeMs) {
      throw new StoreError(
        'checksum',
        `Cannot upload ${where(config, key)}: ${file} changed while it was being uploaded.`,
        { bucket: Bucket, key },
      );
    }
    done.sort((a, b) => a.PartNumber - b.PartNumber);
    await withRetry(
      () =>
        send(target, { key, verb: 'upload', action: 's3:PutObject' }, (c) =>
          c.send(
            new CompleteMultipartUploadCommand({
              Bucket,
              Key: key,
              UploadId: uploadId,
              MultipartUpload: { Parts: done },
              ChecksumCRC32: digest.crc32,
              ChecksumType: 'FULL_OBJECT',
            }),
            { abortSignal: signal },
          ),
        ).catch(async (err: unknown) => {
          // A retried completion whose first try succeeded finds the upload gone and the object there.
          if (err instanceof StoreError && err.kind === 'not-found') {
            const stat = await statObject(target, key);
            if (stat && stat.crc32 === digest.crc32 && stat.sizeBytes === digest.sizeBytes) return;
          }
          throw err;
        }),
      target.retry ?? DEFAULT_RETRY,
      signal,
    );
  } catch (err) {
    const e =
      err instanceof StoreError
        ? err
        : new StoreError('other', `Cannot upload ${where(config, key)}: ${(err as Error).message}.`, {
            bucket: Bucket,
            key,
            cause: err,
          });
    if (e.kind === 'unreachable' || e.kind === 'interrupted') {
      // The process may live on (a server restart, a cancelled activity): keep the state to resume.
      throw withOutcome(
        e,
        `the ${result.partsSent + result.partsReused} part(s) stored so far are kept and the next upload resumes from them`,
      );
    }
    try {
      await abortUpload(target, key, uploadId);
      forgetState(stateFile);
    } catch {
      throw withOutcome(e, 'the incomplete upload could not be aborted; the next upload resumes or removes it');
    }
    throw withOutcome(e, 'the incomplete upload was aborted');
  } finally {
    await fd.close();
  }
  forgetState(stateFile);
  progress.end();
  return result;
}

/**
 * Aborts every incomplete multipart upload of this tool's keys in the bucket and forgets their
 * state in `stateDir` (`<workspace>/.uploads`) when given; returns how many were aborted.
 * Afterwards ListMultipartUploads lists none of them.
 *
 * MinIO answers a ListMultipartUploads without prefix from a cache that a restart empties, and
 * one with a prefix only for that exact key; so besides the bucket-wide listing, each key this
 * tool may have been uploading is asked for: the kernel, the images in the bucket, those with
 * resume state, and `keys` (e.g. the images of every configured language).
 */
export async function abortIncompleteUploads(
  client: S3Client,
  config: S3Config,
  stateDir?: string,
  opts: { keys?: readonly string[] } = {},
): Promise<number> {
  const target: S3Access = { client, config };
  const uploads = new Map<string, string>(); // upload ID -> key
  const collect = async (prefix?: string) => {
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      const page = await send(
        target,
        { key: prefix, verb: 'list the incomplete uploads of', action: 's3:ListBucketMultipartUploads' },
        (c) =>
          c.send(
            new ListMultipartUploadsCommand({
              Bucket: config.bucket,
              Prefix: prefix,
              KeyMarker: keyMarker,
              UploadIdMarker: uploadIdMarker,
            }),
          ),
      );
      for (const u of page.Uploads ?? []) {
        if (u.Key && u.UploadId && isStoreKey(u.Key) && (prefix === undefined || u.Key === prefix))
          uploads.set(u.UploadId, u.Key);
      }
      if (!page.IsTruncated) return;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
  };
  await collect();
  const keys = new Set<string>([KERNEL_KEY, ...(opts.keys ?? [])]);
  let token: string | undefined;
  do {
    const page = await send(target, { verb: 'list', action: 's3:ListBucket' }, (c) =>
      c.send(new ListObjectsV2Command({ Bucket: config.bucket, Prefix: 'rootfs-', ContinuationToken: token })),
    );
    for (const o of page.Contents ?? []) if (o.Key && IMAGE_KEY_PATTERN.test(o.Key)) keys.add(o.Key);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  const prefix = `${config.bucket}__`;
  if (stateDir && fs.existsSync(stateDir)) {
    for (const name of fs.readdirSync(stateDir)) {
      if (name.startsWith(prefix) && name.endsWith(STATE_SUFFIX))
        keys.add(name.slice(prefix.length, -STATE_SUFFIX.length));
    }
  }
  for (const key of keys) if (isStoreKey(key)) await collect(key);

  for (const [uploadId, key] of uploads) {
    await abortUpload(target, key, uploadId).catch((err: unknown) => {
      if (!(err instanceof StoreError && err.kind === 'not-found')) throw err;
    });
    if (stateDir) {
      const file = statePath(stateDir, config.bucket, key);
      if (readState(file)?.uploadId === uploadId) forgetState(file);
    }
  }
  return uploads.size;
}
