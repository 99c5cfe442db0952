/**
 * The S3 image store: publishes the kernel and images to one bucket and syncs them to hosts.
 * Bucket and workspace layout: layout.ts. Operations take a StoreContext (client, bucket
 * config, workspace, and transfer settings); results are plain data, and format.ts turns them
 * into text.
 */
export {
  createClient,
  DEFAULT_RETRY,
  statObject,
  type CreateClientOptions,
  type Credentials,
  type ObjectStat,
  type RetryPolicy,
  type S3Access,
  type StoreContext,
} from './client';
export { StoreError, type StoreErrorKind } from './errors';
export {
  DEFAULT_LANGUAGE,
  DEFAULT_LINK,
  IMAGE_KEY_PATTERN,
  imageKey,
  KERNEL_CONFIG_KEY,
  KERNEL_KEY,
  Manifest,
  manifestKey,
  uploadStateDir,
  type ImageFacts,
} from './layout';
export { digestFile, fileDigest, type FileDigest } from './digest';
export { listBucket, readManifest, summarize, type ListedObject, type Listing } from './list';
export { abortIncompleteUploads, choosePartSize, DEFAULT_PART_SIZE, MIN_PART_SIZE } from './multipart';
export {
  checkLanguage,
  uploadAll,
  uploadImage,
  uploadKernel,
  uploadKernelConfig,
  uploadSingle,
  type UploadOptions,
  type UploadResult,
} from './upload';
export { syncDown, type SyncedFile, type SyncOptions, type SyncReport } from './download';
export { SparseWriter } from './sparse';
export {
  bootstrapScript,
  bucketPins,
  bucketUrl,
  fallbackBase,
  shellQuote,
  type BootstrapConfig,
  type BootstrapOptions,
  type BucketPins,
} from './bootstrap';
export {
  abortIncompleteRule,
  bucketSetup,
  iamPolicy,
  type BucketSetupOptions,
  type IamPolicy,
  type PolicyOptions,
} from './policy';
export {
  formatListing,
  formatPlan,
  formatSeconds,
  formatSync,
  formatTimestamp,
  formatUploads,
  humanSize,
  printable,
  terminalJson,
} from './format';
export {
  formatTransfer,
  terminalProgress,
  track,
  type ProgressSink,
  type TransferAction,
  type TransferStatus,
} from './progress';
export {
  planBlocks,
  publishBlocks,
  pruneStore,
  readHead,
  rollback,
  shortName,
  syncBlocks,
  type BlockPlan,
  type Head,
  type PruneReport,
  type Rollback,
} from './blocks';
