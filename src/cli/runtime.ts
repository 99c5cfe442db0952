import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { loadConfig, type LoadedConfig } from '../config';
import { DevStack, DEV_TEMPORAL } from '../dev/stack';
import { stateDir } from '../util/paths';

/**
 * Where a command finds Temporal and S3. With no cluster configured (the default address), the
 * embedded dev stack is started, or reused when it is provably ours; likewise a local S3
 * server when no S3 endpoint or AWS credentials are configured. What the embedded S3 needs
 * reaches the worker through the environment (S3_ENDPOINT and the AWS_* variables), never
 * through workflow data.
 */
export interface CliRuntime {
  loaded: LoadedConfig;
  configFile?: string;
  /** `--ssh NAME`: the SSH host of `sshHosts` the build runs on instead of `buildHost`. */
  sshHost?: string;
  address: string;
  namespace: string;
  uiUrl?: string;
  embedded: { temporal: boolean; s3: boolean };
}

export const devStack = () => new DevStack(stateDir());

function hasAwsCredentials(): boolean {
  const env = process.env;
  return !!(
    env.AWS_ACCESS_KEY_ID ||
    env.AWS_PROFILE ||
    env.AWS_WEB_IDENTITY_TOKEN_FILE ||
    env.AWS_CONTAINER_CREDENTIALS_FULL_URI ||
    fs.existsSync(path.join(os.homedir(), '.aws', 'credentials'))
  );
}

export async function resolveRuntime(
  configFile: string | undefined,
  opts: { needS3: boolean; log: (line: string) => void; sshHost?: string; stack?: DevStack },
): Promise<CliRuntime> {
  const { sshHost } = opts;
  const stack = opts.stack ?? devStack();
  let loaded = loadConfig({ file: configFile, sshHost });
  const { temporal, s3 } = loaded.config;
  const embedded = { temporal: false, s3: false };
  let uiUrl: string | undefined;
  const defaultAddress = `${DEV_TEMPORAL.host}:${stack.ports.temporal}`;
  // The default address is the embedded server's: only ours is used there (devStack refuses anyone else).
  if (temporal.address === defaultAddress) {
    const dev = await stack.temporal();
    opts.log(
      dev.started
        ? `started the local Temporal dev server (state in .rootfs/temporal.db)`
        : 'using the local Temporal dev server',
    );
    uiUrl = dev.uiUrl;
    embedded.temporal = true;
  }
  if (opts.needS3 && !s3.endpoint && !hasAwsCredentials()) {
    const dev = await stack.s3(s3.bucket);
    opts.log(
      `${dev.started ? 'started' : 'using'} the local S3 server at ${dev.endpoint} (no AWS credentials configured; state in .rootfs/s3)`,
    );
    Object.assign(process.env, {
      S3_ENDPOINT: dev.endpoint,
      AWS_ACCESS_KEY_ID: dev.accessKeyId,
      AWS_SECRET_ACCESS_KEY: dev.secretAccessKey,
    });
    process.env.AWS_REGION ??= s3.region;
    loaded = loadConfig({ file: configFile, sshHost });
    embedded.s3 = true;
  }
  return { loaded, configFile, sshHost, address: temporal.address, namespace: temporal.namespace, uiUrl, embedded };
}

export async function temporalClient(rt: CliRuntime): Promise<{ client: Client; close(): Promise<void> }> {
  const { temporal } = rt.loaded.config;
  const apiKey = temporal.apiKeyEnv ? process.env[temporal.apiKeyEnv] : undefined;
  const connection = await Connection.connect({
    address: rt.address,
    tls: temporal.tls || undefined,
    apiKey,
    connectTimeout: 5000,
  }).catch((err: Error) => {
    throw new Error(`cannot reach Temporal at ${rt.address}: ${err.message.split('\n')[0]}`);
  });
  return { client: new Client({ connection, namespace: rt.namespace }), close: () => connection.close() };
}

export async function workerConnection(rt: CliRuntime): Promise<NativeConnection> {
  const { temporal } = rt.loaded.config;
  const apiKey = temporal.apiKeyEnv ? process.env[temporal.apiKeyEnv] : undefined;
  return NativeConnection.connect({ address: rt.address, tls: temporal.tls || undefined, apiKey });
}

export function workflowUrl(rt: CliRuntime, workflowId: string): string | undefined {
  return rt.uiUrl ? `${rt.uiUrl}/namespaces/${rt.namespace}/workflows/${encodeURIComponent(workflowId)}` : undefined;
}
