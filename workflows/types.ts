/**
 * Types shared by the workflows, the activities and the CLI. Pure types: workflow code imports
 * this file, so it must stay free of runtime dependencies.
 */
import type { BuildSpec } from '../src/pipeline/build-spec';

/** The steps of one image, in order. `allocate` checks inputs and prepares the workspace. */
export const STEPS = ['allocate', 'base', 'runtime', 'operator', 'verify', 'image', 'boot', 'upload'] as const;
export type ImageStep = (typeof STEPS)[number];

/** The steps of the guest kernel, in order (the `createKernel` workflow). */
export const KERNEL_STEPS = ['kernel-source', 'kernel-config', 'kernel-build', 'kernel-upload'] as const;
export type KernelStep = (typeof KERNEL_STEPS)[number];

export type Step = ImageStep | KernelStep;

/** The name the kernel goes by where languages are listed (progress, child workflow IDs). */
export const KERNEL = 'kernel';

export const STEP_TITLES: Record<Step, string> = {
  allocate: 'allocate workspace',
  base: 'debootstrap base',
  runtime: 'install runtime',
  operator: 'install operator + unit',
  verify: 'verify versions',
  image: 'make ext4 image',
  boot: 'boot in a microVM',
  upload: 'upload',
  'kernel-source': 'kernel source package',
  'kernel-config': 'configure kernel',
  'kernel-build': 'build vmlinux',
  'kernel-upload': 'upload kernel',
};

/**
 * Error types retries cannot fix (a checksum mismatch, a bad operator binary, a build for another
 * host): an activity failing with one pauses the build at once, with its message.
 */
export const NON_RETRYABLE_ERRORS = [
  'ChecksumMismatch',
  'InvalidOperatorBinary',
  'VerificationFailed',
  'InvalidInput',
  'ConfigError',
  'HostKeyMismatch',
  'PinnedFileMissing',
  'WrongBuildHost',
] as const;
export type NonRetryableError = (typeof NON_RETRYABLE_ERRORS)[number];

export type StepState = 'pending' | 'running' | 'done' | 'reused' | 'awaiting-retry' | 'aborted' | 'skipped';
export type BuildState = 'pending' | 'running' | 'awaiting-retry' | 'done' | 'aborted' | 'failed';

export interface StepProgress {
  name: Step;
  state: StepState;
  /** Artifact key the step produced or reused. */
  key?: string;
  attempts: number;
  startedAt?: string;
  durationMs?: number;
  /** Last error, one short message (no logs). */
  error?: string;
}

export interface LanguageProgress {
  language: string;
  workflowId: string;
  state: BuildState;
  steps: StepProgress[];
}

export interface BuildOptions {
  /** Task queue of the build host's worker (`rootfs-host-<alias>`). */
  hostTaskQueue: string;
  /** Attempts per step before the build pauses for the operator. Default 3. */
  maxAttempts?: number;
  /** First retry delay; doubles each attempt. Default 5 s. */
  retryInitialIntervalMs?: number;
  /** A step whose worker stops heartbeating this long is retried elsewhere. Default 60 s. */
  heartbeatTimeoutMs?: number;
  /** Longest a single step may run. Default 2 h. */
  stepTimeoutMs?: number;
  /** Upload the image to S3 at the end. Default true. */
  upload?: boolean;
  /**
   * The apt archive's state (InRelease sha256 per dist) pinned for the whole build by
   * createAllRootfs, so every image agrees on one base. Absent: each apt step reads it.
   */
  archive?: Record<string, string>;
}

export interface CreateRootfsInput {
  language: string;
  runTag: string;
  options: BuildOptions;
  /** What to build, fixed at the start (absent only in builds started before specs existed). */
  spec?: BuildSpec;
}

export interface ImageSummary {
  language: string;
  workflowId: string;
  state: BuildState;
  imageKey?: string;
  path?: string;
  sizeBytes?: number;
  sha256?: string;
  versions: string[];
  /** From the microVM's start to the operator's /health, when the image was booted. */
  bootMs?: number;
  /** The kernel it booted with. */
  kernelSha256?: string;
  /** Per step: ran, reused, or skipped. */
  steps: Partial<Record<Step, 'ran' | 'reused' | 'skipped'>>;
  /** Per step that ran or was reused: how long its last attempt took. */
  durationsMs?: Partial<Record<Step, number>>;
  s3Key?: string;
  /** Why a build that did not finish stopped (a failed or aborted child). */
  error?: string;
}

export interface CreateKernelInput {
  runTag: string;
  options: BuildOptions;
  /** The build's spec (with its kernel; no languages). */
  spec: BuildSpec;
}

export interface KernelSummary {
  workflowId: string;
  state: BuildState;
  kernelKey?: string;
  sha256?: string;
  sizeBytes?: number;
  /** `make kernelrelease`, e.g. 6.1.192. */
  release?: string;
  /** The package and version it was built from. */
  source?: string;
  steps: Partial<Record<Step, 'ran' | 'reused' | 'skipped'>>;
  durationsMs?: Partial<Record<Step, number>>;
  s3Key?: string;
  /** Why it did not finish. */
  error?: string;
}

export interface CreateAllRootfsInput {
  runTag: string;
  /** Default: every configured language, in the configured order. */
  languages?: string[];
  /** Children building at once. Default: all of them. */
  concurrency?: number;
  options: BuildOptions;
  /** What to build, fixed at the start; its languages are the build's when `languages` is absent. */
  spec?: BuildSpec;
}

export interface BucketListing {
  bucket: string;
  objects: number;
  totalBytes: number;
}

export interface CreateAllSummary {
  runTag: string;
  images: ImageSummary[];
  /** The guest kernel, when the build's spec has one. */
  kernel?: KernelSummary;
  bucket?: BucketListing;
}

/** Result of a step activity: its artifact key, whether it was reused, and small values (sizes, versions). */
export interface StepResult<D extends object = Record<string, unknown>> {
  key: string;
  reused: boolean;
  data: D;
}

/** A step the `probe` activity found finished, with what its own activity would have returned. */
export interface ProbedStep {
  step: ImageStep;
  result: StepResult | { operatorSha256: string };
  durationMs: number;
}

export type { BootData, ImageData, UploadData, VerifyData } from '../src/pipeline/step-data';

export const childWorkflowId = (runTag: string, language: string) => `${runTag}/${language}`;
export const parentWorkflowId = (runTag: string) => `${runTag}/all`;
