import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { LanguageProgress } from './types';

/** Every language's step states; the parent answers with all of its children's. */
export const progressQuery = defineQuery<LanguageProgress[]>('progress');

/** Runs the failed step again after the operator fixed its cause. Answers which step restarts. */
export const retryStepUpdate = defineUpdate<{ language: string; step: string }, [{ step?: string }]>('retryStep');

/** Stops a build that is waiting for a retry. */
export const abortUpdate = defineUpdate<{ language: string; aborted: boolean }, []>('abort');

/** A child's progress, sent to its parent at every change so the parent can aggregate. */
export const childProgressSignal = defineSignal<[LanguageProgress]>('childProgress');
