import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CreateBucketCommand, HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { devServerSearchAttributeArgs } from '../temporal/search-attributes';
import { requireTool, toolPaths } from '../setup/tools';
import {
  argvOf,
  describeListeners,
  hasEnded,
  isRecordedProcess,
  listensOn,
  loopbackListeners,
  readPidFile,
  recordProcess,
  stopRecordedProcess,
  whatBecameOf,
  withLockFile,
  writePidFile,
  type RecordedProcess,
} from './process-identity';

/**
 * The embedded default stack: a Temporal dev server persisted to `.rootfs/temporal.db` (Web UI
 * on) and a MinIO persisted under `.rootfs/s3`, both on loopback, started on demand and left
 * running between commands (`rootfs dev down` stops them). Used when the config names no
 * Temporal cluster and no S3 endpoint or credentials. Only a server this stack started (same
 * pid, start time and command line, owning the listening socket) is reused: anything else on
 * the port is reported by pid and command line, and nothing is sent to it.
 */

export const DEV_TEMPORAL = { host: '127.0.0.1', port: 7233, uiPort: 8233 };
export const DEV_S3 = { host: '127.0.0.1', port: 9000, consolePort: 9001 };

export interface DevS3 {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
}

/** The ports of the embedded stack; tests pick free ones, everything else uses the defaults. */
export interface DevPorts {
  temporal: number;
  temporalUi: number;
  s3: number;
  s3Console: number;
}

const DEFAULT_PORTS: DevPorts = {
  temporal: DEV_TEMPORAL.port,
  temporalUi: DEV_TEMPORAL.uiPort,
  s3: DEV_S3.port,
  s3Console: DEV_S3.consolePort,
};

/**
 * One of the two servers and how to know it for ours. Its pid file records the pid, start time
 * and command line (see process-identity.ts); a listener is ours only when that very process
 * owns the socket. The fixed ports stay (the Web UI address is in the README and in people's
 * bookmarks): what is proved is the process, not the port number, and picking other ports
 * would prove nothing about who holds them later.
 */
interface Server {
  name: 'temporal' | 's3';
  what: string;
  port: number;
  pidFile: string;
  log: string;
  /** What using a stranger's listener would hand over, and what to do instead. */
  stakes: string;
  instead: string;
  /** Does a running command line start our tool on our state? */
  fits(argv: string[]): boolean;
}

/** Starts a server detached from this process, its output in `log`; returns its pid. */
function startDetached(argv: string[], env: NodeJS.ProcessEnv, log: string): number {
  const out = fs.openSync(log, 'a');
  const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ['ignore', out, out], detached: true });
  fs.closeSync(out);
  child.once('error', () => {}); // reported below, or by the wait that follows
  child.unref();
  if (child.pid === undefined) throw new Error(`cannot start ${argv[0]}; see ${log}`);
  return child.pid;
}

function logTail(log: string): string {
  try {
    return fs.readFileSync(log, 'utf8').trimEnd().split('\n').slice(-15).join('\n');
  } catch {
    return '(no log)';
  }
}

const optionValue = (argv: string[], name: string) => argv[argv.indexOf(name) + 1];

export class DevStack {
  readonly ports: DevPorts;

  constructor(
    readonly dir: string,
    opts: { ports?: Partial<DevPorts> } = {},
  ) {
    this.ports = { ...DEFAULT_PORTS, ...opts.ports };
  }

  private file(...p: string[]): string {
    return path.join(this.dir, ...p);
  }

