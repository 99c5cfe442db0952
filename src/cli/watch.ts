import { defaultPayloadConverter, type WorkflowHandle } from '@temporalio/client';
import { progressQuery } from '../../workflows/messages';
import { STEP_TITLES, type LanguageProgress, type StepProgress } from '../../workflows/types';

/**
 * Watching a build: one poll loop over the parent's `progress` query, and two ways to show it —
 * append-only lines for logs and pipes, and a live block (one line per language with a bar) for
 * a terminal.
 */

/** Polls `progress` about once a second until the workflow closes (one last poll after) or `signal` aborts. */
export async function watch(
  handle: WorkflowHandle,
  onProgress: (all: LanguageProgress[]) => Promise<void> | void,
  signal?: AbortSignal,
  intervalMs = 1000,
): Promise<void> {
  let done = false;
  const result = handle.result().finally(() => (done = true));
  result.catch(() => undefined);
  while (!signal?.aborted) {
    const finished = done;
    try {
      await onProgress(await handle.query(progressQuery));
    } catch {
      // a query can fail while no worker runs; the next poll tries again
    }
    if (finished) break;
    // The wait ends early when the workflow closes: its last state shows at once, not a poll later.
    await new Promise<void>((resolve) => {
      const wake = () => (clearTimeout(t), resolve());
      const t = setTimeout(() => (signal?.removeEventListener('abort', wake), resolve()), intervalMs);
      signal?.addEventListener('abort', wake, { once: true });
      result.then(wake, wake);
    });
  }
}

export const firstLine = (s: string) => s.split('\n')[0]!;

/** Append-only: one line whenever a step changes state. */
export function lineReporter(out: (line: string) => void, resumeHint?: string): (all: LanguageProgress[]) => void {
  const seen = new Map<string, string>();
  return (all) => {
    for (const p of all) {
      for (const s of p.steps) {
        const id = `${p.language}/${s.name}`;
        const text = `${s.state}${s.state === 'awaiting-retry' && s.error ? `: ${firstLine(s.error)}` : ''}`;
        if (s.state === 'pending' || seen.get(id) === text) continue;
        seen.set(id, text);
        const took =
          s.durationMs !== undefined && (s.state === 'done' || s.state === 'reused')
            ? ` (${(s.durationMs / 1000).toFixed(1)} s)`
            : '';
        out(`${p.language.padEnd(8)} ${STEP_TITLES[s.name].padEnd(24)} ${text}${took}`);
        if (s.state === 'awaiting-retry' && resumeHint) out(`${' '.repeat(9)}${resumeHint}`);
      }
    }
  };
}

export function clock(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

export const finishedStep = (s: StepProgress) => s.state === 'done' || s.state === 'reused' || s.state === 'skipped';

/** Time from the first step's start to the last step's end (or to `now` while it runs). */
function elapsed(p: LanguageProgress, now: number): number | undefined {
  const started = p.steps.filter((s) => s.startedAt).map((s) => Date.parse(s.startedAt!));
  if (!started.length) return undefined;
  const first = Math.min(...started);
  if (p.state === 'running' || p.state === 'awaiting-retry') return now - first;
  const ends = p.steps
    .filter((s) => s.startedAt && s.durationMs !== undefined)
    .map((s) => Date.parse(s.startedAt!) + s.durationMs!);
  return (ends.length ? Math.max(...ends) : now) - first;
}

/**
 * The live block: `python   [#########-----]  4/7  install runtime  0:42  Unpacking python3…`.
 * `details` holds the running step's heartbeat (phase, last output line) per language.
 */
export function renderLive(
  all: LanguageProgress[],
  now: number,
  details: ReadonlyMap<string, string> = new Map(),
  width = 100,
  barWidth = 20,
): string[] {
  const lines: string[] = [];
  for (const p of all) {
    const done = p.steps.filter(finishedStep).length;
    const filled = Math.round((done / p.steps.length) * barWidth);
    const bar = `[${'#'.repeat(filled)}${'-'.repeat(barWidth - filled)}]`;
    const current = p.steps.find((s) => s.state === 'running' || s.state === 'awaiting-retry');
    const what = current ? STEP_TITLES[current.name] : p.state;
    const took = elapsed(p, now);
    let line = `${p.language.padEnd(8)} ${bar} ${done}/${p.steps.length}  ${what.padEnd(24)} ${took === undefined ? '    ' : clock(took).padStart(5)}`;
    if (current?.state === 'awaiting-retry') line += `  waiting for retry: ${firstLine(current.error ?? 'failed')}`;
    else if (current && details.get(p.language)) line += `  ${details.get(p.language)}`;
    line = line.trimEnd();
    lines.push(line.length > width ? `${line.slice(0, width - 1)}…` : line);
  }
  return lines;
}

/** The running step's heartbeat details of one child build, as `phase: last line`. */
async function heartbeatOf(handle: WorkflowHandle, workflowId: string): Promise<string | undefined> {
  const described = await handle.client.getHandle(workflowId).describe();
  for (const a of described.raw.pendingActivities ?? []) {
    const payload = a.heartbeatDetails?.payloads?.[0];
    if (!payload) continue;
    const hb = defaultPayloadConverter.fromPayload<{ phase?: string; lastLine?: string }>(payload as never);
    return [hb.phase, hb.lastLine].filter(Boolean).join(': ').replace(/\s+/g, ' ');
  }
  return undefined;
}

/** Redraws the live block in place on a terminal (ANSI cursor movement). */
export function liveReporter(
  handle: WorkflowHandle,
  stream: NodeJS.WriteStream,
  resumeHint?: string,
): { update(all: LanguageProgress[]): Promise<void>; finish(): void } {
  let drawn = 0;
  let last: string[] = [];
  const details = new Map<string, string>();
  const draw = (lines: string[]) => {
    let out = drawn ? `\x1b[${drawn}A` : '';
    for (const l of lines) out += `\r\x1b[2K${l}\n`;
    stream.write(out);
    drawn = lines.length;
    last = lines;
  };
  return {
    async update(all) {
      await Promise.all(
        all.map(async (p) => {
          if (p.state !== 'running') return details.delete(p.language);
          const d = await heartbeatOf(handle, p.workflowId).catch(() => undefined);
          if (d) details.set(p.language, d);
          else details.delete(p.language);
        }),
      );
      const lines = renderLive(all, Date.now(), details, Math.max(40, (stream.columns || 100) - 1));
      if (resumeHint && all.some((p) => p.state === 'awaiting-retry')) lines.push(resumeHint);
      draw(lines);
    },
    finish() {
      if (drawn) draw(last);
    },
  };
}
