import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/**
 * Search attributes the build workflows upsert, so Temporal Web can filter builds
 * ("all builds awaiting retry" is `RootfsState = "awaiting-retry"`). A server must have them
 * registered before a workflow sets them: the dev stack and the test bed do that at start.
 */
export const LANGUAGE = defineSearchAttributeKey('RootfsLanguage', SearchAttributeType.KEYWORD);
export const STEP = defineSearchAttributeKey('RootfsStep', SearchAttributeType.KEYWORD);
export const STATE = defineSearchAttributeKey('RootfsState', SearchAttributeType.KEYWORD);

export const SEARCH_ATTRIBUTES = [LANGUAGE, STEP, STATE];

/** `--search-attribute Name=Keyword` arguments for `temporal server start-dev`. */
export function devServerSearchAttributeArgs(): string[] {
  return SEARCH_ATTRIBUTES.flatMap((key) => ['--search-attribute', `${key.name}=Keyword`]);
}