  private servers(): [Server, Server] {
    const tools = toolPaths();
    const db = this.file('temporal.db');
    const data = this.file('s3', 'data');
    return [
      {
        name: 'temporal',
        what: 'the local Temporal dev server',
        port: this.ports.temporal,
        pidFile: this.file('temporal.pid'),
        log: this.file('temporal.log'),
        stakes: 'send it builds',
        instead: 'name the Temporal server to use in the config (temporal.address)',
        fits: (argv) =>
          argv[0] === tools.temporal &&
          argv[1] === 'server' &&
          argv[2] === 'start-dev' &&
          optionValue(argv, '--db-filename') === db,
      },
      {
        name: 's3',
        what: 'the local S3 server',
        port: this.ports.s3,
        pidFile: this.file('s3', 'minio.pid'),
        log: this.file('s3', 'minio.log'),
        stakes: 'send it the local S3 credentials and images',
        instead: 'configure the S3 to use (s3.endpoint, AWS credentials)',
        fits: (argv) => argv[0] === tools.minio && argv[1] === 'server' && argv[2] === data,
      },
    ];
  }

  private refusal(srv: Server): Error {
    return new Error(
      `127.0.0.1:${srv.port} is held by ${describeListeners(srv.port)}, not by ${srv.what} that rootfs started under ${this.dir}: ` +
        `refusing to ${srv.stakes}. Stop that process, or ${srv.instead}.`,
    );
  }

  /** Our recorded server when it still runs; a stale or unreadable pid file is removed. */
  private running(srv: Server): RecordedProcess | undefined {
    const rec = readPidFile(srv.pidFile);
    if (rec === undefined) return undefined;
    if (rec !== 'invalid' && isRecordedProcess(rec, srv.fits)) return rec;
    fs.rmSync(srv.pidFile, { force: true });
    return undefined;
  }

  /**
   * Reuses our server when it runs (waiting for it to listen if it is starting), else starts it
   * when the port is free. Anyone else on the port is an error naming them.
   */
  private async ensure(srv: Server, command: () => { argv: string[]; env: NodeJS.ProcessEnv }): Promise<boolean> {
    const rec = this.running(srv);
    if (rec) {
      await this.waitUntilListening(srv, rec, false);
      // A pid file from older code holds the bare pid: record the rest now that the process is proved ours.
      if (rec.startTime === undefined) writePidFile(srv.pidFile, recordProcess(rec.pid, argvOf(rec.pid) ?? []));
      return false;
    }
    fs.mkdirSync(path.dirname(srv.pidFile), { recursive: true });
    return withLockFile(`${srv.pidFile}.lock`, async () => {
      // Another command may have started it while we waited for the lock.
      const meanwhile = this.running(srv);
      if (meanwhile) {
        await this.waitUntilListening(srv, meanwhile, false);
        return false;
      }
      if (loopbackListeners(srv.port).length) throw this.refusal(srv);
      const { argv, env } = command();
      const started = recordProcess(startDetached(argv, env, srv.log), argv);
      writePidFile(srv.pidFile, started);
      await this.waitUntilListening(srv, started, true);
      return true;
    });
  }

