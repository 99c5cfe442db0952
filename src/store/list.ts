import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { send, type S3Access } from './client';
import { BLOCKS_PREFIX, digestOfIndexKey, digestOfPackKey, type Head } from './blocks/format';
import { readHeads } from './blocks/objects';
import { StoreError } from './errors';
import {
  IMAGE_KEY_PATTERN,
  KERNEL_KEY,
  languageOfKey,
  Manifest,
  MANIFEST_SUFFIX,
  manifestKey,
  MAX_MANIFEST_BYTES,
} from './layout';

export interface ListedObject {
  key: string;
  sizeBytes: number;
  /** ISO 8601. */
  lastModified: string;
  etag?: string;
  kind: 'kernel' | 'image' | 'manifest' | 'other';
  language?: string;
  /** The object's manifest, for a kernel or image that has a valid one. */
  manifest?: Manifest;
  /** Why the manifest beside it could not be used, when there is one. */
  manifestProblem?: string;
}

export interface Listing {
  bucket: string;
  /** The objects outside the block store (`blocks/`): the plain layout, and anything else. */
  objects: ListedObject[];
  /** The block store's images and their versions, when the bucket has one. */
  blockStore?: BlockStoreListing;
  /** Every object of the bucket, the block store's included. */
  totalObjects: number;
  totalBytes: number;
}

export interface BlockStoreListing {
  heads: Head[];
  packs: { count: number; bytes: number };
  indexes: { count: number; bytes: number };
  /** Heads, and anything else under `blocks/`. */
  other: { count: number; bytes: number };
}

const kindOf = (key: string): ListedObject['kind'] =>
  key === KERNEL_KEY
    ? 'kernel'
    : IMAGE_KEY_PATTERN.test(key)
      ? 'image'
      : key.endsWith(MANIFEST_SUFFIX)
        ? 'manifest'
        : 'other';

/**
 * A key as listed with `EncodingType: url`, which S3 servers use to send keys that XML cannot
 * carry (controls such as ESC; MinIO replaces them with U+FFFD otherwise): form-encoded, so `+`
 * is a space. A key that does not decode is kept as sent.
 */
function decodeListedKey(key: string): string {
  try {
    return decodeURIComponent(key.replace(/\+/g, ' '));
  } catch {
    return key;
  }
}

/**
 * Reads and validates one manifest object; a problem is returned, not thrown. At most
 * MAX_MANIFEST_BYTES are read: whoever can write the bucket must not make readers load a
 * gigabyte.
 */
export async function readManifest(target: S3Access, key: string): Promise<{ manifest?: Manifest; problem?: string }> {
  const mkey = manifestKey(key);
  try {
    const read = await send(target, { key: mkey, verb: 'read', action: 's3:GetObject' }, async (c) => {
      const res = await c.send(new GetObjectCommand({ Bucket: target.config.bucket, Key: mkey }), {
        abortSignal: target.signal,
      });
      const body = res.Body as AsyncIterable<Buffer> & { destroy?: () => void };
      if ((res.ContentLength ?? 0) > MAX_MANIFEST_BYTES) {
        body.destroy?.();
        return { tooLarge: `${res.ContentLength} bytes` };
      }
      const chunks: Buffer[] = [];
      let length = 0;
      // Leaving the loop early ends the stream: a body longer than it said is not read further.
      for await (const chunk of body) {
        length += chunk.length;
        if (length > MAX_MANIFEST_BYTES) return { tooLarge: `more than ${MAX_MANIFEST_BYTES} bytes` };
        chunks.push(chunk);
      }
      return { text: Buffer.concat(chunks).toString('utf8') };
    });
    if (read.text === undefined) {
      return {
        problem: `${mkey} is not a valid manifest: it has ${read.tooLarge}, over the ${MAX_MANIFEST_BYTES / 1024} KiB a manifest may have`,
      };
    }
    const text = read.text;
    const manifest = Manifest.parse(JSON.parse(text));
    if (manifest.key !== key) return { problem: `${mkey} describes ${manifest.key}` };
    return { manifest };
  } catch (err) {
    if (err instanceof StoreError) {
      if (err.kind === 'not-found') return {};
      throw err;
    }
    const why = err instanceof z.ZodError ? z.prettifyError(err).split('\n').join(' ') : (err as Error).message;
    return { problem: `${mkey} is not a valid manifest: ${why}` };
  }
}

/** Every object in the bucket, with the manifests of the kernel and images read and attached. */
export async function listBucket(target: S3Access): Promise<Listing> {
  const { config } = target;
  const objects: ListedObject[] = [];
  const blocks: BlockStoreListing = {
    heads: [],
    packs: { count: 0, bytes: 0 },
    indexes: { count: 0, bytes: 0 },
    other: { count: 0, bytes: 0 },
  };
  let token: string | undefined;
  do {
    const page = await send(target, { verb: 'list', action: 's3:ListBucket' }, (c) =>
      c.send(new ListObjectsV2Command({ Bucket: config.bucket, ContinuationToken: token, EncodingType: 'url' }), {
        abortSignal: target.signal,
      }),
    );
    for (const o of page.Contents ?? []) {
      // The keys exactly as stored, hostile ones included; printing them is format.ts's care.
      const key = page.EncodingType === 'url' ? decodeListedKey(o.Key!) : o.Key!;
      if (key.startsWith(BLOCKS_PREFIX)) {
        const part = digestOfPackKey(key) ? blocks.packs : digestOfIndexKey(key) ? blocks.indexes : blocks.other;
        part.count++;
        part.bytes += o.Size ?? 0;
        continue;
      }
      const kind = kindOf(key);
      objects.push({
        key,
        sizeBytes: o.Size ?? 0,
        lastModified: (o.LastModified ?? new Date(0)).toISOString(),
        etag: o.ETag,
        kind,
        ...(kind === 'image' ? { language: languageOfKey(key) } : {}),
      });
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);

  const keys = new Set(objects.map((o) => o.key));
  const described = objects.filter((o) => (o.kind === 'kernel' || o.kind === 'image') && keys.has(manifestKey(o.key)));
  // A handful of small reads; a few at a time.
  for (let i = 0; i < described.length; i += 8) {
    await Promise.all(
      described.slice(i, i + 8).map(async (o) => {
        const { manifest, problem } = await readManifest(target, o.key);
        if (manifest) o.manifest = manifest;
        if (problem) o.manifestProblem = problem;
      }),
    );
  }
  const inBlocks = blocks.packs.count + blocks.indexes.count + blocks.other.count;
  if (inBlocks) blocks.heads = await readHeads(target);
  return {
    bucket: config.bucket,
    objects,
    ...(inBlocks ? { blockStore: blocks } : {}),
    totalObjects: objects.length + inBlocks,
    totalBytes:
      objects.reduce((n, o) => n + o.sizeBytes, 0) + blocks.packs.bytes + blocks.indexes.bytes + blocks.other.bytes,
  };
}

/** The listing's totals, as the workflows report them. */
export function summarize(listing: Listing): { bucket: string; objects: number; totalBytes: number } {
  return { bucket: listing.bucket, objects: listing.totalObjects, totalBytes: listing.totalBytes };
}
