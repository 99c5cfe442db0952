import type { ActivityOptions, SearchAttributeUpdatePair } from '@temporalio/common';
import {
  ActivityFailure,
  ApplicationFailure,
  ChildWorkflowFailure,
  condition,
  getExternalWorkflowHandle,
  isCancellation,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { LANGUAGE, STATE, STEP } from '../src/temporal/search-attributes';
import type { BuildSpec } from '../src/pipeline/build-spec';
import { abortUpdate, childProgressSignal, progressQuery, retryStepUpdate, specQuery } from './messages';
import { STEP_TITLES, type LanguageProgress, type ProbedStep, type Step, type StepProgress } from './types';

/**
 * The step contract every build workflow shares (an image's, the kernel's): each step runs as
 * one activity; a failed one waits for the operator's `retryStep` (or `abort`) instead of
 * failing the workflow; progress goes to a query, Temporal Web and the parent.
 */

/**
 * The message of the error an activity or child workflow failed with, at most `max` characters:
 * their failures wrap it. Its own causes are not followed: the error's message is the sentence
 * written for people, its cause a library's raw error (`connect ECONNREFUSED …`).
 */
export function shortMessage(err: unknown, max = 600): string {
  let e: unknown = err;
  while ((e instanceof ActivityFailure || e instanceof ChildWorkflowFailure) && e.cause) e = e.cause;
  const text = e instanceof Error ? e.message : String(e);
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

function detailsTable(p: LanguageProgress): string {
  const rows = p.steps.map(
    (s) =>
      `| ${STEP_TITLES[s.name]} | ${s.state} | ${s.durationMs === undefined ? '' : `${(s.durationMs / 1000).toFixed(1)} s`} | ${s.attempts} | ${(s.error ?? '').replace(/\|/g, '\\|').replace(/\n/g, ' ')} |`,
  );
  return [
    `**${p.language}**: ${p.state}`,
    '',
    '| step | state | took | attempts | last error |',
    '|---|---|---|---|---|',
    ...rows,
  ].join('\n');
}

/** Thrown inside the workflow when a retry brings a new spec: the steps start over with it. */
export class SpecReloaded {}

export interface StepRunnerOptions {
  /** The language, or `kernel`: in progress, search attributes and messages. */
  name: string;
  steps: readonly Step[];
  /** The build's spec now (a reload replaces it). */
  spec(): BuildSpec | undefined;
  /** Refuses a spec a retry brings (throws with the reason); runs in the update's validator. */
  validateSpec(next: BuildSpec): void;
  /** Takes the spec a retry brought, just before the steps start over. */
  takeSpec(next: BuildSpec): void;
}

/** Sets the build's handlers up and returns `runStep` and the progress it keeps. */
export function stepRunner(opts: StepRunnerOptions) {
  const { name } = opts;
  const info = workflowInfo();
  const progress: LanguageProgress = {
    language: name,
    workflowId: info.workflowId,
    state: 'running',
    steps: opts.steps.map((step): StepProgress => ({ name: step, state: 'pending', attempts: 0 })),
  };
  let retryRequested = false;
  let abortRequested = false;
  let reloaded: BuildSpec | undefined;
  let waitingOn: Step | undefined;
  /** Steps a probe found finished: `runStep` answers them without an activity. */
  const known = new Map<Step, ProbedStep['result']>();

  setHandler(progressQuery, () => [progress]);
  setHandler(specQuery, () => opts.spec());
  setHandler(
    retryStepUpdate,
    (req) => {
      retryRequested = true;
      if (req.spec) reloaded = req.spec;
      return { language: name, step: req.spec ? opts.steps[0]! : waitingOn! };
    },
    {
      validator: (req) => {
        if (!waitingOn) throw new Error(`${name} is ${progress.state}: no step is waiting for a retry`);
        if (req.step && req.step !== waitingOn)
          throw new Error(`${name} is waiting on step ${waitingOn}, not ${req.step}`);
        if (req.spec) {
          if (!opts.spec())
            throw new Error(
              `${name} was started without a pinned configuration, so it cannot take a new one: start it again`,
            );
          opts.validateSpec(req.spec);
        }
      },
    },
  );
  setHandler(
    abortUpdate,
    () => {
      abortRequested = true;
      return { language: name, aborted: true };
    },
    {
      validator: () => {
        if (!waitingOn)
          throw new Error(`${name} is ${progress.state}: only a build waiting for a retry can be aborted`);
      },
    },
  );

  const parent = info.parent ? getExternalWorkflowHandle(info.parent.workflowId, info.parent.runId) : undefined;
  const publish = async (step?: Step) => {
    const attributes: SearchAttributeUpdatePair[] = [
      { key: LANGUAGE, value: name },
      { key: STATE, value: progress.state },
    ];
    if (step) attributes.push({ key: STEP, value: step });
    upsertSearchAttributes(attributes);
    setCurrentDetails(detailsTable(progress));
    // The parent only aggregates: losing one update must never fail the build.
    if (parent) await parent.signal(childProgressSignal, progress).catch(() => undefined);
  };

  /**
   * Runs one step; on failure waits for `retryStep` (or `abort`) and runs it again. `input` is
   * called for every attempt. A retry with a new spec ends the attempt with SpecReloaded.
   */
  async function runStep<I, R extends object>(
    step: Step,
    activity: { executeWithOptions(options: ActivityOptions, args: [I]): Promise<R> },
    input: () => NoInfer<I>,
  ): Promise<R> {
    const record = progress.steps.find((s) => s.name === step)!;
    const found = known.get(step);
    if (found) {
      known.delete(step);
      return found as R;
    }
    for (;;) {
      record.state = 'running';
      record.attempts++;
      record.startedAt = new Date().toISOString();
      progress.state = 'running';
      await publish(step);
      const started = Date.now();
      try {
        const result = await activity.executeWithOptions(
          { summary: `${name}: ${STEP_TITLES[step]}`, activityId: `${step}-${record.attempts}` },
          [input()],
        );
        // Every step but allocate returns a StepResult: its key, and whether it was reused.
        record.state = 'reused' in result && result.reused === true ? 'reused' : 'done';
        record.key = 'key' in result && typeof result.key === 'string' ? result.key : undefined;
        record.durationMs = Date.now() - started;
        record.error = undefined;
        await publish(step);
        return result;
      } catch (err) {
        if (isCancellation(err)) throw err;
        record.state = 'awaiting-retry';
        record.error = shortMessage(err);
        record.durationMs = Date.now() - started;
        progress.state = 'awaiting-retry';
        waitingOn = step;
        await publish(step);
        await condition(() => retryRequested || abortRequested);
        waitingOn = undefined;
        retryRequested = false;
        if (abortRequested) {
          record.state = 'aborted';
          progress.state = 'aborted';
          await publish(step);
          throw ApplicationFailure.nonRetryable(
            `${name}: aborted by the operator at step ${step}: ${record.error}`,
            'Aborted',
          );
        }
        if (reloaded) {
          opts.takeSpec(reloaded);
          reloaded = undefined;
          throw new SpecReloaded();
        }
      }
    }
  }

  /**
   * Takes the steps a probe found finished as reused (or done, for allocate) and publishes once:
   * `runStep` then returns their results without running their activities.
   */
  async function preset(steps: ProbedStep[]): Promise<void> {
    if (!steps.length) return;
    for (const { step, result, durationMs } of steps) {
      const record = progress.steps.find((s) => s.name === step)!;
      record.state = 'reused' in result && result.reused ? 'reused' : 'done';
      record.key = 'key' in result ? result.key : undefined;
      record.attempts++;
      record.durationMs = durationMs;
      record.error = undefined;
      known.set(step, result);
    }
    await publish(steps[steps.length - 1]!.step);
  }

  /** Runs `steps` to the end; a reload starts them over (unchanged steps are reused). */
  async function runAll<T>(steps: () => Promise<T>): Promise<T> {
    for (;;) {
      try {
        const result = await steps();
        progress.state = 'done';
        await publish();
        return result;
      } catch (err) {
        if (!(err instanceof SpecReloaded)) throw err;
        for (const s of progress.steps) s.state = 'pending';
        known.clear();
      }
    }
  }

  /** What each step did, for the summary: ran, reused or skipped; and how long it took. */
  function outcome(skip: Step[] = []) {
    const shown = progress.steps.filter((s) => !skip.includes(s.name));
    const ran = (s: StepProgress) => (s.state === 'reused' ? 'reused' : s.state === 'skipped' ? 'skipped' : 'ran');
    return {
      steps: Object.fromEntries(shown.map((s) => [s.name, ran(s)])),
      durationsMs: Object.fromEntries(
        shown.filter((s) => s.durationMs !== undefined).map((s) => [s.name, s.durationMs!]),
      ),
    };
  }

  const skip = (step: Step) => {
    progress.steps.find((s) => s.name === step)!.state = 'skipped';
  };

  return { progress, runStep, runAll, outcome, skip, preset };
}
