import { S3Client } from '@aws-sdk/client-s3';
import type { S3Config } from '../config/schema';

/**
 * An S3 failure said in one plain sentence naming the bucket and key. `transient` failures
 * (network, throttling, 5xx) may succeed when tried again; the rest need the operator.
 */
export class StoreError extends Error {
  constructor(
    message: string,
    readonly transient: boolean,
    override readonly cause?: unknown,
  ) {
    super(message);
    this.name = 'StoreError';
  }
}

export interface StoreOptions {
  config: S3Config;
  /** Explicit credentials (tests); by default the AWS SDK's own chain (env, profile, instance role). */
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

export function createClient({ config, credentials }: StoreOptions): S3Client {
  return new S3Client({
    region: config.region,
    endpoint: config.endpoint,
    forcePathStyle: config.forcePathStyle || !!config.endpoint,
    credentials,
    maxAttempts: 5,
    // Checksums are computed and sent by this module (full-object CRC32), not per request by default.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

const where = (bucket: string, key?: string) => (key ? `s3://${bucket}/${key}` : `bucket ${bucket}`);

/** Turns an SDK or network error into a StoreError with one plain sentence. */
export function describeError(err: unknown, config: S3Config, key?: string): StoreError {
  if (err instanceof StoreError) return err;
  const e = err as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number }; Code?: string };
  const name = e.name ?? e.Code ?? '';
  const status = e.$metadata?.httpStatusCode;
  const code = e.code ?? (e as { cause?: { code?: string } }).cause?.code ?? '';
  const at = where(config.bucket, key);
  if (name === 'CredentialsProviderError' || /Could not load credentials/i.test(e.message ?? '')) {
    return new StoreError(`no AWS credentials found for ${at}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE`, false, err);
  }
  if (name === 'NoSuchBucket') return new StoreError(`bucket ${config.bucket} does not exist (region ${config.region})`, false, err);
  if (name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch') {
    return new StoreError(`the AWS credentials were refused for ${at} (${name})`, false, err);
  }
  if (name === 'AccessDenied' || status === 403) return new StoreError(`access denied to ${at}`, false, err);
  if (name === 'PermanentRedirect' || name === 'AuthorizationHeaderMalformed' || status === 301) {
    return new StoreError(`bucket ${config.bucket} is not in region ${config.region}: set s3.region (or S3_REGION) to the bucket's region`, false, err);
  }
  if (name === 'NoSuchKey' || name === 'NotFound' || status === 404) return new StoreError(`${at} does not exist`, false, err);
  if (['ECONNREFUSED', 'ENOTFOUND', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN'].includes(code) || name === 'TimeoutError') {
    return new StoreError(`cannot reach the S3 endpoint ${config.endpoint ?? `for region ${config.region}`} for ${at} (${code || name})`, true, err);
  }
  if (status !== undefined && (status >= 500 || status === 429)) {
    return new StoreError(`the S3 server failed for ${at} (${status} ${name})`, true, err);
  }
  return new StoreError(`S3 request for ${at} failed: ${name || 'error'}${e.message ? `: ${e.message.split('\n')[0]}` : ''}`, false, err);
}
