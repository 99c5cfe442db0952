import { WorkflowNotFoundError, type Client, type WorkflowHandle } from '@temporalio/client';
import { hostTaskQueue, ORCHESTRATOR_TASK_QUEUE, runWorkers } from '../../worker';
import { createAllRootfs } from '../../workflows';
import { abortUpdate, progressQuery, retryStepUpdate } from '../../workflows/messages';
import { parentWorkflowId, STEP_TITLES, type CreateAllSummary, type LanguageProgress } from '../../workflows/types';
import { Name } from '../config';
import { humanSize } from '../store';
import { temporalClient, workerConnection, workflowUrl, type CliRuntime } from './runtime';

/** A run tag per UTC day by default: starting the same build twice attaches to the first. */
export function defaultRunTag(now = new Date()): string {
  return `build-${now.toISOString().slice(0, 10).replace(/-/g, '')}`;
}

export function progressTable(all: LanguageProgress[]): string {
  const rows = all.map((p) => {
    const current = p.steps.find((s) => s.state === 'running' || s.state === 'awaiting-retry');
    const done = p.steps.filter((s) => s.state === 'done' || s.state === 'reused').length;
    const err = p.steps.find((s) => s.state === 'awaiting-retry')?.error;
    return `${p.language.padEnd(8)} ${p.state.padEnd(15)} ${String(done).padStart(1)}/${p.steps.length}  ${current ? STEP_TITLES[current.name] : ''}${err ? `\n${' '.repeat(9)}error: ${err.split('\n')[0]}` : ''}`;
  });
  return ['language state           steps current', ...rows].join('\n');
}

export function summaryTable(summary: CreateAllSummary): string {
  const lines = ['language image                      size        sha256        steps', ...summary.images.map((i) => {
    const ran = Object.values(i.steps).filter((s) => s === 'ran').length;
    const reused = Object.values(i.steps).filter((s) => s === 'reused').length;
    return `${i.language.padEnd(8)} ${(i.path ?? '-').split('/').pop()!.padEnd(26)} ${(i.sizeBytes ? humanSize(i.sizeBytes) : '-').padStart(10)}  ${(i.sha256 ?? '-').slice(0, 12)}  ${ran} ran, ${reused} reused\n${' '.repeat(9)}${i.versions.join('; ')}`;
  })];
  if (summary.bucket) lines.push(`bucket ${summary.bucket.bucket}: ${summary.bucket.objects} objects, ${humanSize(summary.bucket.totalBytes)}`);
  return lines.join('\n');
}

