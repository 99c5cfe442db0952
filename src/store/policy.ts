import {
  GetBucketLifecycleConfigurationCommand,
  PutBucketLifecycleConfigurationCommand,
  PutBucketVersioningCommand,
  type LifecycleRule,
} from '@aws-sdk/client-s3';
import type { S3Config } from '../config/schema';
import { send, type S3Access } from './client';
import { StoreError } from './errors';
import { KERNEL_CONFIG_KEY, KERNEL_KEY, MANIFEST_SUFFIX } from './layout';

export interface IamStatement {
  Sid: string;
  Effect: 'Allow';
  Action: string[];
  Resource: string[];
}

export interface IamPolicy {
  Version: '2012-10-17';
  Statement: IamStatement[];
}

export interface PolicyOptions {
  /** `read-only` for hosts that only download (and run the bootstrap script). Default read-write. */
  access?: 'read-write' | 'read-only';
  /** Adds what `bucketSetup` needs; grant it to an administrator rather than to the pipeline. */
  includeBucketSetup?: boolean;
  /** ARN partition: `aws`, `aws-cn`, `aws-us-gov`. */
  partition?: string;
}

/**
 * The least-privilege IAM policy for this tool on the configured bucket: exactly the actions
 * its requests need, on exactly its keys.
 *
 *   s3:ListBucket                  ListObjectsV2 (list, sync; HEAD of a missing key says 404, not 403)
 *   s3:GetObject                   GetObject, HeadObject
 *   s3:PutObject                   PutObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload
 *   s3:ListMultipartUploadParts    ListParts (resuming an interrupted upload)
 *   s3:AbortMultipartUpload        AbortMultipartUpload
 *   s3:ListBucketMultipartUploads  ListMultipartUploads (abortIncomplete)
 *   s3:DeleteObject                DeleteObject, only of the block store's indexes and packs (prune)
 *
 * The plain objects are never deleted; the block store's immutable indexes and packs are, once
 * no version kept needs them.
 */
export function iamPolicy(config: Pick<S3Config, 'bucket'> | string, opts: PolicyOptions = {}): IamPolicy {
  const bucket = typeof config === 'string' ? config : config.bucket;
  const bucketArn = `arn:${opts.partition ?? 'aws'}:s3:::${bucket}`;
  const objectArns = [
    KERNEL_KEY,
    `${KERNEL_KEY}${MANIFEST_SUFFIX}`,
    KERNEL_CONFIG_KEY,
    'rootfs-*.ext4',
    `rootfs-*.ext4${MANIFEST_SUFFIX}`,
    'blocks/*',
  ].map((k) => `${bucketArn}/${k}`);
  const prunable = ['blocks/indexes/*', 'blocks/packs/*'].map((k) => `${bucketArn}/${k}`);
  const write = (opts.access ?? 'read-write') === 'read-write';
  const statements: IamStatement[] = [
    {
      Sid: 'ListBucket',
      Effect: 'Allow',
      Action: ['s3:ListBucket', ...(write ? ['s3:ListBucketMultipartUploads'] : [])],
      Resource: [bucketArn],
    },
    {
      Sid: write ? 'ReadWriteImages' : 'ReadImages',
      Effect: 'Allow',
      Action: [
        's3:GetObject',
        ...(write ? ['s3:PutObject', 's3:ListMultipartUploadParts', 's3:AbortMultipartUpload'] : []),
      ],
      Resource: objectArns,
    },
    ...(write
      ? [{ Sid: 'PruneBlockStore', Effect: 'Allow' as const, Action: ['s3:DeleteObject'], Resource: prunable }]
      : []),
  ];
  if (opts.includeBucketSetup) {
    statements.push({
      Sid: 'BucketSetup',
      Effect: 'Allow',
      Action: ['s3:PutBucketVersioning', 's3:GetLifecycleConfiguration', 's3:PutLifecycleConfiguration'],
      Resource: [bucketArn],
    });
  }
  return { Version: '2012-10-17', Statement: statements };
}

export const ABORT_RULE_ID = 'rootfs-abort-incomplete-uploads';

/** The lifecycle rule that has S3 abort multipart uploads left incomplete for `days`. */
export function abortIncompleteRule(days: number): LifecycleRule {
  if (!Number.isInteger(days) || days < 1)
    throw new StoreError(
      'invalid-input',
      `abortIncompleteDays must be a whole number of days, at least 1 (got ${days}).`,
    );
  return {
    ID: ABORT_RULE_ID,
    Status: 'Enabled',
    Filter: { Prefix: '' },
    AbortIncompleteMultipartUpload: { DaysAfterInitiation: days },
  };
}

export interface BucketSetupOptions {
  /** Keep earlier versions of overwritten images (a rollback path). Never turned off here. */
  versioning?: boolean;
  /** Have S3 abort multipart uploads still incomplete after this many days. */
  abortIncompleteDays?: number;
}

/**
 * Optional bucket settings. The lifecycle rule is merged into the bucket's existing rules (a
 * PUT replaces them all). Some S3-compatible servers (MinIO) have no such rule, and expire
 * stale uploads by their own setting: that is reported, not thrown. Returns a sentence for each
 * thing done (none when nothing was asked).
 */
export async function bucketSetup(target: S3Access, opts: BucketSetupOptions): Promise<string[]> {
  const Bucket = target.config.bucket;
  const done: string[] = [];
  const rule = opts.abortIncompleteDays === undefined ? undefined : abortIncompleteRule(opts.abortIncompleteDays);
  if (opts.versioning) {
    await send(target, { verb: 'turn on versioning of', action: 's3:PutBucketVersioning' }, (c) =>
      c.send(new PutBucketVersioningCommand({ Bucket, VersioningConfiguration: { Status: 'Enabled' } })),
    );
    done.push(`Versioning is on for bucket ${Bucket}: overwritten images keep their earlier versions.`);
  }
  if (rule) {
    const days = opts.abortIncompleteDays!;
    let rules: LifecycleRule[] = [];
    try {
      const current = await target.client.send(new GetBucketLifecycleConfigurationCommand({ Bucket }));
      rules = current.Rules ?? [];
    } catch (err) {
      if ((err as { name?: string }).name !== 'NoSuchLifecycleConfiguration') {
        await send(target, { verb: 'read the lifecycle rules of', action: 's3:GetLifecycleConfiguration' }, () =>
          Promise.reject(err),
        );
      }
    }
    rules = [...rules.filter((r) => r.ID !== ABORT_RULE_ID), rule];
    try {
      await target.client.send(
        new PutBucketLifecycleConfigurationCommand({ Bucket, LifecycleConfiguration: { Rules: rules } }),
      );
      done.push(
        `Bucket ${Bucket} aborts multipart uploads left incomplete for ${days} day(s) (lifecycle rule ${ABORT_RULE_ID}).`,
      );
    } catch (err) {
      const name = (err as { name?: string }).name ?? '';
      if (!['InvalidArgument', 'NotImplemented', 'MalformedXML', 'InvalidRequest'].includes(name)) {
        await send(target, { verb: 'set the lifecycle rules of', action: 's3:PutLifecycleConfiguration' }, () =>
          Promise.reject(err),
        );
      }
      done.push(
        `The server of bucket ${Bucket} does not support a lifecycle rule that aborts incomplete uploads (${name}); it may expire them by its own setting, and abortIncompleteUploads removes them now.`,
      );
    }
  }
  return done;
}
