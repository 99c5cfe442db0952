import * as path from 'node:path';
import { WorkflowNotFoundError, WorkflowUpdateFailedError, type Client, type WorkflowHandle } from '@temporalio/client';
import { hostTaskQueue, ORCHESTRATOR_TASK_QUEUE, runWorkers } from '../../worker';
import { createAllRootfs } from '../../workflows';
import { abortUpdate, progressQuery, replaceSpecUpdate, retryStepUpdate, specQuery } from '../../workflows/messages';
import {
  KERNEL_STEPS,
  parentWorkflowId,
  STEP_TITLES,
  STEPS,
  type CreateAllSummary,
  type LanguageProgress,
} from '../../workflows/types';
import { buildSpecOf, languageSpec, specChanges, specDigest, type BuildSpec } from '../pipeline/build-spec';
import { Name } from '../config';
import { humanSize } from '../store';
import { ensureBackgroundWorker, waitForPoller } from './background-worker';
import { temporalClient, workerConnection, workflowUrl, type CliRuntime } from './runtime';
import { clock, finishedStep, firstLine, lineReporter, liveReporter, watch } from './watch';

/** A run tag per UTC day by default: starting the same build twice attaches to the first. */
export function defaultRunTag(now = new Date()): string {
  return `build-${now.toISOString().slice(0, 10).replace(/-/g, '')}`;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** A running build, per language and per step: state, duration (or elapsed), attempts, last error. */
export function progressTable(all: LanguageProgress[], now = Date.now()): string {
  const out: string[] = [];
  for (const p of all) {
    const done = p.steps.filter(finishedStep).length;
    out.push(`${p.language}  ${p.state} (${done}/${p.steps.length} steps)  ${p.workflowId}`);
    for (const s of p.steps) {
      const took =
        s.state === 'running' && s.startedAt
          ? `${clock(now - Date.parse(s.startedAt))} so far`
          : s.durationMs !== undefined
            ? seconds(s.durationMs)
            : '';
      const tries = s.attempts > 1 ? `  ${s.attempts} attempts` : '';
      out.push(
        `  ${STEP_TITLES[s.name].padEnd(24)} ${s.state.padEnd(15)} ${took.padEnd(12)}${tries}${s.error ? `  error: ${firstLine(s.error)}` : ''}`.trimEnd(),
      );
    }
  }
  return out.join('\n');
}

/** A finished build: per language the image, its size and digest, versions, and each step ran or reused (and how long). */
export function summaryTable(summary: CreateAllSummary): string {
  const lines = [
    'language image                      size        sha256        steps',
    ...summary.images.map((i) => {
      const ran = Object.values(i.steps).filter((s) => s === 'ran').length;
      const reused = Object.values(i.steps).filter((s) => s === 'reused').length;
      const steps = STEPS.filter((s) => i.steps[s]).map(
        (s) => `${s} ${i.steps[s]}${i.durationsMs?.[s] !== undefined ? ` ${seconds(i.durationsMs[s])}` : ''}`,
      );
      return [
        `${i.language.padEnd(8)} ${(i.path ?? '-').split('/').pop()!.padEnd(26)} ${(i.sizeBytes ? humanSize(i.sizeBytes) : '-').padStart(10)}  ${(i.sha256 ?? '-').slice(0, 12).padEnd(12)}  ${ran} ran, ${reused} reused`,
        ...(i.versions.length || i.bootMs !== undefined
          ? [
              `${' '.repeat(9)}${[
                ...i.versions,
                ...(i.bootMs !== undefined ? [`booted to /health in ${seconds(i.bootMs)}`] : []),
              ].join('; ')}`,
            ]
          : []),
        ...(steps.length
          ? [`${' '.repeat(9)}${steps.join(' · ')}`]
          : [`${' '.repeat(9)}${i.state}${i.error ? `: ${firstLine(i.error)}` : ''}`]),
      ].join('\n');
    }),
  ];
  const k = summary.kernel;
  if (k) {
    const steps = KERNEL_STEPS.filter((s) => k.steps[s]).map(
      (s) =>
        `${s.replace('kernel-', '')} ${k.steps[s]}${k.durationsMs?.[s] !== undefined ? ` ${seconds(k.durationsMs[s])}` : ''}`,
    );
    lines.push(
      `${'kernel'.padEnd(8)} ${'vmlinux'.padEnd(26)} ${(k.sizeBytes ? humanSize(k.sizeBytes) : '-').padStart(10)}  ${(k.sha256 ?? '-').slice(0, 12).padEnd(12)}  ${k.release ? `Linux ${k.release} (${k.source})` : ''}`.trimEnd(),
      `${' '.repeat(9)}${steps.length ? steps.join(' · ') : `${k.state}${k.error ? `: ${firstLine(k.error)}` : ''}`}`,
    );
  }
  if (summary.bucket)
    lines.push(
      `bucket ${summary.bucket.bucket}: ${summary.bucket.objects} objects, ${humanSize(summary.bucket.totalBytes)}`,
    );
  return lines.join('\n');
}

/** Follows a build until it closes or `signal` aborts: a live block on a terminal, step lines otherwise. */
export async function follow(handle: WorkflowHandle, stream: NodeJS.WriteStream, signal?: AbortSignal): Promise<void> {
  const hint = `fix the cause, then: rootfs resume ${handle.workflowId}   (or give up: rootfs abort ${handle.workflowId})`;
  if (!stream.isTTY)
    return watch(
      handle,
      lineReporter((l) => stream.write(`${l}\n`), hint),
      signal,
    );
  const live = liveReporter(handle, stream, hint);
  try {
    await watch(handle, (all) => live.update(all), signal);
  } finally {
    live.finish();
  }
}

/** Follows on stderr until the build closes or Ctrl-C, which stops the watching only: the workflow and its worker go on. */
async function followUntilCtrlC(handle: WorkflowHandle): Promise<'closed' | 'detached'> {
  const interrupted = new AbortController();
  const onInterrupt = () => interrupted.abort();
  process.once('SIGINT', onInterrupt);
  try {
    await follow(handle, process.stderr, interrupted.signal);
  } finally {
    process.removeListener('SIGINT', onInterrupt);
  }
  return interrupted.signal.aborted ? 'detached' : 'closed';
}

export interface CreateOptions {
  languages?: string[];
  runTag?: string;
  concurrency?: number;
  upload: boolean;
  worker: boolean;
  detach: boolean;
  json: boolean;
}

/**
 * Makes sure a worker serves this build host: the background worker for this config (started or
 * found running), or with `--no-worker` a check that some other worker polls the host's queue.
 */
async function ensureWorker(rt: CliRuntime, client: Client, start: boolean): Promise<void> {
  const { alias } = rt.loaded.config.buildHost;
  const queue = hostTaskQueue(alias);
  if (!start) {
    if (!(await waitForPoller(client, rt.namespace, queue, undefined, 5000))) {
      console.error(
        `no worker serves build host ${alias} yet (task queue ${queue}); the build waits until one runs: rootfs worker`,
      );
    }
    return;
  }
  const worker = ensureBackgroundWorker({
    configFile: rt.configFile,
    sshHost: rt.sshHost,
    address: rt.address,
    namespace: rt.namespace,
    alias,
  });
  if (worker.replaced)
    console.error(`worker: the one from older code (pid ${worker.replaced}) finishes its running steps and stops`);
  if (worker.started)
    console.error(
      `worker: started in the background for build host ${alias} (pid ${worker.pid}, log ${path.relative(process.cwd(), worker.log) || worker.log})`,
    );
  if (!(await waitForPoller(client, rt.namespace, queue, worker))) {
    console.error(`worker: not polling yet after 90 s; see ${worker.log}`);
  }
}

/** The spec a running build holds, or undefined (closed, or started before specs existed). */
async function specOf(handle: WorkflowHandle): Promise<BuildSpec | undefined> {
  return handle.query(specQuery).catch(() => undefined);
}

/** `path: before → after` lines, indented, at most `max` of them. */
function changeLines(changes: string[], max = 20): string {
  const shown = changes.slice(0, max).map((c) => `  ${c}`);
  if (changes.length > max) shown.push(`  … and ${changes.length - max} more`);
  return shown.join('\n');
}

export async function createCommand(rt: CliRuntime, opts: CreateOptions): Promise<number> {
  const runTag = Name.parse(opts.runTag ?? defaultRunTag());
  // What this build builds, fixed now: whichever worker runs a step builds exactly this.
  const spec = buildSpecOf(rt.loaded, opts.languages);
  const { client, close } = await temporalClient(rt);
  try {
    await ensureWorker(rt, client, opts.worker);
    const workflowId = parentWorkflowId(runTag);
    const handle = await client.workflow.start(createAllRootfs, {
      taskQueue: ORCHESTRATOR_TASK_QUEUE,
      workflowId,
      workflowIdConflictPolicy: 'USE_EXISTING',
      staticSummary: `rootfs build ${runTag}`,
      staticDetails: `config ${spec.source}, spec ${specDigest(spec)}: ${Object.keys(spec.languages).join(', ')} → s3://${spec.s3.bucket}`,
      args: [
        {
          runTag,
          languages: Object.keys(spec.languages),
          concurrency: opts.concurrency,
          spec,
          options: { hostTaskQueue: hostTaskQueue(spec.buildHost.alias), upload: opts.upload },
        },
      ],
    });
    console.error(
      `workflow ${workflowId}${workflowUrl(rt, workflowId) ? `\nTemporal Web: ${workflowUrl(rt, workflowId)}` : ''}`,
    );
    // The same run tag attaches to a running build: say so when that build builds something else.
    const running = await specOf(handle);
    const differs = running ? specChanges(running, spec) : [];
    if (differs.length) {
      console.error(
        `note: ${workflowId} was already running with other settings; it keeps them (use another --run-tag for this config):\n${changeLines(differs)}`,
      );
    }
    if (opts.detach) {
      console.error(`detached; follow it with: rootfs status --follow ${workflowId}`);
      return 0;
    }
    if ((await followUntilCtrlC(handle)) === 'detached') {
      console.error(
        `\ndetached: the build goes on${opts.worker ? ' in the background worker' : ''}; re-attach with: rootfs status --follow ${workflowId}`,
      );
      return 130;
    }
    try {
      const summary = await handle.result();
      if (opts.json) console.log(JSON.stringify(summary, null, 2));
      else console.log(summaryTable(summary));
      return 0;
    } catch (err) {
      console.error(
        `build ${runTag} did not finish: ${(err as Error & { cause?: Error }).cause?.message ?? (err as Error).message}`,
      );
      return 1;
    }
  } finally {
    await close();
  }
}

async function progressOf(client: Client, workflowId: string): Promise<LanguageProgress[]> {
  try {
    return await client.workflow.getHandle(workflowId).query(progressQuery);
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) throw new Error(`no build with workflow ID ${workflowId}`);
    throw err;
  }
}

