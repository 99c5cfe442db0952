import {
  ApplicationFailure,
  condition,
  ParentClosePolicy,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  startChild,
  workflowInfo,
} from '@temporalio/workflow';
import type { BuildActivities } from '../activities';
import type { BuildSpec } from '../src/pipeline/build-spec';
import { createKernel } from './create-kernel';
import { createRootfs, refuseOtherBuildHost, shortMessage } from './create-rootfs';
import { childProgressSignal, progressQuery, replaceSpecUpdate, specQuery } from './messages';
import {
  childWorkflowId,
  KERNEL,
  KERNEL_STEPS,
  STEPS,
  type CreateAllRootfsInput,
  type CreateAllSummary,
  type ImageSummary,
  type KernelSummary,
  type LanguageProgress,
} from './types';

/**
 * A failed child's reason for the parent's summary: the first line of its error, which names the
 * cause; a long one keeps its end, where the cause is ("… exited with 1: … No space left on device").
 */
function reasonLine(err: unknown): string {
  const line = shortMessage(err, 4000).split('\n')[0] ?? '';
  return line.length > 300 ? `${line.slice(0, 100)}…${line.slice(-199)}` : line;
}

/** Builds every language image as a child workflow, a few at a time, then lists the bucket. */
export async function createAllRootfs(input: CreateAllRootfsInput): Promise<CreateAllSummary> {
  const { runTag, options } = input;
  const light = proxyActivities<BuildActivities>({
    taskQueue: options.hostTaskQueue,
    startToCloseTimeout: '5 minutes',
    retry: { maximumAttempts: 5, initialInterval: options.retryInitialIntervalMs ?? 5000 },
  });

  let spec = input.spec;
  const languages = input.languages ?? (spec ? Object.keys(spec.languages) : (await light.plan()).languages);
  // All at once by default: their steps mostly download and write, and each waits at its boot for
  // the kernel, built beside them; a slot held there would keep the next image from starting.
  const concurrency = Math.max(1, input.concurrency ?? languages.length);
  /** A child's spec: its own language only, so its history holds what it builds and nothing else. */
  const childSpec = (language: string) =>
    spec ? { spec: { ...spec, languages: { [language]: spec.languages[language]! } } } : {};
  const pinned = () => (spec ? { spec } : {});
  // One archive state for every child: an archive publish during the build must not give two
  // children two different bases. When it cannot be read here, each child reads it (and pauses
  // for the operator if it cannot either). Histories from before this step replay without it.
  let childOptions = options;
  if (patched('archive-snapshot') && !options.archive) {
    const archive = await light.archiveSnapshot(pinned()).catch(() => undefined);
    if (archive) childOptions = { ...options, archive };
  }
  // The kernel is built beside the images when the spec has one (every build started since the
  // pipeline builds its kernel; older histories have none and replay without it).
  const withKernel = !!spec?.kernel;
  const progress = new Map<string, LanguageProgress>(
    [...(withKernel ? [KERNEL] : []), ...languages].map((name) => [
      name,
      {
        language: name,
        workflowId: childWorkflowId(runTag, name),
        state: 'pending',
        steps: (name === KERNEL ? KERNEL_STEPS : STEPS).map((step) => ({
          name: step,
          state: 'pending' as const,
          attempts: 0,
        })),
      },
    ]),
  );
  const render = () =>
    setCurrentDetails(
      [`**${runTag}**`, '', '| language | state | step |', '|---|---|---|']
        .concat(
          [...progress.values()].map((p) => {
            const current = p.steps.find((s) => s.state === 'running' || s.state === 'awaiting-retry');
            return `| ${p.language} | ${p.state} | ${current ? `${current.name} (${current.state})` : ''} |`;
          }),
        )
        .join('\n'),
    );
  setHandler(progressQuery, () => [...progress.values()]);
  setHandler(specQuery, () => spec);
  setHandler(
    replaceSpecUpdate,
    (next: BuildSpec) => {
      spec = next;
      return { languages };
    },
    {
      validator: (next) => {
        if (!spec)
          throw new Error(
            `${workflowInfo().workflowId} was started without a pinned configuration, so it cannot take a new one`,
          );
        const names = Object.keys(next.languages ?? {});
        const missing = languages.filter((l) => !names.includes(l));
        if (missing.length)
          throw new Error(
            `the new configuration has no ${missing.join(', ')}: a build's languages stay those it started with`,
          );
        refuseOtherBuildHost(spec, next);
      },
    },
  );
  setHandler(childProgressSignal, (p) => {
    if (progress.has(p.language)) progress.set(p.language, p);
    render();
  });
  render();

  const results: ImageSummary[] = [];
  let running = 0;
  // Every waiting child's condition turned true in the same activation, before any of them
  // counted itself: all started at once, whatever the concurrency. Each now checks again when it
  // wakes. Histories from before the fix replay without it.
  const bounded = patched('bounded-concurrency');
  const buildOne = async (language: string) => {
    do await condition(() => running < concurrency);
    while (bounded && running >= concurrency);
    running++;
    try {
      const child = await startChild(createRootfs, {
        workflowId: childWorkflowId(runTag, language),
        args: [{ language, runTag, options: childOptions, ...childSpec(language) }],
        staticSummary: `${language} image`,
        parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
      });
      results.push(await child.result());
    } catch (err) {
      const p = progress.get(language)!;
      if (p.state !== 'aborted') p.state = 'failed';
      render();
      results.push({
        language,
        workflowId: childWorkflowId(runTag, language),
        state: p.state,
        versions: [],
        steps: {},
        error: reasonLine(err),
      });
    } finally {
      running--;
    }
  };
  let kernel: KernelSummary | undefined;
  const buildKernel = async () => {
    try {
      const child = await startChild(createKernel, {
        workflowId: childWorkflowId(runTag, KERNEL),
        args: [{ runTag, options: childOptions, spec: { ...spec!, languages: {} } }],
        staticSummary: 'guest kernel',
        parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
      });
      kernel = await child.result();
    } catch (err) {
      const p = progress.get(KERNEL)!;
      if (p.state !== 'aborted') p.state = 'failed';
      render();
      kernel = { workflowId: childWorkflowId(runTag, KERNEL), state: p.state, steps: {}, error: reasonLine(err) };
    }
  };
  // The kernel does not count against the image concurrency: its build is one long make.
  await Promise.all([...(withKernel ? [buildKernel()] : []), ...languages.map(buildOne)]);

  const bucket = (options.upload ?? true) ? await light.listBucket(pinned()) : undefined;
  const images = languages.map((l) => results.find((r) => r.language === l)!);
  const failed = [
    ...(kernel && kernel.state !== 'done' ? [{ language: KERNEL, state: kernel.state, error: kernel.error }] : []),
    ...images.filter((i) => i.state !== 'done'),
  ];
  if (failed.length) {
    throw ApplicationFailure.nonRetryable(
      `${failed.map((f) => `${f.language} ${f.state}${f.error ? ` (${f.error})` : ''}`).join(', ')} (run ${runTag}, ${workflowInfo().workflowId})`,
      'BuildsNotDone',
      { runTag, images, bucket, ...(kernel ? { kernel } : {}) },
    );
  }
  return { runTag, images, bucket, ...(kernel ? { kernel } : {}) };
}
