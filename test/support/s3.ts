import * as crypto from 'node:crypto';
import * as path from 'node:path';
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  ListMultipartUploadsCommand,
  ListObjectVersionsCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import type { S3Config } from '../../src/config';
import { requireTool } from '../../src/setup/tools';
import { freePort, onSuiteCleanup, startServer, sharedTempDir, waitUntilReady, type ServerProcess } from './process';

/** Empties a test bucket (every version, every unfinished upload) and deletes it: the server's disk stays bounded. */
async function removeBucket(c: S3Client, bucket: string): Promise<void> {
  // Bounded: a version that cannot be deleted must not keep this (and the run) going round.
  for (let page = 0; page < 100; page++) {
    const listed = await c.send(new ListObjectVersionsCommand({ Bucket: bucket, MaxKeys: 1000 }));
    const objects = [...(listed.Versions ?? []), ...(listed.DeleteMarkers ?? [])].map((v) => ({
      Key: v.Key!,
      VersionId: v.VersionId,
    }));
    if (!objects.length) break;
    const res = await c.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: objects, Quiet: true } }));
    if (res.Errors?.length)
      throw new Error(`cannot delete ${res.Errors[0]!.Key}: ${res.Errors[0]!.Code} ${res.Errors[0]!.Message}`);
  }
  const uploads = await c.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
  for (const u of uploads.Uploads ?? [])
    await c.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key!, UploadId: u.UploadId! }));
  await c.send(new DeleteBucketCommand({ Bucket: bucket }));
}

/**
 * A real MinIO on free loopback ports, its data in a temp dir, with root credentials generated
 * for this run (given to MinIO through its environment, never printed). It can be stopped and
 * started again on the same port and data, to test what a transfer does when the server dies.
 */
export interface TestCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface TestS3 {
  endpoint: string;
  /** Credentials that may use every bucket of the server (its root user's). */
  credentials: TestCredentials;
  /** The environment through which the AWS SDK (or curl, or a child process) finds `credentials`. */
  env: Record<string, string>;
  /** The same for other credentials, e.g. from `restrictedCredentials`. */
  envFor(credentials: TestCredentials): Record<string, string>;
  /** A new, empty bucket and the config that points at it; use it with `credentials`. */
  freshBucket(): Promise<S3Config>;
  /** A client for `config` (by default the server's root credentials). */
  client(config?: S3Config, credentials?: TestCredentials): S3Client;
  /** A client for `config` whose every request (retries included) is counted. */
  countingClient(
    config: S3Config,
    credentials?: TestCredentials,
    maxAttempts?: number,
  ): { client: S3Client; requests: () => number };
  /** Temporary credentials limited to `policy` (STS AssumeRole with a session policy). */
  restrictedCredentials(policy: object): Promise<TestCredentials>;
  stop(): Promise<void>;
  start(): Promise<void>;
  running(): boolean;
}

const REGION = 'us-east-1';

const hmac = (key: crypto.BinaryLike, data: string) => crypto.createHmac('sha256', key).update(data).digest();
const sha256Hex = (data: string) => crypto.createHash('sha256').update(data).digest('hex');

