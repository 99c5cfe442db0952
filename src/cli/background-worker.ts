import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Client } from '@temporalio/client';
import { projectRoot, stateDir } from '../util/paths';

/**
 * The worker that `create`, `create-all` and `resume` start for this machine runs as its own
 * background process, so that Ctrl-C on the command (or closing the terminal) only stops the
 * watching: the build goes on. One worker per config (file, Temporal address and namespace,
 * build host), its PID, log and code stamp under `<state>/workers/<alias>-<hash>/`. A worker
 * started from older code is replaced (gracefully) so it never replays workflows it does not know.
 * `rootfs dev down` stops them.
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
}

export interface BackgroundWorker {
  pid: number;
  log: string;
  started: boolean;
  /** Set when a worker from older code was asked to stop first. */
  replaced?: number;
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
  const id = crypto.createHash('sha256').update(JSON.stringify([t.configFile ? path.resolve(t.configFile) : '', t.address, t.namespace, t.alias])).digest('hex');
  return path.join(workersDir(), `${t.alias}-${id.slice(0, 8)}`);
}

/** True when `pid` is alive and is one of our workers (a PID can be reused by anything else). */
function isOurWorker(pid: number): boolean {
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv.includes(CLI_MAIN()) && argv.includes('worker');
  } catch {
    return false;
  }
}

function readMeta(dir: string): WorkerMeta | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, 'worker.json'), 'utf8')) as WorkerMeta;
  } catch {
    return undefined;
  }
}

async function waitForExit(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!isOurWorker(pid)) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return !isOurWorker(pid);
}

/** Starts the background worker for `target`, or finds it running on the current code. */
export function ensureBackgroundWorker(target: WorkerTarget): BackgroundWorker {
  const dir = workerDir(target);
  const log = path.join(dir, 'worker.log');
  const stamp = codeStamp();
  const meta = readMeta(dir);
  let replaced: number | undefined;
  if (meta && isOurWorker(meta.pid)) {
    if (meta.stamp === stamp) return { pid: meta.pid, log, started: false };
    // Older code: SIGTERM lets its running steps finish (grace period), the new worker takes the rest.
    process.kill(meta.pid, 'SIGTERM');
    replaced = meta.pid;
  }
  fs.mkdirSync(dir, { recursive: true });
  const out = fs.openSync(log, 'a');
  const args = [CLI_MAIN(), ...(target.configFile ? ['--config', path.resolve(target.configFile)] : []), 'worker', ...(target.sshHost ? ['--ssh', target.sshHost] : [])];
  // Its own session: a Ctrl-C at the terminal reaches the command, not the worker.
  const child = spawn(process.execPath, args, { stdio: ['ignore', out, out], detached: true, env: process.env });
  fs.closeSync(out);
  child.unref();
  const next: WorkerMeta = { pid: child.pid!, stamp, configFile: target.configFile && path.resolve(target.configFile), address: target.address, namespace: target.namespace, alias: target.alias, startedAt: new Date().toISOString() };
  fs.writeFileSync(path.join(dir, 'worker.json.tmp'), JSON.stringify(next, null, 2));
  fs.renameSync(path.join(dir, 'worker.json.tmp'), path.join(dir, 'worker.json'));
  return { pid: child.pid!, log, started: true, replaced };
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
export async function waitForPoller(client: Client, namespace: string, taskQueue: string, worker?: BackgroundWorker, timeoutMs = 90_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const res = await client.workflowService.describeTaskQueue({ namespace, taskQueue: { name: taskQueue }, taskQueueType: 2 /* ACTIVITY */ });
    if ((res.pollers ?? []).length > 0) return true;
    if (worker && !isOurWorker(worker.pid)) {
      throw new Error(`the background worker stopped at start; its log (${worker.log}) ends:\n${logTail(worker.log)}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return false;
}

export interface WorkerStatus extends WorkerMeta {
  running: boolean;
  log: string;
}

export function listBackgroundWorkers(state = stateDir()): WorkerStatus[] {
  const root = workersDir(state);
  if (!fs.existsSync(root)) return [];
  return fs.readdirSync(root).flatMap((name) => {
    const dir = path.join(root, name);
    const meta = readMeta(dir);
    return meta ? [{ ...meta, running: isOurWorker(meta.pid), log: path.join(dir, 'worker.log') }] : [];
  });
}

/** SIGTERM to every background worker (graceful), SIGKILL to those still there after `graceMs`. */
export async function stopBackgroundWorkers(graceMs = 45_000, state = stateDir()): Promise<WorkerStatus[]> {
  const running = listBackgroundWorkers(state).filter((w) => w.running);
  for (const w of running) process.kill(w.pid, 'SIGTERM');
  await Promise.all(
    running.map(async (w) => {
      if (!(await waitForExit(w.pid, graceMs)) && isOurWorker(w.pid)) process.kill(w.pid, 'SIGKILL');
    }),
  );
  return running;
}
