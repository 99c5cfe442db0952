import type { ActivityDeps } from '../activities';
import { BuildError } from '../src/build/context';
import { createClient, listBucket, summarize, uploadImage } from '../src/store';

/**
 * The S3 side of the build: the upload step and the closing bucket listing. Credentials come
 * from the AWS SDK's own chain in the worker's environment; they never enter workflow data.
 */
export function s3StoreDeps(): Pick<ActivityDeps, 'upload' | 'listBucket'> {
  return {
    async upload({ loaded, language, imagePath, manifest }) {
      if (loaded.config.buildHost.kind !== 'local') {
        // The image lives on the remote host; streaming it through SFTP to S3 is not built yet.
        throw new BuildError(
          `uploading from the SSH build host ${loaded.config.buildHost.alias} is not supported yet: run \`rootfs s3 upload-single ${language}\` on that host`,
          'InvalidInput',
        );
      }
      const client = createClient({ config: loaded.config.s3 });
      try {
        const outcome = await uploadImage({ client, config: loaded.config.s3, workspace: loaded.config.workspace }, language, imagePath, {
          versions: manifest.versions as string[],
          artifactKey: manifest.artifactKey as string,
        });
        return {
          key: manifest.artifactKey as string,
          reused: outcome.status === 'unchanged',
          data: { s3Key: outcome.key, bucket: loaded.config.s3.bucket, bytesSent: outcome.bytesSent, sha256: outcome.sha256 },
        };
      } finally {
        client.destroy();
      }
    },
    async listBucket(loaded) {
      const client = createClient({ config: loaded.config.s3 });
      try {
        return summarize(await listBucket({ client, config: loaded.config.s3 }));
      } finally {
        client.destroy();
      }
    },
  };
}
