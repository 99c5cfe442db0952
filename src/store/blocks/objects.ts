import * as fs from 'node:fs';
import * as path from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { send, statObject, type S3Access } from '../client';
import { crc32Of } from '../digest';
import { StoreError, where } from '../errors';
import { decodeIndex, Head, headKey, HEADS_PREFIX, indexKey, keyOfHead, sha256Hex, type BlockIndex } from './format';
import { indexCacheDir } from './paths';
import { decompress } from './zstd';

/**
 * Reading and writing the block store's objects: heads (small JSON, written conditionally),
 * indexes (immutable, cached on the host by digest and checked against it on every read) and
 * object listings by prefix.
 */

/** An index or head larger than this is refused unread. */
const MAX_INDEX_OBJECT_BYTES = 256 << 20;
const MAX_HEAD_BYTES = 1 << 20;

/** The whole object as bytes, at most `max` of them; undefined when it does not exist. */
export async function getBytes(
  target: S3Access,
  key: string,
  max: number,
): Promise<{ body: Buffer; etag?: string } | undefined> {
  try {
    return await send(target, { key, verb: 'read', action: 's3:GetObject' }, async (c) => {
      const res = await c.send(new GetObjectCommand({ Bucket: target.config.bucket, Key: key }), {
        abortSignal: target.signal,
      });
      const chunks: Buffer[] = [];
      let length = 0;
      for await (const chunk of res.Body as AsyncIterable<Buffer>) {
        length += chunk.length;
        if (length > max)
          throw new StoreError('other', `Cannot read ${where(target.config, key)}: it has more than ${max} bytes.`);
        chunks.push(chunk);
      }
      return { body: Buffer.concat(chunks), etag: res.ETag };
    });
  } catch (err) {
    if (err instanceof StoreError && err.kind === 'not-found') return undefined;
    throw err;
  }
}

