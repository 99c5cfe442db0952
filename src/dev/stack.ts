import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { CreateBucketCommand, HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { devServerSearchAttributeArgs } from '../temporal/search-attributes';
import { requireTool } from '../setup/tools';

/**
 * The embedded default stack: a Temporal dev server persisted to `.rootfs/temporal.db` (Web UI
 * on) and a MinIO persisted under `.rootfs/s3`, both on loopback, started on demand and left
 * running between commands (`rootfs dev down` stops them). Used when the config names no
 * Temporal cluster and no S3 endpoint or credentials.
 */

export const DEV_TEMPORAL = { host: '127.0.0.1', port: 7233, uiPort: 8233 };
export const DEV_S3 = { host: '127.0.0.1', port: 9000, consolePort: 9001 };

export interface DevS3 {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
}

function portAccepts(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

async function waitForPort(port: number, what: string, log: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await portAccepts(port)) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what} did not start within ${timeoutMs / 1000} s; see ${log}`);
}

/** Starts a server detached from this process, its output in `log`, its PID in `pidFile`. */
function startDetached(cmd: string, args: string[], env: NodeJS.ProcessEnv, log: string, pidFile: string): void {
  const out = fs.openSync(log, 'a');
  const child = spawn(cmd, args, { env, stdio: ['ignore', out, out], detached: true });
  fs.closeSync(out);
  fs.writeFileSync(pidFile, String(child.pid));
  child.unref();
}

export class DevStack {
  constructor(readonly dir: string) {}

  private file(...p: string[]): string {
    return path.join(this.dir, ...p);
  }

  async temporal(): Promise<{ address: string; uiUrl: string; started: boolean }> {
    const address = `${DEV_TEMPORAL.host}:${DEV_TEMPORAL.port}`;
    const uiUrl = `http://${DEV_TEMPORAL.host}:${DEV_TEMPORAL.uiPort}`;
    if (await portAccepts(DEV_TEMPORAL.port)) return { address, uiUrl, started: false };
    fs.mkdirSync(this.dir, { recursive: true });
    const log = this.file('temporal.log');
    startDetached(
      requireTool('temporal'),
      ['server', 'start-dev', '--ip', DEV_TEMPORAL.host, '--port', String(DEV_TEMPORAL.port), '--ui-port', String(DEV_TEMPORAL.uiPort),
        '--db-filename', this.file('temporal.db'), '--log-level', 'warn', ...devServerSearchAttributeArgs()],
      process.env,
      log,
      this.file('temporal.pid'),
    );
    await waitForPort(DEV_TEMPORAL.port, 'the Temporal dev server', log);
    return { address, uiUrl, started: true };
  }

  /** MinIO with credentials generated once and kept (mode 0600) in `.rootfs/s3/credentials.json`. */
  async s3(bucket: string): Promise<DevS3 & { started: boolean }> {
    const dir = this.file('s3');
    fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
    const credFile = path.join(dir, 'credentials.json');
    if (!fs.existsSync(credFile)) {
      const creds = { accessKeyId: `rootfs${crypto.randomBytes(6).toString('hex')}`, secretAccessKey: crypto.randomBytes(20).toString('hex') };
      fs.writeFileSync(credFile, JSON.stringify(creds), { mode: 0o600 });
    }
    const creds = JSON.parse(fs.readFileSync(credFile, 'utf8')) as { accessKeyId: string; secretAccessKey: string };
    const endpoint = `http://${DEV_S3.host}:${DEV_S3.port}`;
    let started = false;
    if (!(await portAccepts(DEV_S3.port))) {
      const log = path.join(dir, 'minio.log');
      startDetached(
        requireTool('minio'),
        ['server', path.join(dir, 'data'), '--address', `${DEV_S3.host}:${DEV_S3.port}`, '--console-address', `${DEV_S3.host}:${DEV_S3.consolePort}`, '--quiet'],
        { ...process.env, MINIO_ROOT_USER: creds.accessKeyId, MINIO_ROOT_PASSWORD: creds.secretAccessKey, MINIO_BROWSER: 'off' },
        log,
        path.join(dir, 'minio.pid'),
      );
      await waitForPort(DEV_S3.port, 'the local S3 server', log);
      started = true;
    }
    const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: creds });
    try {
      for (let i = 0; ; i++) {
        try {
          await client.send(new HeadBucketCommand({ Bucket: bucket }));
          break;
        } catch (err) {
          const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
          if (status === 404) {
            await client.send(new CreateBucketCommand({ Bucket: bucket }));
            break;
          }
          if (i > 40) throw err; // MinIO answers 503 for a moment after it starts
          await new Promise((r) => setTimeout(r, 250));
        }
      }
    } finally {
      client.destroy();
    }
    return { endpoint, ...creds, started };
  }

  /** Stops what `temporal()` and `s3()` started (by their PID files). */
  down(): string[] {
    const stopped: string[] = [];
    for (const [name, pidFile] of [['temporal', this.file('temporal.pid')], ['s3', this.file('s3', 'minio.pid')]] as const) {
      if (!fs.existsSync(pidFile)) continue;
      const pid = Number(fs.readFileSync(pidFile, 'utf8'));
      try {
        process.kill(pid, 'SIGTERM');
        stopped.push(name);
      } catch {
        // already gone
      }
      fs.rmSync(pidFile, { force: true });
    }
    return stopped;
  }

  async status(): Promise<{ temporal: boolean; s3: boolean }> {
    return { temporal: await portAccepts(DEV_TEMPORAL.port), s3: await portAccepts(DEV_S3.port) };
  }
}
