export { createClient, describeError, StoreError, type StoreOptions } from './client';
export { digestFile } from './digest';
export { checkLanguage, imagesDir, localManifestPath, uploadAll, uploadImage, uploadSingle, type StoreContext } from './images';
export { imageKey, IMAGE_KEY_PATTERN, KERNEL_KEY, Manifest, manifestKey } from './layout';
export { formatListing, listBucket, summarize, type Listing } from './list';
export { syncDown, type SyncReport } from './download';
export { humanSize, silentProgress, terminalProgress, type TransferProgress } from './progress';
export { bucketSetup, iamPolicy } from './policy';
export { abortIncompleteUploads, uploadFile, type UploadOutcome } from './upload';
