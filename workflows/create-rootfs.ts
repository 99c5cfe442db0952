import type { ActivityOptions, SearchAttributeUpdatePair } from '@temporalio/common';
import {
  ActivityFailure,
  ApplicationFailure,
  ChildWorkflowFailure,
  condition,
  getExternalWorkflowHandle,
  isCancellation,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { BuildActivities } from '../activities';
import { LANGUAGE, STATE, STEP } from '../src/temporal/search-attributes';
import type { BuildSpec } from '../src/pipeline/build-spec';
import { abortUpdate, childProgressSignal, progressQuery, retryStepUpdate, specQuery } from './messages';
import {
  NON_RETRYABLE_ERRORS,
  STEP_TITLES,
  STEPS,
  type CreateRootfsInput,
  type ImageSummary,
  type LanguageProgress,
  type Step,
  type StepProgress,
} from './types';

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

/**
 * A reload may change what a build builds, not where: its steps go to the task queue of the build
 * host it was started for, whose worker refuses a spec for another host.
 */
export function refuseOtherBuildHost(current: BuildSpec, next: BuildSpec): void {
  const describe = (h: BuildSpec['buildHost']) =>
    h.kind === 'local' ? h.alias : `${h.alias} (${h.user}@${h.host}:${h.port}, ${h.hostKeySha256})`;
  if (describe(current.buildHost) !== describe(next.buildHost)) {
    throw new Error(
      `a build stays on the build host it was started for (${describe(current.buildHost)}), not ${describe(next.buildHost)}: start a new build there`,
    );
  }
}

/** Thrown inside the workflow when a retry brings a new spec: the steps start over with it. */
class SpecReloaded {}

/** Builds one language image, step by step; a failed step waits for `retryStep` instead of failing. */
export async function createRootfs(input: CreateRootfsInput): Promise<ImageSummary> {
  const { language, options } = input;
  let spec: BuildSpec | undefined = input.spec;
  let reloaded: BuildSpec | undefined;
  let archiveSnapshot = options.archive;
  const info = workflowInfo();
  const progress: LanguageProgress = {
    language,
    workflowId: info.workflowId,
    state: 'running',
    steps: STEPS.map((name): StepProgress => ({ name, state: 'pending', attempts: 0 })),
  };
  let retryRequested = false;
  let abortRequested = false;
  let waitingOn: Step | undefined;

  setHandler(progressQuery, () => [progress]);
  setHandler(specQuery, () => spec);
  setHandler(
    retryStepUpdate,
    (req) => {
      retryRequested = true;
      if (req.spec) reloaded = req.spec;
      return { language, step: req.spec ? STEPS[0] : waitingOn! };
    },
    {
      validator: (req) => {
        if (!waitingOn) throw new Error(`${language} is ${progress.state}: no step is waiting for a retry`);
        if (req.step && req.step !== waitingOn)
          throw new Error(`${language} is waiting on step ${waitingOn}, not ${req.step}`);
        if (req.spec) {
          if (!spec)
            throw new Error(
              `${language} was started without a pinned configuration, so it cannot take a new one: start it again`,
            );
          const names = Object.keys(req.spec.languages ?? {});
          if (names.length !== 1 || names[0] !== language)
            throw new Error(`the new configuration must be for ${language} alone, not ${names.join(', ') || 'none'}`);
          refuseOtherBuildHost(spec, req.spec);
        }
      },
    },
  );
  setHandler(
    abortUpdate,
    () => {
      abortRequested = true;
      return { language, aborted: true };
    },
    {
      validator: () => {
        if (!waitingOn)
          throw new Error(`${language} is ${progress.state}: only a build waiting for a retry can be aborted`);
      },
    },
  );

  const parent = info.parent ? getExternalWorkflowHandle(info.parent.workflowId, info.parent.runId) : undefined;
  const publish = async (step?: Step) => {
    const attributes: SearchAttributeUpdatePair[] = [
      { key: LANGUAGE, value: language },
      { key: STATE, value: progress.state },
    ];
    if (step) attributes.push({ key: STEP, value: step });
    upsertSearchAttributes(attributes);
    setCurrentDetails(detailsTable(progress));
    // The parent only aggregates: losing one update must never fail the build.
    if (parent) await parent.signal(childProgressSignal, progress).catch(() => undefined);
  };

  const acts = proxyActivities<BuildActivities>({
    taskQueue: options.hostTaskQueue,
    startToCloseTimeout: options.stepTimeoutMs ?? 2 * 60 * 60 * 1000,
    heartbeatTimeout: options.heartbeatTimeoutMs ?? 60_000,
    retry: {
      maximumAttempts: options.maxAttempts ?? 3,
      initialInterval: options.retryInitialIntervalMs ?? 5000,
      backoffCoefficient: 2,
      nonRetryableErrorTypes: [...NON_RETRYABLE_ERRORS],
    },
  });

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
    for (;;) {
      record.state = 'running';
      record.attempts++;
      record.startedAt = new Date().toISOString();
      progress.state = 'running';
      await publish(step);
      const started = Date.now();
      try {
        const result = await activity.executeWithOptions(
          { summary: `${language}: ${STEP_TITLES[step]}`, activityId: `${step}-${record.attempts}` },
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
            `${language}: aborted by the operator at step ${step}: ${record.error}`,
            'Aborted',
          );
        }
        if (reloaded) {
          // The archive state was read for the old base: with another base (a mirror, a suite), read it again.
          if (spec && JSON.stringify(spec.base) !== JSON.stringify(reloaded.base)) archiveSnapshot = undefined;
          spec = reloaded;
          reloaded = undefined;
          throw new SpecReloaded();
        }
      }
    }
  }

  /** The steps in order. Every activity gets the spec: what it builds does not depend on the worker. */
  async function steps() {
    const pinned = spec ? { spec } : {};
    const { operatorSha256 } = await runStep('allocate', acts.allocate, () => ({ language, ...pinned }));
    const archive = archiveSnapshot ? { archive: archiveSnapshot } : {};
    const base = await runStep('base', acts.base, () => ({ language, ...archive, ...pinned }));
    const runtime = await runStep('runtime', acts.runtime, () => ({
      language,
      baseKey: base.key,
      ...archive,
      ...pinned,
    }));
    const operator = await runStep('operator', acts.operator, () => ({
      language,
      runtimeKey: runtime.key,
      operatorSha256,
      ...pinned,
    }));
    const verify = await runStep('verify', acts.verify, () => ({ language, operatorKey: operator.key, ...pinned }));
    const image = await runStep('image', acts.image, () => ({
      language,
      verifyKey: verify.key,
      operatorKey: operator.key,
      ...pinned,
    }));
    let s3Key: string | undefined;
    if (options.upload ?? true) {
      const uploaded = await runStep('upload', acts.upload, () => ({
        language,
        imageKey: image.key,
        versions: verify.data.versions,
        ...pinned,
      }));
      s3Key = uploaded.data.s3Key;
    } else {
      progress.steps.find((s) => s.name === 'upload')!.state = 'skipped';
    }
    return { verify, image, s3Key };
  }

  let built: Awaited<ReturnType<typeof steps>>;
  for (;;) {
    try {
      built = await steps();
      break;
    } catch (err) {
      if (!(err instanceof SpecReloaded)) throw err;
      // The new spec may change any step: go through all of them again; unchanged ones are reused.
      for (const s of progress.steps) s.state = 'pending';
    }
  }
  const { verify, image, s3Key } = built;
  progress.state = 'done';
  await publish();

  const ran = (s: StepProgress) => (s.state === 'reused' ? 'reused' : s.state === 'skipped' ? 'skipped' : 'ran');
  return {
    language,
    workflowId: info.workflowId,
    state: 'done',
    imageKey: image.key,
    path: image.data.path,
    sizeBytes: image.data.sizeBytes,
    sha256: image.data.sha256,
    versions: verify.data.versions,
    steps: Object.fromEntries(progress.steps.filter((s) => s.name !== 'allocate').map((s) => [s.name, ran(s)])),
    durationsMs: Object.fromEntries(
      progress.steps
        .filter((s) => s.name !== 'allocate' && s.durationMs !== undefined)
        .map((s) => [s.name, s.durationMs!]),
    ),
    s3Key,
  };
}
