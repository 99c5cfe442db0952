import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { BuildSpec } from '../src/pipeline/build-spec';
import type { LanguageProgress } from './types';

/** Every language's step states; the parent answers with all of its children's. */
export const progressQuery = defineQuery<LanguageProgress[]>('progress');

/**
 * Runs the failed step again after the operator fixed its cause. Answers which step restarts.
 * With `spec` (`resume --reload-config`), the build takes that spec from now on and goes through
 * its steps again from the first: the ones whose inputs did not change are reused at once.
 */
export const retryStepUpdate = defineUpdate<{ language: string; step: string }, [{ step?: string; spec?: BuildSpec }]>(
  'retryStep',
);

/** What the build builds: the spec it was started with, or the one a reload gave it. */
export const specQuery = defineQuery<BuildSpec | undefined>('spec');

/** The parent's half of a reload: children it starts from now on, and the closing listing, use `spec`. */
export const replaceSpecUpdate = defineUpdate<{ languages: string[] }, [BuildSpec]>('replaceSpec');

/** Stops a build that is waiting for a retry. */
export const abortUpdate = defineUpdate<{ language: string; aborted: boolean }, []>('abort');

/** A child's progress, sent to its parent at every change so the parent can aggregate. */
export const childProgressSignal = defineSignal<[LanguageProgress]>('childProgress');
