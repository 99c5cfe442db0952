import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import type { S3Config } from '../../src/config';
import { requireTool } from '../../src/setup/tools';
import { freePort, startServer, tempDir, waitUntilReady, type ServerProcess } from './process';

/**
 * A real MinIO on free loopback ports with its data in a temp dir and credentials generated for
 * this run. It can be stopped and started again on the same port and data, to test what a
 * transfer does when the server goes away.
 */
export interface TestS3 {
  endpoint: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  /** Environment that lets the AWS SDK (or a child process) reach this server. */
  env: Record<string, string>;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** A new, empty bucket and the config that points at it. */
  freshBucket(): Promise<S3Config>;
  client(): S3Client;
}

async function startS3(): Promise<TestS3> {
  const minio = requireTool('minio');
  const dir = tempDir('s3');
  const port = await freePort();
  const consolePort = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const credentials = { accessKeyId: `test${crypto.randomBytes(6).toString('hex')}`, secretAccessKey: crypto.randomBytes(18).toString('hex') };
  const env = {
    AWS_ACCESS_KEY_ID: credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
    AWS_REGION: 'us-east-1',
  };
  let server: ServerProcess | undefined;
  const start = async () => {
    server = startServer(minio, ['server', path.join(dir, 'data'), '--address', `127.0.0.1:${port}`, '--console-address', `127.0.0.1:${consolePort}`, '--quiet'], {
      env: { ...process.env, MINIO_ROOT_USER: credentials.accessKeyId, MINIO_ROOT_PASSWORD: credentials.secretAccessKey, MINIO_BROWSER: 'off' },
      logFile: path.join(dir, 'minio.log'),
    });
    await waitUntilReady(server, 'minio', async () => (await fetch(`${endpoint}/minio/health/ready`)).ok);
  };
  await start();
  const client = () => new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials });
  return {
    endpoint,
    credentials,
    env,
    start,
    stop: async () => server?.stop(),
    client,
    async freshBucket() {
      const bucket = `test-${crypto.randomBytes(5).toString('hex')}`;
      const c = client();
      await c.send(new CreateBucketCommand({ Bucket: bucket }));
      c.destroy();
      return { bucket, region: 'us-east-1', endpoint, forcePathStyle: true };
    },
  };
}

let shared: Promise<TestS3> | undefined;

/** The test run's S3 server, started on first use and stopped by the global teardown. */
export function testS3(): Promise<TestS3> {
  return (shared ??= startS3());
}
