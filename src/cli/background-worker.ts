import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Client } from '@temporalio/client';
import {
  hasEnded,
  isRecordedProcess,
  recordedProcessOf,
  recordProcess,
  stopRecordedProcess,
  whatBecameOf,
} from '../dev/process-identity';
import { projectRoot, stateDir } from '../util/paths';

/**
 * The worker that `create`, `create-all` and `resume` start for this machine runs as its own
 * background process, so that Ctrl-C on the command (or closing the terminal) only stops the
 * watching: the build goes on. One worker per config (file, Temporal address and namespace,
 * build host), its PID, log and code stamp under `<state>/workers/<alias>-<hash>/`. A worker
 * started from older code is replaced (gracefully) so it never replays workflows it does not know.
 * `rootfs dev down` stops them. A worker is known by its pid, start time and command line (see
 * process-identity.ts): a pid now used by another process is never signalled.
 */

export interface WorkerTarget {
  configFile?: string;
  /** `--ssh NAME` for the worker: build on that SSH host of the config. */
  sshHost?: string;
  address: string;
  namespace: string;
  alias: string;
}

interface WorkerMeta {
  pid: number;
  stamp: string;
  configFile?: string;
  address: string;
  namespace: string;
  alias: string;
  startedAt: string;
  /** From /proc/<pid>/stat, and the command line it was started with; absent in records of older code. */
  startTime?: string;
  argv?: string[];
}

export interface BackgroundWorker {
  pid: number;
  log: string;
  started: boolean;
  /** Set when a worker from older code was asked to stop first. */
  replaced?: number;
  startTime?: string;
  argv?: string[];
}

const CLI_MAIN = () => path.join(projectRoot(), 'dist', 'src', 'cli', 'main.js');
const workersDir = (state = stateDir()) => path.join(state, 'workers');

/** A digest of the compiled code a worker would run: it changes with every rebuild that changes it. */
function codeStamp(): string {
  const root = path.join(projectRoot(), 'dist');
  const hash = crypto.createHash('sha256');
  for (const sub of ['src', 'workflows', 'activities', 'worker']) {
    const walk = (dir: string) => {
      for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
        const p = path.join(dir, entry.name);
        if (entry.isDirectory()) walk(p);
        else if (entry.name.endsWith('.js')) hash.update(p).update(fs.readFileSync(p));
      }
    };
    if (fs.existsSync(path.join(root, sub))) walk(path.join(root, sub));
  }
  return hash.digest('hex').slice(0, 16);
}

function workerDir(t: WorkerTarget): string {
  const id = crypto
    .createHash('sha256')
    .update(JSON.stringify([t.configFile ? path.resolve(t.configFile) : '', t.address, t.namespace, t.alias]))
    .digest('hex');
  return path.join(workersDir(), `${t.alias}-${id.slice(0, 8)}`);
}

const runsOurWorker = (argv: string[]) => argv.includes(CLI_MAIN()) && argv.includes('worker');

/**
 * True when the recorded worker is alive and still that process: same start time and command
 * line (a PID can be reused by anything else). Records of older code hold only the pid: then
 * its command line must at least be one of our workers.
 */
function isOurWorker(w: { pid: number; startTime?: string; argv?: string[] }): boolean {
  const rec = recordedProcessOf(w);
  return !!rec && isRecordedProcess(rec, runsOurWorker);
}

function readMeta(dir: string): WorkerMeta | undefined {
  try {
    const meta = JSON.parse(fs.readFileSync(path.join(dir, 'worker.json'), 'utf8')) as WorkerMeta;
    return recordedProcessOf(meta) ? meta : undefined;
  } catch {
    return undefined;
  }
}

