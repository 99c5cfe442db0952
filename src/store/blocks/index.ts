/** The block store: see docs/block-store.md. */
export {
  BLOCK_BYTES,
  headKey,
  indexKey,
  packKey,
  shortName,
  type Head,
  type HeadVersion,
  type IndexManifest,
} from './format';
export {
  planBlocks,
  shareFrames,
  syncBlocks,
  syncMany,
  DEFAULT_KEEP_LOCAL_VERSIONS,
  type BlockPlan,
  type BlockSyncResult,
} from './fetch';
export { currentManifest, listHeads, readHead } from './objects';
export { publishBlocks, DEFAULT_KEEP_VERSIONS, type PublishBlocksInput, type PublishBlocksResult } from './publish';
export { pruneStore, PRUNE_GRACE_MS, type PruneReport } from './prune';
export { readRecord } from './records';
export { rollback, type Rollback } from './versions';