export async function statusCommand(
  rt: CliRuntime,
  workflowId: string | undefined,
  opts: { follow: boolean; json: boolean },
): Promise<number> {
  const { client, close } = await temporalClient(rt);
  try {
    if (!workflowId) {
      const lines: string[] = [];
      for await (const w of client.workflow.list({ query: `WorkflowType = 'createAllRootfs'`, pageSize: 10 })) {
        lines.push(`${w.workflowId.padEnd(28)} ${w.status.name.padEnd(12)} ${w.startTime.toISOString()}`);
        if (lines.length >= 10) break;
      }
      console.log(lines.length ? lines.join('\n') : 'no builds yet');
      return 0;
    }
    const handle = client.workflow.getHandle(workflowId);
    const describe = () =>
      handle.describe().catch((err) => {
        if (err instanceof WorkflowNotFoundError) throw new Error(`no build with workflow ID ${workflowId}`);
        throw err;
      });
    let described = await describe();
    if (opts.follow && described.status.name === 'RUNNING') {
      if ((await followUntilCtrlC(handle)) === 'detached') {
        console.error(`\nstopped watching; the build goes on (rootfs status --follow ${workflowId})`);
        return 130;
      }
      described = await describe();
    }
    if (described.status.name !== 'RUNNING') {
      // A closed build answers from its result: a query would need a worker to replay it.
      const summary = await handle.result().catch((err: Error & { cause?: { details?: unknown[] } }) => {
        console.error(
          `build ${workflowId} ${described.status.name.toLowerCase()}: ${err.cause ? (err.cause as Error).message : err.message}`,
        );
        return err.cause?.details?.[0] as CreateAllSummary | undefined;
      });
      if (summary) console.log(opts.json ? JSON.stringify(summary, null, 2) : summaryTable(summary));
      return described.status.name === 'COMPLETED' ? 0 : 1;
    }
    const all = await progressOf(client, workflowId);
    console.log(opts.json ? JSON.stringify(all, null, 2) : progressTable(all));
    return 0;
  } finally {
    await close();
  }
}