  private async waitUntilListening(
    srv: Server,
    rec: RecordedProcess,
    startedNow: boolean,
    timeoutMs = 60_000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const alive = isRecordedProcess(rec, srv.fits);
      if (!alive && startedNow && !hasEnded(rec) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50)); // still inside exec: no command line to check yet
        continue;
      }
      // One reading of the port: a second one could see a listener that came after the first.
      const listeners = loopbackListeners(srv.port);
      if (alive && listensOn(rec.pid, srv.port, listeners)) return;
      if (listeners.length) {
        const refusal = this.refusal(srv);
        // Started by us just now, ours cannot have the port: take it down again rather than leave it failing.
        if (alive && startedNow) await stopRecordedProcess(rec, srv.fits, 5000);
        if (!alive || startedNow) fs.rmSync(srv.pidFile, { force: true });
        throw refusal;
      }
      if (!alive) {
        fs.rmSync(srv.pidFile, { force: true });
        throw new Error(
          `${srv.what} (pid ${rec.pid}) ${startedNow ? 'exited at start' : 'stopped'}; its log (${srv.log}) ends:\n${logTail(srv.log)}`,
        );
      }
      if (Date.now() > deadline)
        throw new Error(
          `${srv.what} (pid ${rec.pid}) did not listen on 127.0.0.1:${srv.port} within ${timeoutMs / 1000} s; see ${srv.log}`,
        );
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async temporal(): Promise<{ address: string; uiUrl: string; started: boolean }> {
    const { host } = DEV_TEMPORAL;
    const address = `${host}:${this.ports.temporal}`;
    const uiUrl = `http://${host}:${this.ports.temporalUi}`;
    const started = await this.ensure(this.servers()[0], () => ({
      argv: [
        requireTool('temporal'),
        'server',
        'start-dev',
        '--ip',
        host,
        '--port',
        String(this.ports.temporal),
        '--ui-port',
        String(this.ports.temporalUi),
        '--db-filename',
        this.file('temporal.db'),
        '--log-level',
        'warn',
        ...devServerSearchAttributeArgs(),
      ],
      env: process.env,
    }));
    return { address, uiUrl, started };
  }

  /** MinIO with credentials generated once and kept (mode 0600) in `.rootfs/s3/credentials.json`. */
  async s3(bucket: string): Promise<DevS3 & { started: boolean }> {
    const dir = this.file('s3');
    fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
    const credFile = path.join(dir, 'credentials.json');
    if (!fs.existsSync(credFile)) {
      const creds = {
        accessKeyId: `rootfs${crypto.randomBytes(6).toString('hex')}`,
        secretAccessKey: crypto.randomBytes(20).toString('hex'),
      };
      fs.writeFileSync(credFile, JSON.stringify(creds), { mode: 0o600 });
    }
    const creds = JSON.parse(fs.readFileSync(credFile, 'utf8')) as { accessKeyId: string; secretAccessKey: string };
    const { host } = DEV_S3;
    const endpoint = `http://${host}:${this.ports.s3}`;
    const started = await this.ensure(this.servers()[1], () => ({
      argv: [
        requireTool('minio'),
        'server',
        path.join(dir, 'data'),
        '--address',
        `${host}:${this.ports.s3}`,
        '--console-address',
        `${host}:${this.ports.s3Console}`,
        '--quiet',
      ],
      env: {
        ...process.env,
        MINIO_ROOT_USER: creds.accessKeyId,
        MINIO_ROOT_PASSWORD: creds.secretAccessKey,
        MINIO_BROWSER: 'off',
      },
    }));
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

  /**
   * Stops what `temporal()` and `s3()` started (by their pid files), waiting for them to go. A pid
   * that is no longer our server is not signalled: its pid file is removed and `note` says so.
   */
  async down(note: (line: string) => void = () => {}, graceMs = 20_000): Promise<string[]> {
    const stopped = await Promise.all(
      this.servers().map(async (srv) => {
        const rec = readPidFile(srv.pidFile);
        if (rec === undefined) return [];
        if (rec === 'invalid' || !isRecordedProcess(rec, srv.fits)) {
          const why = rec === 'invalid' ? 'it does not hold a pid record' : whatBecameOf(rec.pid);
          note(`${srv.what}: removed the stale pid file ${srv.pidFile} (${why}); signalled nothing`);
          fs.rmSync(srv.pidFile, { force: true });
          return [];
        }
        await stopRecordedProcess(rec, srv.fits, graceMs);
        fs.rmSync(srv.pidFile, { force: true });
        return [srv.name];
      }),
    );
    return stopped.flat();
  }

  /** Per server: `up (pid N)`, `down`, or who holds its port instead. */
  status(): { temporal: string; s3: string } {
    const state = (srv: Server) => {
      const rec = readPidFile(srv.pidFile);
      const ours = rec !== undefined && rec !== 'invalid' && isRecordedProcess(rec, srv.fits) ? rec : undefined;
      const listeners = loopbackListeners(srv.port);
      if (ours && listensOn(ours.pid, srv.port, listeners)) return `up (pid ${ours.pid})`;
      if (listeners.length) return `not ours: 127.0.0.1:${srv.port} is held by ${describeListeners(srv.port)}`;
      return ours ? `starting (pid ${ours.pid})` : 'down';
    };
    const [temporal, s3] = this.servers();
    return { temporal: state(temporal), s3: state(s3) };
  }
}
