import { defaultPayloadConverter, type WorkflowHandle } from '@temporalio/client';
import { progressQuery } from '../../workflows/messages';
import type { LanguageProgress, Step } from '../../workflows/types';

/**
 * How often an activity of `type` was scheduled in a workflow's history, and the attempts each
 * made (Temporal records one started event per scheduled activity, carrying its last attempt).
 */
export async function activityRuns(handle: WorkflowHandle, type: string): Promise<number[]> {
  const history = await handle.fetchHistory();
  const scheduled = new Set<string>();
  const attempts: number[] = [];
  for (const e of history.events ?? []) {
    if (e.activityTaskScheduledEventAttributes?.activityType?.name === type) scheduled.add(String(e.eventId));
    const started = e.activityTaskStartedEventAttributes;
    if (started && scheduled.has(String(started.scheduledEventId))) attempts.push(started.attempt ?? 0);
  }
  return attempts;
}

/** Polls `fn` every second until it returns a value. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 1000));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** The first ActivityTaskCompleted event of an activity of `type` in a workflow's history. */
export async function completedActivity(handle: WorkflowHandle, type: string) {
  const events = (await handle.fetchHistory()).events ?? [];
  const scheduled = new Set(
    events
      .filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === type)
      .map((e) => String(e.eventId)),
  );
  return events.find(
    (e) =>
      e.activityTaskCompletedEventAttributes &&
      scheduled.has(String(e.activityTaskCompletedEventAttributes.scheduledEventId)),
  );
}

/** The result of the first completed activity of `type` in a workflow's history. */
export async function activityResult<T>(handle: WorkflowHandle, type: string): Promise<T | undefined> {
  const payload = (await completedActivity(handle, type))?.activityTaskCompletedEventAttributes?.result?.payloads?.[0];
  return payload ? defaultPayloadConverter.fromPayload<T>(payload as never) : undefined;
}

/** Waits (polling the `progress` query) until the build's `step` is running. */
export async function waitForRunningStep(
  handle: WorkflowHandle,
  step: Step,
  timeoutMs = 10 * 60 * 1000,
): Promise<void> {
  await waitFor(
    `the ${step} step to run`,
    async () => {
      const [p]: LanguageProgress[] = await handle.query(progressQuery);
      return p?.steps.find((s) => s.name === step)?.state === 'running' ? true : undefined;
    },
    timeoutMs,
  );
}