/** Prints one line whenever a step changes state, until the workflow closes. */
export async function follow(handle: WorkflowHandle, out: (line: string) => void, signal?: AbortSignal): Promise<void> {
  const seen = new Map<string, string>();
  let done = false;
  const result = handle.result().finally(() => (done = true));
  result.catch(() => undefined);
  while (!signal?.aborted) {
    // One more poll after the workflow closed, so the last steps' changes are printed too.
    const finished = done;
    try {
      const all: LanguageProgress[] = await handle.query(progressQuery);
      for (const p of all) {
        for (const s of p.steps) {
          const id = `${p.language}/${s.name}`;
          const text = `${s.state}${s.state === 'awaiting-retry' && s.error ? `: ${s.error.split('\n')[0]}` : ''}`;
          if (s.state !== 'pending' && seen.get(id) !== text) {
            seen.set(id, text);
            const took = s.durationMs !== undefined && (s.state === 'done' || s.state === 'reused') ? ` (${(s.durationMs / 1000).toFixed(1)} s)` : '';
            out(`${p.language.padEnd(8)} ${STEP_TITLES[s.name].padEnd(24)} ${text}${took}`);
          }
        }
      }
    } catch {
      // a query can fail while no worker runs; the next poll tries again
    }
    if (finished) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
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

export async function createCommand(rt: CliRuntime, opts: CreateOptions): Promise<number> {
  const { config } = rt.loaded;
  for (const l of opts.languages ?? []) {
    Name.parse(l);
    if (!config.languages[l]) throw new Error(`${l} is not a configured language (${Object.keys(config.languages).join(', ')})`);
  }
  const runTag = Name.parse(opts.runTag ?? defaultRunTag());
  const { client, close } = await temporalClient(rt);
  const controller = new AbortController();
  let workers: Promise<void> | undefined;
  if (opts.worker) {
    const connection = await workerConnection(rt);
    workers = runWorkers({ connection, namespace: rt.namespace, configOptions: { file: rt.configFile } }, controller.signal).finally(() => connection.close());
    workers.catch((err: Error) => console.error(`worker stopped: ${err.message}`));
  }
  try {
    const workflowId = parentWorkflowId(runTag);
    const handle = await client.workflow.start(createAllRootfs, {
      taskQueue: ORCHESTRATOR_TASK_QUEUE,
      workflowId,
      workflowIdConflictPolicy: 'USE_EXISTING',
      staticSummary: `rootfs build ${runTag}`,
      args: [{ runTag, languages: opts.languages, concurrency: opts.concurrency, options: { hostTaskQueue: hostTaskQueue(config.buildHost.alias), upload: opts.upload } }],
    });
    console.error(`workflow ${workflowId}${workflowUrl(rt, workflowId) ? `\nTemporal Web: ${workflowUrl(rt, workflowId)}` : ''}`);
    if (opts.detach) {
      console.error(`detached; follow it with: rootfs status --follow ${workflowId}`);
      return 0;
    }
    const interrupted = new AbortController();
    process.once('SIGINT', () => {
      console.error(`\ndetached: the build goes on${opts.worker ? ' when a worker runs (rootfs worker)' : ''}; re-attach with: rootfs status --follow ${workflowId}`);
      interrupted.abort();
    });
    await follow(handle, (l) => console.error(l), interrupted.signal);
    if (interrupted.signal.aborted) return 130;
    try {
      const summary = await handle.result();
      if (opts.json) console.log(JSON.stringify(summary, null, 2));
      else console.log(summaryTable(summary));
      return 0;
    } catch (err) {
      console.error(`build ${runTag} did not finish: ${(err as Error & { cause?: Error }).cause?.message ?? (err as Error).message}`);
      return 1;
    }
  } finally {
    controller.abort();
    await workers?.catch(() => undefined);
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

export async function statusCommand(rt: CliRuntime, workflowId: string | undefined, opts: { follow: boolean; json: boolean }): Promise<number> {
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
    if (opts.follow) {
      await follow(client.workflow.getHandle(workflowId), (l) => console.log(l));
      return 0;
    }
    const handle = client.workflow.getHandle(workflowId);
    const described = await handle.describe().catch((err) => {
      if (err instanceof WorkflowNotFoundError) throw new Error(`no build with workflow ID ${workflowId}`);
      throw err;
    });
    if (described.status.name !== 'RUNNING') {
      // A closed build answers from its result: a query would need a worker to replay it.
      const summary = await handle.result().catch((err: Error & { cause?: { details?: unknown[] } }) => {
        console.error(`build ${workflowId} ${described.status.name.toLowerCase()}: ${err.cause ? (err.cause as Error).message : err.message}`);
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

/** Sends retryStep (or abort) to every build under `workflowId` that waits for the operator. */
export async function resumeCommand(rt: CliRuntime, workflowId: string, opts: { step?: string; abort: boolean }): Promise<number> {
  const { client, close } = await temporalClient(rt);
  try {
    const waiting = (await progressOf(client, workflowId)).filter((p) => p.state === 'awaiting-retry');
    if (!waiting.length) {
      console.error(`nothing under ${workflowId} is waiting for a retry`);
      return 1;
    }
    for (const p of waiting) {
      const handle = client.workflow.getHandle(p.workflowId);
      if (opts.abort) {
        await handle.executeUpdate(abortUpdate);
        console.log(`${p.language}: aborted`);
      } else {
        const ack = await handle.executeUpdate(retryStepUpdate, { args: [{ step: opts.step }] });
        console.log(`${p.language}: retrying ${ack.step}`);
      }
    }
    return 0;
  } finally {
    await close();
  }
}

export async function workerCommand(rt: CliRuntime): Promise<number> {
  const connection = await workerConnection(rt);
  const controller = new AbortController();
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.once(sig, () => {
      console.error(`worker: ${sig}: finishing running steps, then cancelling them…`);
      controller.abort();
    });
  }
  console.error(`worker: build host ${rt.loaded.config.buildHost.alias}, Temporal ${rt.address} (${rt.namespace})`);
  try {
    await runWorkers({ connection, namespace: rt.namespace, configOptions: { file: rt.configFile } }, controller.signal);
  } finally {
    await connection.close();
  }
  return 0;
}
