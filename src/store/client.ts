import { HeadObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import type { S3Config } from '../config/schema';
import { describeS3Error, StoreError, type S3Operation } from './errors';
import type { ProgressSink } from './progress';

export interface Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface CreateClientOptions {
  config: S3Config;
  /** Explicit credentials; by default the SDK's chain (environment, AWS_PROFILE, instance role). */
  credentials?: Credentials;
  /** Attempts per request, the SDK's own retry with backoff (default 3). */
  maxAttempts?: number;
}

export function createClient(opts: CreateClientOptions): S3Client {
  const { config } = opts;
  return new S3Client({
    region: config.region,
    endpoint: config.endpoint,
    forcePathStyle: config.forcePathStyle,
    credentials: opts.credentials,
    maxAttempts: opts.maxAttempts ?? 3,
    // Upload checksums are computed here (a CRC32 per part and one for the whole object, which
    // S3 checks on completion) and downloads are verified against the manifest's sha256, so
    // the SDK's own per-request CRC32 (and its aws-chunked bodies) would only add work.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

export interface RetryPolicy {
  /** Tries in all, on top of the SDK's own attempts per request. */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 3, baseDelayMs: 1000, maxDelayMs: 10_000 };

/** The bucket, its client and the workspace: the first argument of every store operation. */
export interface StoreContext {
  client: S3Client;
  config: S3Config;
  /** Holds `vmlinux` and `images/`; see layout.ts. */
  workspace: string;
  /** Where transfers longer than a second report; see `terminalProgress`. */
  progress?: ProgressSink;
  /** Part size for new multipart uploads (a resumed one keeps its own); default 16 MiB. */
  partSizeBytes?: number;
  /** Parts in flight at once; default 4. Memory is about this many parts. */
  concurrency?: number;
  /** Retries after a transient failure (of a part, a file), on top of the SDK's own. */
  retry?: RetryPolicy;
  /** Stops transfers; an interrupted upload stays resumable. */
  signal?: AbortSignal;
  /** Called for every part actually sent (a small file is one part). */
  onPartSent?: (key: string, partNumber: number) => void;
  /** The block store fetcher binary, published beside the block store for bootstrap scripts (when present). */
  fetcher?: string;
}

/** What requests need: the bucket and its client. */
export type S3Access = Pick<StoreContext, 'client' | 'config'> & Partial<Pick<StoreContext, 'signal'>>;

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

/** Runs `fn` again after a transient StoreError, with exponential backoff and full jitter. */
export async function withRetry<T>(
  fn: () => Promise<T>,
  policy: RetryPolicy = DEFAULT_RETRY,
  signal?: AbortSignal,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof StoreError) || !err.transient || attempt >= policy.attempts || signal?.aborted) throw err;
      await sleep(Math.random() * Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1)), signal);
    }
  }
}

/** Sends one request, turning any failure into a StoreError that names the bucket and key. */
export async function send<T>(
  target: S3Access,
  op: Omit<S3Operation, 'config'>,
  fn: (client: S3Client) => Promise<T>,
): Promise<T> {
  try {
    return await fn(target.client);
  } catch (err) {
    throw describeS3Error(err, { config: target.config, ...op });
  }
}

export interface ObjectStat {
  sizeBytes: number;
  etag?: string;
  lastModified?: Date;
  /** The full-object CRC32 S3 checked, when the object has one (not a composite of parts). */
  crc32?: string;
  /** The sha256 recorded in the object's metadata by the uploader. */
  sha256?: string;
}

/**
 * HEAD of one object, or null when it does not exist. A failed HEAD says only its status code,
 * so on any other failure one listing call is made to learn (and report) the actual reason.
 */
export async function statObject(target: S3Access, key: string): Promise<ObjectStat | null> {
  const { config, client, signal } = target;
  try {
    const head = await client.send(
      new HeadObjectCommand({ Bucket: config.bucket, Key: key, ChecksumMode: 'ENABLED' }),
      { abortSignal: signal },
    );
    const crc = head.ChecksumCRC32;
    return {
      sizeBytes: head.ContentLength ?? 0,
      etag: head.ETag,
      lastModified: head.LastModified,
      crc32: crc && head.ChecksumType !== 'COMPOSITE' && !crc.includes('-') ? crc : undefined,
      sha256: head.Metadata?.sha256,
    };
  } catch (err) {
    const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    const op = { config, key, verb: 'check', action: 's3:GetObject' };
    if (status === undefined) throw describeS3Error(err, op);
    try {
      await client.send(new ListObjectsV2Command({ Bucket: config.bucket, Prefix: key, MaxKeys: 1 }), {
        abortSignal: signal,
      });
    } catch (listErr) {
      throw describeS3Error(listErr, { ...op, action: 's3:ListBucket' });
    }
    if (status === 404) return null;
    throw describeS3Error(err, op);
  }
}
