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
import { createRootfs } from './create-rootfs';
import { childProgressSignal, progressQuery } from './messages';
import { childWorkflowId, STEPS, type CreateAllRootfsInput, type CreateAllSummary, type ImageSummary, type LanguageProgress } from './types';

/** Builds every language image as a child workflow, a few at a time, then lists the bucket. */
export async function createAllRootfs(input: CreateAllRootfsInput): Promise<CreateAllSummary> {
  const { runTag, options } = input;
  const concurrency = Math.max(1, input.concurrency ?? 2);
  const light = proxyActivities<BuildActivities>({
    taskQueue: options.hostTaskQueue,
    startToCloseTimeout: '5 minutes',
    retry: { maximumAttempts: 5, initialInterval: options.retryInitialIntervalMs ?? 5000 },
  });

  const languages = input.languages ?? (await light.plan()).languages;
  // One archive state for every child: an archive publish during the build must not give two
  // children two different bases. When it cannot be read here, each child reads it (and pauses
  // for the operator if it cannot either). Histories from before this step replay without it.
  let childOptions = options;
  if (patched('archive-snapshot') && !options.archive) {
    const archive = await light.archiveSnapshot().catch(() => undefined);
    if (archive) childOptions = { ...options, archive };
  }
  const progress = new Map<string, LanguageProgress>(
    languages.map((language) => [
      language,
      {
        language,
        workflowId: childWorkflowId(runTag, language),
        state: 'pending',
        steps: STEPS.map((name) => ({ name, state: 'pending' as const, attempts: 0 })),
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
  setHandler(childProgressSignal, (p) => {
    if (progress.has(p.language)) progress.set(p.language, p);
    render();
  });
  render();

  const results: ImageSummary[] = [];
  let running = 0;
  const buildOne = async (language: string) => {
    await condition(() => running < concurrency);
    running++;
    try {
      const child = await startChild(createRootfs, {
        workflowId: childWorkflowId(runTag, language),
        args: [{ language, runTag, options: childOptions }],
        staticSummary: `${language} image`,
        parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
      });
      results.push(await child.result());
    } catch (err) {
      const p = progress.get(language)!;
      if (p.state !== 'aborted') p.state = 'failed';
      render();
      results.push({ language, workflowId: childWorkflowId(runTag, language), state: p.state, versions: [], steps: {} });
      void err;
    } finally {
      running--;
    }
  };
  await Promise.all(languages.map(buildOne));

  const bucket = (options.upload ?? true) ? await light.listBucket() : undefined;
  const images = languages.map((l) => results.find((r) => r.language === l)!);
  const failed = images.filter((i) => i.state !== 'done');
  if (failed.length) {
    throw ApplicationFailure.nonRetryable(
      `${failed.map((f) => `${f.language} ${f.state}`).join(', ')} (run ${runTag}, ${workflowInfo().workflowId})`,
      'BuildsNotDone',
      { runTag, images, bucket },
    );
  }
  return { runTag, images, bucket };
}
