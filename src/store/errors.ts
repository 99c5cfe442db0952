import type { S3Config } from '../config/schema';

export type StoreErrorKind =
  | 'credentials'
  | 'bad-credentials'
  | 'no-bucket'
  | 'not-found'
  | 'access-denied'
  | 'wrong-region'
  | 'unreachable'
  | 'server'
  | 'checksum'
  | 'invalid-input'
  | 'interrupted'
  | 'other';

/**
 * A store failure told in one plain sentence that names the bucket and key (`userMessage`, also
 * the `message`); the SDK's error, with its stack and request IDs, stays in `cause` for debugging.
 * `transient` failures (network, throttling, 5xx) may succeed when tried again.
 */
export class StoreError extends Error {
  readonly userMessage: string;
  readonly kind: StoreErrorKind;
  readonly transient: boolean;
  readonly bucket?: string;
  readonly key?: string;

  constructor(
    kind: StoreErrorKind,
    userMessage: string,
    opts: { bucket?: string; key?: string; transient?: boolean; cause?: unknown } = {},
  ) {
    super(userMessage, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'StoreError';
    this.kind = kind;
    this.userMessage = userMessage;
    this.transient = opts.transient ?? false;
    this.bucket = opts.bucket;
    this.key = opts.key;
  }
}

/** What was being done, for the sentence: "Cannot <verb> s3://bucket/key: <reason>." */
export interface S3Operation {
  config: S3Config;
  key?: string;
  verb: string;
  /** The IAM action the request needs, named when access is denied. */
  action: string;
}

/** Failures to connect at all, and connections that broke midway. */
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
]);
const BROKEN_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE', 'UND_ERR_SOCKET']);

interface SdkErrorShape {
  name?: string;
  code?: string;
  message?: string;
  Region?: string;
  $metadata?: { httpStatusCode?: number };
  cause?: { code?: string };
}

export function where(config: S3Config, key?: string): string {
  return key ? `s3://${config.bucket}/${key}` : `s3://${config.bucket}`;
}

/** A connection that was made and then broke (reset, closed early), as opposed to one never made. */
export function brokeMidway(err: StoreError): boolean {
  const code = networkCode(err.cause);
  return err.kind === 'unreachable' && code !== undefined && BROKEN_CODES.has(code);
}

/** The network error code of a failed request, if it failed below HTTP. */
export function networkCode(err: unknown): string | undefined {
  const e = err as SdkErrorShape;
  const code = e?.code ?? e?.cause?.code;
  if (code && (UNREACHABLE_CODES.has(code) || BROKEN_CODES.has(code))) return code;
  if (e?.name === 'TimeoutError' || e?.name === 'RequestTimeout') return 'ETIMEDOUT';
  return undefined;
}

/**
 * Turns an SDK or network error into a StoreError. Responses to HEAD have no body, so S3 cannot
 * say why they failed; callers re-ask with a listing first (see `statObject`) to get a code here.
 */
export function describeS3Error(err: unknown, op: S3Operation): StoreError {
  if (err instanceof StoreError) return err;
  const e = (err ?? {}) as SdkErrorShape;
  const { config, key } = op;
  const at = where(config, key);
  const make = (kind: StoreErrorKind, reason: string, transient = false) =>
    new StoreError(kind, `Cannot ${op.verb} ${at}: ${reason}.`, { bucket: config.bucket, key, transient, cause: err });
  const name = e.name ?? '';
  const status = e.$metadata?.httpStatusCode;
  const endpoint = config.endpoint ?? `the AWS S3 endpoint for ${config.region}`;

  if (name === 'AbortError') return make('interrupted', 'the transfer was interrupted');
  if (name === 'CredentialsProviderError' || /could not load credentials/i.test(e.message ?? '')) {
    return make(
      'credentials',
      'no AWS credentials were found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or use an instance role)',
    );
  }
  const net = networkCode(err);
  if (net)
    return make(
      'unreachable',
      UNREACHABLE_CODES.has(net)
        ? `${endpoint} is unreachable (${net})`
        : `the connection to ${endpoint} broke (${net})`,
      true,
    );
  if (name === 'NoSuchBucket')
    return make('no-bucket', `bucket ${config.bucket} does not exist in region ${config.region}`);
  if (
    name === 'InvalidAccessKeyId' ||
    name === 'SignatureDoesNotMatch' ||
    name === 'InvalidToken' ||
    name === 'ExpiredToken'
  ) {
    return make('bad-credentials', `the AWS credentials were refused (${name})`);
  }
  if (
    name === 'PermanentRedirect' ||
    name === 'AuthorizationHeaderMalformed' ||
    name === 'IllegalLocationConstraintException' ||
    status === 301
  ) {
    const actual = e.Region && e.Region !== config.region ? ` (it is in ${e.Region})` : '';
    return make('wrong-region', `the bucket is not in region ${config.region}${actual}; set s3.region or S3_REGION`);
  }
  if (name === 'AccessDenied' || name === 'AllAccessDisabled' || status === 403) {
    return make('access-denied', `access denied (the credentials' policy must allow ${op.action})`);
  }
  if (name === 'NoSuchKey' || name === 'NotFound' || name === 'NoSuchUpload' || status === 404) {
    return make('not-found', name === 'NoSuchUpload' ? 'the multipart upload no longer exists' : 'it does not exist');
  }
  if (name === 'PreconditionFailed' || status === 412)
    return make('other', 'the object changed while it was being read; run the sync again');
  if (name === 'XAmzContentChecksumMismatch' || name === 'BadDigest' || name === 'InvalidPart') {
    return make('checksum', `the server's checksum did not match the data sent (${name})`);
  }
  if (status !== undefined && (status >= 500 || status === 429 || name === 'SlowDown')) {
    return make('server', `the S3 server failed (${status}${name && name !== 'Unknown' ? ` ${name}` : ''})`, true);
  }
  const detail = (e.message ?? '').split('\n')[0]!.slice(0, 200);
  return make(
    'other',
    `${name && name !== 'Unknown' ? name : `HTTP ${status ?? 'error'}`}${detail && detail !== 'UnknownError' ? ` (${detail})` : ''}`,
  );
}