/** A SigV4-signed form POST (what STS takes); small enough to write out rather than depend on a signer package. */
async function signedFormPost(
  endpoint: string,
  service: string,
  creds: TestCredentials,
  form: Record<string, string>,
): Promise<string> {
  const url = new URL(endpoint);
  const body = new URLSearchParams(form).toString();
  const amzDate = new Date().toISOString().replace(/[-:]|\.\d{3}/g, '');
  const day = amzDate.slice(0, 8);
  const headers: Record<string, string> = {
    'content-type': 'application/x-www-form-urlencoded; charset=utf-8',
    host: url.host,
    'x-amz-content-sha256': sha256Hex(body),
    'x-amz-date': amzDate,
  };
  const names = Object.keys(headers).sort();
  const canonical = [
    'POST',
    '/',
    '',
    ...names.map((n) => `${n}:${headers[n]}`),
    '',
    names.join(';'),
    headers['x-amz-content-sha256'],
  ].join('\n');
  const scope = `${day}/${REGION}/${service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256Hex(canonical)].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${creds.secretAccessKey}`, day), REGION), service), 'aws4_request');
  const signature = crypto.createHmac('sha256', key).update(toSign).digest('hex');
  const { host: _host, ...sent } = headers;
  const res = await fetch(`${url.origin}/`, {
    method: 'POST',
    headers: {
      ...sent,
      authorization: `AWS4-HMAC-SHA256 Credential=${creds.accessKeyId}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`,
    },
    body,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${service} request failed: ${res.status} ${text.slice(0, 300)}`);
  return text;
}

async function startS3(): Promise<TestS3> {
  const minio = requireTool('minio');
  const dir = sharedTempDir('s3');
  const port = await freePort();
  const consolePort = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const credentials = {
    accessKeyId: `root${crypto.randomBytes(6).toString('hex')}`,
    secretAccessKey: crypto.randomBytes(24).toString('base64url'),
  };
  let server: ServerProcess | undefined;

  const running = () => !!server && server.child.exitCode === null && server.child.signalCode === null;
  const start = async () => {
    if (running()) return;
    server = startServer(
      minio,
      [
        'server',
        path.join(dir, 'data'),
        '--address',
        `127.0.0.1:${port}`,
        '--console-address',
        `127.0.0.1:${consolePort}`,
        '--quiet',
      ],
      {
        env: {
          ...process.env,
          MINIO_ROOT_USER: credentials.accessKeyId,
          MINIO_ROOT_PASSWORD: credentials.secretAccessKey,
          // A region of its own, so that a client signing for another one is refused as on AWS.
          MINIO_SITE_REGION: REGION,
          MINIO_BROWSER: 'off',
          MINIO_UPDATE: 'off',
        },
        logFile: path.join(dir, 'minio.log'),
      },
    );
    await waitUntilReady(server, 'minio', async () => (await fetch(`${endpoint}/minio/health/ready`)).ok);
  };
  await start();

  const clientFor = (config: S3Config, creds: TestCredentials = credentials, maxAttempts = 3) =>
    new S3Client({
      endpoint: config.endpoint ?? endpoint,
      region: config.region,
      forcePathStyle: true,
      credentials: creds,
      maxAttempts,
    });
  const envFor = (creds: TestCredentials) => ({
    AWS_ACCESS_KEY_ID: creds.accessKeyId,
    AWS_SECRET_ACCESS_KEY: creds.secretAccessKey,
    ...(creds.sessionToken ? { AWS_SESSION_TOKEN: creds.sessionToken } : {}),
    AWS_REGION: REGION,
  });

  return {
    endpoint,
    credentials,
    env: envFor(credentials),
    envFor,
    async freshBucket() {
      const bucket = `test-${crypto.randomBytes(5).toString('hex')}`;
      const config: S3Config = { bucket, region: REGION, endpoint, forcePathStyle: true };
      const c = clientFor(config);
      await c.send(new CreateBucketCommand({ Bucket: bucket }));
      c.destroy();
      onSuiteCleanup(async () => {
        // One try per request: a server that a test stopped is not waited for.
        const admin = clientFor(config, credentials, 1);
        try {
          await removeBucket(admin, bucket);
        } catch (err) {
          // A server stopped by its test, or a bucket it removed itself: nothing to keep bounded.
          if (!/ECONNREFUSED|NoSuchBucket/.test(String((err as Error).name) + String((err as Error).message)))
            console.error(`test bed: could not remove bucket ${bucket}:`, (err as Error).message);
        } finally {
          admin.destroy();
        }
      });
      return config;
    },
    client: (config = { bucket: 'unused', region: REGION, endpoint, forcePathStyle: true }, creds = credentials) =>
      clientFor(config, creds),
    countingClient(config, creds = credentials, maxAttempts = 3) {
      let n = 0;
      const client = clientFor(config, creds, maxAttempts);
      // The finalize step runs once per attempt, so retries count too.
      client.middlewareStack.add(
        (next) => async (args) => {
          n++;
          return next(args);
        },
        { step: 'finalizeRequest', name: 'countRequests' },
      );
      return { client, requests: () => n };
    },
    async restrictedCredentials(policy) {
      const xml = await signedFormPost(endpoint, 'sts', credentials, {
        Action: 'AssumeRole',
        Version: '2011-06-15',
        DurationSeconds: '3600',
        Policy: JSON.stringify(policy),
      });
      const field = (name: string) => new RegExp(`<${name}>([^<]+)</${name}>`).exec(xml)?.[1] ?? '';
      return {
        accessKeyId: field('AccessKeyId'),
        secretAccessKey: field('SecretAccessKey'),
        sessionToken: field('SessionToken'),
      };
    },
    start,
    stop: async () => server?.stop(),
    running,
  };
}

let shared: Promise<TestS3> | undefined;

/** The test run's S3 server, started on first use and stopped by the global teardown. */
export function testS3(): Promise<TestS3> {
  return (shared ??= startS3());
}