/** Every key under `prefix`, with its size and time. */
export async function listPrefix(
  target: S3Access,
  prefix: string,
): Promise<Array<{ key: string; sizeBytes: number; lastModified: Date }>> {
  const out: Array<{ key: string; sizeBytes: number; lastModified: Date }> = [];
  let token: string | undefined;
  do {
    const page = await send(target, { verb: 'list', action: 's3:ListBucket' }, (c) =>
      c.send(new ListObjectsV2Command({ Bucket: target.config.bucket, Prefix: prefix, ContinuationToken: token }), {
        abortSignal: target.signal,
      }),
    );
    for (const o of page.Contents ?? [])
      out.push({ key: o.Key!, sizeBytes: o.Size ?? 0, lastModified: o.LastModified ?? new Date(0) });
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return out;
}

/** PUTs a small immutable object unless an object of that name and size exists. */
export async function putImmutable(target: S3Access, key: string, body: Buffer, contentType: string): Promise<boolean> {
  const existing = await statObject(target, key);
  if (existing && existing.sizeBytes === body.length) return false;
  await send(target, { key, verb: 'upload', action: 's3:PutObject' }, (c) =>
    c.send(
      new PutObjectCommand({
        Bucket: target.config.bucket,
        Key: key,
        Body: body,
        ContentType: contentType,
        ChecksumCRC32: crc32Of(body),
        Metadata: { sha256: sha256Hex(body) },
      }),
      { abortSignal: target.signal },
    ),
  );
  return true;
}

export interface ReadHead {
  head: Head;
  etag?: string;
}

/** The head of `key`, or undefined when the store has no version of it. A damaged head is an error that says so. */
export async function readHead(target: S3Access, key: string): Promise<ReadHead | undefined> {
  const hkey = headKey(key);
  const got = await getBytes(target, hkey, MAX_HEAD_BYTES);
  if (!got) return undefined;
  try {
    const head = Head.parse(JSON.parse(got.body.toString('utf8')));
    if (head.key !== key) throw new Error(`it describes ${head.key}`);
    return { head, etag: got.etag };
  } catch (err) {
    const why = err instanceof z.ZodError ? z.prettifyError(err).split('\n').join(' ') : (err as Error).message;
    throw new StoreError(
      'other',
      `Cannot read ${where(target.config, hkey)}: not a valid head (${why.slice(0, 300)}).`,
      {
        bucket: target.config.bucket,
        key: hkey,
      },
    );
  }
}

/** Every key that has a head. */
export async function listHeads(target: S3Access): Promise<string[]> {
  return (await listPrefix(target, HEADS_PREFIX))
    .map((o) => keyOfHead(o.key))
    .filter((k): k is string => k !== undefined)
    .sort();
}

/** Every head of the store (a head removed between the listing and its read is left out). */
export async function readHeads(target: S3Access): Promise<Head[]> {
  const heads: Head[] = [];
  for (const key of await listHeads(target)) {
    const head = (await readHead(target, key))?.head;
    if (head) heads.push(head);
  }
  return heads;
}

/**
 * Changes the head of `key` with `change` (given the current head, or undefined), written only
 * if nobody wrote it meanwhile (If-Match / If-None-Match); on a race it reads and changes again.
 */
export async function updateHead(
  target: S3Access,
  key: string,
  change: (current: Head | undefined) => Head,
): Promise<Head> {
  const hkey = headKey(key);
  for (let attempt = 1; ; attempt++) {
    const read = await readHead(target, key);
    const next = Head.parse(change(read?.head));
    const body = Buffer.from(JSON.stringify(next, null, 2) + '\n');
    try {
      await send(target, { key: hkey, verb: 'update', action: 's3:PutObject' }, (c) =>
        c.send(
          new PutObjectCommand({
            Bucket: target.config.bucket,
            Key: hkey,
            Body: body,
            ContentType: 'application/json',
            ChecksumCRC32: crc32Of(body),
            ...(read?.etag ? { IfMatch: read.etag } : { IfNoneMatch: '*' }),
          }),
          { abortSignal: target.signal },
        ),
      );
      return next;
    } catch (err) {
      const status = ((err as StoreError).cause as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata
        ?.httpStatusCode;
      if ((status === 412 || status === 409) && attempt < 5) continue;
      throw err;
    }
  }
}

/**
 * The index named by `sha256`: from the host's cache when there, else from the bucket (then
 * cached). Its bytes are checked against the name either way.
 */
export async function loadIndex(target: S3Access, cacheDir: string | undefined, sha256: string): Promise<BlockIndex> {
  const key = indexKey(sha256);
  const cached = cacheDir ? path.join(cacheDir, `${sha256}.index`) : undefined;
  let body: Buffer | undefined = cached && fs.existsSync(cached) ? fs.readFileSync(cached) : undefined;
  if (body && sha256Hex(body) !== sha256) body = undefined;
  if (!body) {
    const got = await getBytes(target, key, MAX_INDEX_OBJECT_BYTES);
    if (!got)
      throw new StoreError(
        'not-found',
        `Cannot read ${where(target.config, key)}: it does not exist (a head names it).`,
        { bucket: target.config.bucket, key },
      );
    if (sha256Hex(got.body) !== sha256) {
      throw new StoreError(
        'checksum',
        `Cannot read ${where(target.config, key)}: its content does not match its name.`,
        {
          bucket: target.config.bucket,
          key,
        },
      );
    }
    body = got.body;
    if (cached) {
      fs.mkdirSync(path.dirname(cached), { recursive: true });
      const tmp = `${cached}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, body);
      fs.renameSync(tmp, cached);
    }
  }
  try {
    return decodeIndex(await decompress(body, target.signal));
  } catch (err) {
    throw new StoreError('other', `Cannot read ${where(target.config, key)}: ${(err as Error).message}.`, {
      bucket: target.config.bucket,
      key,
      cause: err,
    });
  }
}

/** The manifest of the current version of `key` in the block store, if it has one. */
export async function currentManifest(target: S3Access & { workspace: string }, key: string) {
  const read = await readHead(target, key);
  if (!read) return undefined;
  return (await loadIndex(target, indexCacheDir(target.workspace), read.head.current)).header.manifest;
}
