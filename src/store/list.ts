import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import type { BucketListing } from '../../workflows/types';
import { describeError } from './client';
import type { StoreContext } from './images';
import { Manifest } from './layout';
import { humanSize } from './progress';

export interface ListedObject {
  key: string;
  sizeBytes: number;
  lastModified: string;
  manifest?: Manifest;
}

export interface Listing {
  bucket: string;
  objects: ListedObject[];
  totalBytes: number;
}

/** Every object in the bucket, with the manifests of images read and attached. */
export async function listBucket(ctx: Pick<StoreContext, 'client' | 'config'>): Promise<Listing> {
  const { client, config } = ctx;
  const objects: ListedObject[] = [];
  try {
    let token: string | undefined;
    do {
      const page = await client.send(new ListObjectsV2Command({ Bucket: config.bucket, ContinuationToken: token }));
      for (const o of page.Contents ?? []) {
        objects.push({ key: o.Key!, sizeBytes: o.Size ?? 0, lastModified: (o.LastModified ?? new Date(0)).toISOString() });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  } catch (err) {
    throw describeError(err, config);
  }
  const byKey = new Map(objects.map((o) => [o.key, o]));
  for (const o of objects) {
    if (!o.key.endsWith('.manifest.json')) continue;
    const image = byKey.get(o.key.slice(0, -'.manifest.json'.length));
    if (!image) continue;
    try {
      const res = await client.send(new GetObjectCommand({ Bucket: config.bucket, Key: o.key }));
      image.manifest = Manifest.parse(JSON.parse(await res.Body!.transformToString()));
    } catch {
      // An unreadable manifest only means no version line; the object itself is listed.
    }
  }
  return { bucket: config.bucket, objects, totalBytes: objects.reduce((n, o) => n + o.sizeBytes, 0) };
}

export function summarize(listing: Listing): BucketListing {
  return { bucket: listing.bucket, objects: listing.objects.length, totalBytes: listing.totalBytes };
}

/** `aws s3 ls --human-readable --summarize` style, with language and versions under each image. */
export function formatListing(listing: Listing): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  const date = (iso: string) => {
    const d = new Date(iso);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  };
  const lines: string[] = [];
  for (const o of listing.objects) {
    lines.push(`${date(o.lastModified)} ${humanSize(o.sizeBytes).padStart(10)} ${o.key}`);
    if (o.manifest) lines.push(`${' '.repeat(31)}${o.manifest.language}: ${o.manifest.versions.join('; ') || 'no versions recorded'}`);
  }
  lines.push('', `Total Objects: ${listing.objects.length}`, `   Total Size: ${humanSize(listing.totalBytes)}`);
  return lines.join('\n') + '\n';
}