/** Starts the background worker for `target`, or finds it running on the current code. */
export function ensureBackgroundWorker(target: WorkerTarget): BackgroundWorker {
  const dir = workerDir(target);
  const log = path.join(dir, 'worker.log');
  const stamp = codeStamp();
  const meta = readMeta(dir);
  let replaced: number | undefined;
  if (meta && isOurWorker(meta)) {
    if (meta.stamp === stamp) return { pid: meta.pid, log, started: false, startTime: meta.startTime, argv: meta.argv };
    // Older code: SIGTERM lets its running steps finish (grace period), the new worker takes the rest.
    process.kill(meta.pid, 'SIGTERM');
    replaced = meta.pid;
  }
  fs.mkdirSync(dir, { recursive: true });
  const out = fs.openSync(log, 'a');
  const args = [
    CLI_MAIN(),
    ...(target.configFile ? ['--config', path.resolve(target.configFile)] : []),
    'worker',
    ...(target.sshHost ? ['--ssh', target.sshHost] : []),
  ];
  // Its own session: a Ctrl-C at the terminal reaches the command, not the worker.
  const child = spawn(process.execPath, args, { stdio: ['ignore', out, out], detached: true, env: process.env });
  fs.closeSync(out);
  child.unref();
  const started = recordProcess(child.pid!, [process.execPath, ...args]);
  const next: WorkerMeta = {
    ...started,
    stamp,
    configFile: target.configFile && path.resolve(target.configFile),
    address: target.address,
    namespace: target.namespace,
    alias: target.alias,
    startedAt: new Date().toISOString(),
  };
  fs.writeFileSync(path.join(dir, 'worker.json.tmp'), JSON.stringify(next, null, 2));
  fs.renameSync(path.join(dir, 'worker.json.tmp'), path.join(dir, 'worker.json'));
  return { pid: child.pid!, log, started: true, replaced, startTime: started.startTime, argv: started.argv };
}

/** The last lines of a worker's log, for an error message. */
export function logTail(log: string, lines = 15): string {
  try {
    return fs.readFileSync(log, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/**
 * Waits until some worker polls the build host's activity queue. Fails with the worker's log when
 * the background worker died first (a bad config, an unreachable build host).
 */
export async function waitForPoller(
  client: Client,
  namespace: string,
  taskQueue: string,
  worker?: BackgroundWorker,
  timeoutMs = 90_000,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const res = await client.workflowService.describeTaskQueue({
      namespace,
      taskQueue: { name: taskQueue },
      taskQueueType: 2 /* ACTIVITY */,
    });
    if ((res.pollers ?? []).length > 0) return true;
    const rec = worker && recordedProcessOf(worker);
    // Ended, not merely inside exec (where /proc shows no command line for a moment).
    if (worker && !isOurWorker(worker) && (!rec || hasEnded(rec))) {
      throw new Error(`the background worker stopped at start; its log (${worker.log}) ends:\n${logTail(worker.log)}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return false;
}

export interface WorkerStatus extends WorkerMeta {
  running: boolean;
  log: string;
  dir: string;
}

export function listBackgroundWorkers(state = stateDir()): WorkerStatus[] {
  const root = workersDir(state);
  if (!fs.existsSync(root)) return [];
  return fs.readdirSync(root).flatMap((name) => {
    const dir = path.join(root, name);
    const meta = readMeta(dir);
    return meta ? [{ ...meta, running: isOurWorker(meta), log: path.join(dir, 'worker.log'), dir }] : [];
  });
}

/**
 * SIGTERM to every background worker (graceful), SIGKILL to those still there after `graceMs`,
 * each signal only while the pid is still that worker. A record whose pid is gone or is another
 * process now is removed (its log stays), and `note` says so. `only` picks some of them (by config file, say).
 */
export async function stopBackgroundWorkers(
  graceMs = 45_000,
  state = stateDir(),
  note: (line: string) => void = () => {},
  only: (w: WorkerStatus) => boolean = () => true,
): Promise<WorkerStatus[]> {
  const workers = listBackgroundWorkers(state).filter(only);
  for (const w of workers.filter((w) => !w.running)) {
    const file = path.join(w.dir, 'worker.json');
    // Only the record read above: a worker started meanwhile has written a new one.
    if (readMeta(w.dir)?.pid !== w.pid) continue;
    fs.rmSync(file, { force: true });
    note(`worker ${w.alias}: removed the stale record ${file} (${whatBecameOf(w.pid)}); signalled nothing`);
  }
  const running = workers.filter((w) => w.running);
  await Promise.all(running.map((w) => stopRecordedProcess(recordedProcessOf(w)!, runsOurWorker, graceMs)));
  return running;
}
