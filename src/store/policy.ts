import { PutBucketLifecycleConfigurationCommand, PutBucketVersioningCommand } from '@aws-sdk/client-s3';
import { describeError } from './client';
import type { StoreContext } from './images';

/**
 * The least-privilege IAM policy for this tool on one bucket: exactly the actions its requests
 * need (HeadObject is covered by s3:GetObject; CreateMultipartUpload, UploadPart and
 * CompleteMultipartUpload by s3:PutObject). `bucket-setup` needs two more, granted apart.
 */
export function iamPolicy(bucket: string, opts: { includeBucketSetup?: boolean } = {}): object {
  const statements: object[] = [
    { Sid: 'ListImages', Effect: 'Allow', Action: ['s3:ListBucket', 's3:ListBucketMultipartUploads'], Resource: [`arn:aws:s3:::${bucket}`] },
    {
      Sid: 'ReadWriteImages',
      Effect: 'Allow',
      Action: ['s3:GetObject', 's3:PutObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts'],
      Resource: [`arn:aws:s3:::${bucket}/*`],
    },
  ];
  if (opts.includeBucketSetup) {
    statements.push({
      Sid: 'BucketSetup',
      Effect: 'Allow',
      Action: ['s3:PutBucketVersioning', 's3:PutLifecycleConfiguration'],
      Resource: [`arn:aws:s3:::${bucket}`],
    });
  }
  return { Version: '2012-10-17', Statement: statements };
}

/** Optionally turns on versioning, and a lifecycle rule that aborts multipart uploads left incomplete. */
export async function bucketSetup(ctx: Pick<StoreContext, 'client' | 'config'>, opts: { versioning: boolean; abortIncompleteDays?: number }): Promise<string[]> {
  const done: string[] = [];
  const Bucket = ctx.config.bucket;
  try {
    if (opts.versioning) {
      await ctx.client.send(new PutBucketVersioningCommand({ Bucket, VersioningConfiguration: { Status: 'Enabled' } }));
      done.push('versioning enabled');
    }
    if (opts.abortIncompleteDays) {
      await ctx.client.send(
        new PutBucketLifecycleConfigurationCommand({
          Bucket,
          LifecycleConfiguration: {
            Rules: [
              {
                ID: 'rootfs-abort-incomplete-multipart-uploads',
                Status: 'Enabled',
                Filter: { Prefix: '' },
                AbortIncompleteMultipartUpload: { DaysAfterInitiation: opts.abortIncompleteDays },
              },
            ],
          },
        }),
      );
      done.push(`incomplete multipart uploads aborted after ${opts.abortIncompleteDays} day(s)`);
    }
  } catch (err) {
    throw describeError(err, ctx.config);
  }
  return done;
}