export interface ResumeOptions {
  step?: string;
  abort: boolean;
  worker?: boolean;
  /** Apply the config as it is now (shown as a diff) instead of the build's own settings. */
  reloadConfig?: boolean;
}

/**
 * Sends retryStep (or abort) to every build under `workflowId` that waits for the operator. A
 * retry uses the settings the build started with, unless `reloadConfig` says to take the config
 * as it is now: then the changes are printed and the build goes through its steps again with it.
 */
export async function resumeCommand(rt: CliRuntime, workflowId: string, opts: ResumeOptions): Promise<number> {
  const { client, close } = await temporalClient(rt);
  try {
    // The retried step needs a worker; the one that started the build may have stopped since.
    if (!opts.abort) await ensureWorker(rt, client, opts.worker ?? true);
    const waiting = (await progressOf(client, workflowId)).filter((p) => p.state === 'awaiting-retry');
    if (!waiting.length) {
      console.error(`nothing under ${workflowId} is waiting for a retry`);
      return 1;
    }
    const target = client.workflow.getHandle(workflowId);
    const pinned = opts.abort ? undefined : await specOf(target);
    if (!pinned && opts.reloadConfig) {
      console.error(
        `${workflowId} holds no pinned configuration (started by an older version): start it again instead`,
      );
      return 1;
    }
    const now = pinned ? buildSpecOf(rt.loaded, Object.keys(pinned.languages)) : undefined;
    const changes = pinned && now ? specChanges(pinned, now) : [];
    if (opts.reloadConfig && now) {
      console.error(
        changes.length
          ? `reloading the config (${now.source}); what changes for ${workflowId}:\n${changeLines(changes)}`
          : `the config is as ${workflowId} holds it`,
      );
      // A parent starts its remaining children with the new spec, and lists the new bucket at the end.
      if (changes.length && (await target.describe()).type === 'createAllRootfs') {
        await target.executeUpdate(replaceSpecUpdate, { args: [now] });
      }
    } else if (changes.length) {
      console.error(
        `note: the config differs from the settings ${workflowId} started with (${changes.length} change${changes.length > 1 ? 's' : ''}); ` +
          `this retry uses the build's own. To apply the config: rootfs resume ${workflowId} --reload-config\n${changeLines(changes, 5)}`,
      );
    }
    let failed = 0;
    for (const p of waiting) {
      const handle = client.workflow.getHandle(p.workflowId);
      try {
        if (opts.abort) {
          await handle.executeUpdate(abortUpdate);
          console.log(`${p.language}: aborted`);
          continue;
        }
        // Each child against its own spec: one that was running at an earlier reload still has the old one.
        let spec: BuildSpec | undefined;
        if (opts.reloadConfig && now) {
          const own = p.workflowId === workflowId ? pinned : await specOf(handle);
          const wanted = languageSpec(now, p.language);
          if (own && specChanges(own, wanted).length) spec = wanted;
        }
        const ack = await handle.executeUpdate(retryStepUpdate, {
          args: [{ step: opts.step, ...(spec ? { spec } : {}) }],
        });
        console.log(
          `${p.language}: ${spec ? 'starting over with the new config (finished steps whose inputs did not change are reused)' : `retrying ${ack.step}`}`,
        );
      } catch (err) {
        // A refused update says why in its cause; the other images are still resumed.
        failed++;
        const why =
          err instanceof WorkflowUpdateFailedError ? (err.cause?.message ?? err.message) : (err as Error).message;
        console.error(`${p.language}: not ${opts.abort ? 'aborted' : 'resumed'}: ${why}`);
      }
    }
    return failed ? 1 : 0;
  } finally {
    await close();
  }
}

export async function workerCommand(rt: CliRuntime, graceMs: number): Promise<number> {
  const connection = await workerConnection(rt);
  const controller = new AbortController();
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.once(sig, () => {
      console.error(
        `worker: ${sig}: running steps may finish for ${graceMs / 1000} s, then they are cancelled and resume on the next worker`,
      );
      controller.abort();
    });
  }
  console.error(
    `worker: build host ${rt.loaded.config.buildHost.alias}, Temporal ${rt.address} (${rt.namespace}), pid ${process.pid}`,
  );
  try {
    await runWorkers(
      {
        connection,
        namespace: rt.namespace,
        configOptions: { file: rt.configFile, sshHost: rt.sshHost },
        shutdownGraceMs: graceMs,
      },
      controller.signal,
    );
  } finally {
    await connection.close();
  }
  console.error('worker: stopped');
  return 0;
}
