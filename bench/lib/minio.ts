import { spawn, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import { z } from 'zod';
import type { S3Config } from '../../src/config';
import type { Credentials } from '../../src/store';
import { createClient } from '../../src/store';
import { requireTool } from '../../src/setup/tools';
import { freeLoopbackPort } from '../../src/util/net';

/**
 * A private MinIO for one bench run: free loopback ports, its data in `dir`, root credentials
 * generated for this run and handed over through environments only (MinIO's, and the clients'
 * via `clientEnv`), never on a command line or in the output. Started the way the test bed's
 * (test/support/s3.ts) is; stopped by `stop()` or, at the latest, when this process exits.
 */
export interface BenchS3 {
  endpoint: string;
  region: string;
  credentials: Credentials;
  /** The bucket config the project's store functions take. */
  config(bucket: string): S3Config;
  /** A client of the project's own kind (createClient), with the root credentials. */
  client(bucket: string): S3Client;
  /** AWS_* variables through which aws and s5cmd find the server's credentials. */
  clientEnv(): Record<string, string>;
  createBucket(bucket: string): Promise<void>;
  /** Deletes every object of the bucket, then the bucket: the bench's disk stays bounded. */
  removeBucket(bucket: string): Promise<void>;
  stop(): Promise<void>;
}

const REGION = 'us-east-1';
/** S3's bucket naming rules, as far as the bench's generated names need them. */
export const BucketName = z.string().regex(/^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/);

export async function startMinio(dir: string): Promise<BenchS3> {
  const minio = requireTool('minio');
  const port = await freeLoopbackPort();
  const consolePort = await freeLoopbackPort();
  const endpoint = `http://127.0.0.1:${port}`;
  const credentials = {
    accessKeyId: `bench${crypto.randomBytes(6).toString('hex')}`,
    secretAccessKey: crypto.randomBytes(24).toString('base64url'),
  };
  fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
  const logFile = path.join(dir, 'minio.log');
  const out = fs.openSync(logFile, 'a');
  const child: ChildProcess = spawn(
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
        MINIO_SITE_REGION: REGION,
        MINIO_BROWSER: 'off',
        MINIO_UPDATE: 'off',
      },
      stdio: ['ignore', out, out],
    },
  );
  fs.closeSync(out);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const alive = () => child.exitCode === null && child.signalCode === null;
  const logTail = () => fs.readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-10).join('\n');

  const stop = async () => {
    process.removeListener('exit', killOnExit);
    if (!alive()) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };

  const deadline = Date.now() + 60_000;
  for (;;) {
    if (!alive()) throw new Error(`MinIO exited at start; its log ends:\n${logTail()}`);
    if (
      await fetch(`${endpoint}/minio/health/ready`).then(
        (r) => r.ok,
        () => false,
      )
    )
      break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`MinIO did not answer on ${endpoint} within 60 s; its log ends:\n${logTail()}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }

  const config = (bucket: string): S3Config => ({
    bucket: BucketName.parse(bucket),
    region: REGION,
    endpoint,
    forcePathStyle: true,
  });
  const client = (bucket: string) => createClient({ config: config(bucket), credentials });
  const withClient = async (bucket: string, fn: (c: S3Client) => Promise<void>) => {
    const c = client(bucket);
    try {
      await fn(c);
    } finally {
      c.destroy();
    }
  };

  return {
    endpoint,
    region: REGION,
    credentials,
    config,
    client,
    clientEnv: () => ({
      AWS_ACCESS_KEY_ID: credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
      AWS_REGION: REGION,
      AWS_DEFAULT_REGION: REGION,
    }),
    createBucket: (bucket) =>
      withClient(bucket, async (c) => {
        await c.send(new CreateBucketCommand({ Bucket: BucketName.parse(bucket) }));
      }),
    removeBucket: (bucket) =>
      withClient(bucket, async (c) => {
        for (;;) {
          const page = await c.send(new ListObjectsV2Command({ Bucket: bucket, MaxKeys: 1000 }));
          const keys = (page.Contents ?? []).map((o) => ({ Key: o.Key! }));
          if (!keys.length) break;
          await c.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }));
        }
        await c.send(new DeleteBucketCommand({ Bucket: bucket }));
      }),
    stop,
  };
}
