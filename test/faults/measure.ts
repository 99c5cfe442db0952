import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GetObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { defaultPayloadConverter, type WorkflowHandle } from '@temporalio/client';
import { BLOCKS_PREFIX, decodeIndex, HEADS_PREFIX, indexKey, packKey } from '../../src/store/blocks/format';
import { readHead } from '../../src/store/blocks/objects';

/**
 * The three figures of a fault-suite row, measured from outside the code under test: steps that
 * ran again after they had finished (workflow history and artifact timestamps), objects in the
 * bucket that are corrupt or partial (each object hashed against its manifest, and the multipart
 * uploads still open), and what a build left behind on the build host (mounts, loop devices,
 * processes).
 */

/** When each artifact of the workspace was published (`meta.json` createdAt), by key. */
export function artifactTimes(workspace: string): Map<string, string> {
  const root = path.join(workspace, 'artifacts');
  const times = new Map<string, string>();
  if (!fs.existsSync(root)) return times;
  for (const key of fs.readdirSync(root)) {
    try {
      const meta = JSON.parse(fs.readFileSync(path.join(root, key, 'meta.json'), 'utf8')) as { createdAt: string };
      times.set(key, meta.createdAt);
    } catch {
      // .tmp, .locks: not artifacts
    }
  }
  return times;
}

export interface Completion {
  step: string;
  key?: string;
  reused?: boolean;
  attempt: number;
  /** The step's small result values (versions, sizes, bytes sent). */
  data?: Record<string, unknown>;
}

/** Every completed step activity of a workflow, in order, with its result's key and whether it was reused. */
export async function completions(handle: WorkflowHandle): Promise<Completion[]> {
  const events = (await handle.fetchHistory()).events ?? [];
  const scheduled = new Map<string, string>();
  const attempts = new Map<string, number>();
  const done: Completion[] = [];
  for (const e of events) {
    const s = e.activityTaskScheduledEventAttributes;
    if (s?.activityType?.name) scheduled.set(String(e.eventId), s.activityType.name);
    const started = e.activityTaskStartedEventAttributes;
    if (started) attempts.set(String(started.scheduledEventId), started.attempt ?? 1);
    const c = e.activityTaskCompletedEventAttributes;
    if (c) {
      const id = String(c.scheduledEventId);
      const payload = c.result?.payloads?.[0];
      const result = payload ? defaultPayloadConverter.fromPayload<Partial<Completion>>(payload as never) : undefined;
      done.push({
        step: scheduled.get(id) ?? '?',
        key: result?.key,
        reused: result?.reused,
        data: result?.data,
        attempt: attempts.get(id) ?? 1,
      });
    }
  }
  return done;
}

/**
 * Finished steps that ran again: a step type completed more than once in the history, or an
 * artifact published before the fault (`before`) whose publication time changed since.
 */
export async function redoneSteps(
  handle: WorkflowHandle,
  workspace: string,
  before: Map<string, string>,
): Promise<string[]> {
  const redone = new Set<string>();
  const seen = new Set<string>();
  for (const c of await completions(handle)) {
    // The probe only looks finished steps up: a build that starts its steps over probes again.
    if (c.step === 'probe') continue;
    if (seen.has(c.step)) redone.add(`${c.step} completed twice`);
    seen.add(c.step);
  }
  const now = artifactTimes(workspace);
  for (const [key, createdAt] of before) {
    const after = now.get(key);
    if (after !== createdAt) redone.add(`${key.split('-')[0]} artifact ${after ? 'rebuilt' : 'gone'}`);
  }
  return [...redone];
}

export interface BucketHealth {
  objects: number;
  /** Objects whose content does not match their manifest (or cannot be read whole). */
  corrupt: string[];
  /** Objects without a manifest, manifests without an object, multipart uploads still open. */
  partial: string[];
}

async function sha256OfObject(
  client: S3Client,
  bucket: string,
  key: string,
): Promise<{ sha256: string; size: number }> {
  const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const hash = crypto.createHash('sha256');
  let size = 0;
  for await (const chunk of res.Body as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { sha256: hash.digest('hex'), size };
}

/**
 * The block store's objects: every pack, index and fetcher must be what its name (its sha256)
 * says; every head must name versions whose indexes exist, and every index packs that exist.
 * Indexes and packs no head names are a publish cut off before its head: garbage that prune
 * removes, not objects a reader would trust, so they are not counted.
 */
async function blockStoreHealth(
  client: S3Client,
  bucket: string,
  listed: string[],
  corrupt: string[],
  partial: string[],
): Promise<void> {
  const target = { client, config: { bucket, region: 'us-east-1', forcePathStyle: true } };
  const named = /^blocks\/(?:packs|indexes|tools)\/(?:[a-z-]+\.)?([0-9a-f]{64})(?:\.(?:pack|index))?$/;
  for (const key of listed.filter((k) => k.startsWith(BLOCKS_PREFIX) && !k.startsWith(HEADS_PREFIX))) {
    const want = named.exec(key)?.[1];
    try {
      const got = await sha256OfObject(client, bucket, key);
      if (!want || got.sha256 !== want) corrupt.push(`${key} (sha256 ${got.sha256.slice(0, 12)}…, not its name)`);
    } catch (err) {
      corrupt.push(`${key} (cannot be read whole: ${(err as Error).message.split('\n')[0]})`);
    }
  }
  for (const key of listed.filter((k) => k.startsWith(HEADS_PREFIX))) {
    const storeKey = key.slice(HEADS_PREFIX.length, -'.json'.length);
    let head;
    try {
      head = (await readHead(target, storeKey))?.head;
    } catch (err) {
      corrupt.push(`${key} (${(err as Error).message.split('\n')[0]})`);
      continue;
    }
    for (const v of head?.versions ?? []) {
      const ikey = indexKey(v.index);
      if (!listed.includes(ikey)) {
        partial.push(`${key} names ${ikey}, which is not there`);
        continue;
      }
      try {
        const index = decodeIndex(
          execFileSync('zstd', ['-dcq'], { input: await objectBytes(client, bucket, ikey), maxBuffer: 1 << 30 }),
        );
        for (const pack of new Set(index.frames.map((f) => f.pack)))
          if (!listed.includes(packKey(pack))) partial.push(`${ikey} names ${packKey(pack)}, which is not there`);
      } catch (err) {
        corrupt.push(`${ikey} (${(err as Error).message.split('\n')[0]})`);
      }
    }
  }
}

async function objectBytes(client: S3Client, bucket: string, key: string): Promise<Buffer> {
  const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await res.Body!.transformToByteArray());
}

/**
 * Lists the bucket and reads every object whole. An image or kernel must have a manifest whose
 * sha256 and size are its content's; a manifest must have its object. Open multipart uploads are
 * asked for bucket-wide and per key: MinIO answers the bucket-wide question from a cache that a
 * restart empties.
 */
export async function bucketHealth(client: S3Client, bucket: string, keys: string[] = []): Promise<BucketHealth> {
  const listed: string[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
    listed.push(...(page.Contents ?? []).map((o) => o.Key!));
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  const corrupt: string[] = [];
  const partial: string[] = [];
  const suffix = '.manifest.json';
  await blockStoreHealth(client, bucket, listed, corrupt, partial);
  for (const key of listed) {
    if (key.startsWith(BLOCKS_PREFIX)) continue;
    if (key.endsWith(suffix)) {
      if (!listed.includes(key.slice(0, -suffix.length))) partial.push(`${key} without its object`);
      continue;
    }
    if (!listed.includes(`${key}${suffix}`)) {
      partial.push(`${key} without a manifest`);
      continue;
    }
    try {
      const manifest = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `${key}${suffix}` }));
      const m = JSON.parse(await manifest.Body!.transformToString()) as { sha256?: string; sizeBytes?: number };
      const got = await sha256OfObject(client, bucket, key);
      if (got.sha256 !== m.sha256 || got.size !== m.sizeBytes)
        corrupt.push(`${key} (sha256 ${got.sha256.slice(0, 12)}…, manifest ${String(m.sha256).slice(0, 12)}…)`);
    } catch (err) {
      corrupt.push(`${key} (cannot be read whole: ${(err as Error).message.split('\n')[0]})`);
    }
  }
  const open = new Set<string>();
  for (const prefix of [undefined, ...new Set([...keys, ...listed])]) {
    const res = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }));
    for (const u of res.Uploads ?? []) open.add(`${u.Key} (upload ${u.UploadId?.slice(0, 8)}… open)`);
  }
  partial.push(...open);
  return { objects: listed.length, corrupt, partial };
}

/** Mounts under `dir` (not `dir` itself), loop devices backed by files under it, processes in it. */
export async function leftBehind(dir: string): Promise<string[]> {
  const found: string[] = [];
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  for (const line of fs.readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const at = unescape(line.split(' ')[1] ?? '');
    if (at.startsWith(`${dir}/`)) found.push(`mount ${at}`);
  }
  const loops = execFileSync('losetup', ['--list', '--noheadings', '--output', 'NAME,BACK-FILE'], { encoding: 'utf8' });
  for (const line of loops.split('\n')) if (line.includes(`${dir}/`)) found.push(`loop ${line.trim()}`);
  // A killed process tree may take a moment to go (one in uninterruptible I/O in particular).
  const deadline = Date.now() + 10_000;
  let left = processesIn(dir);
  while (left.length && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    left = processesIn(dir);
  }
  for (const p of left) found.push(`process ${p.slice(0, 160)}`);
  return found;
}

/** Processes whose command line, working directory or root directory lies in `dir`. */
export function processesIn(dir: string): string[] {
  const found: string[] = [];
  const inside = (p: string) => p === dir || p.startsWith(`${dir}/`);
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      if (
        cmdline.includes(`${dir}/`) ||
        inside(fs.readlinkSync(`/proc/${pid}/cwd`)) ||
        inside(fs.readlinkSync(`/proc/${pid}/root`))
      ) {
        found.push(`${pid} ${cmdline}`);
      }
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

/** Attempts the last activity of `type` made, as its closing event in the history records them. */
export async function activityAttempts(handle: WorkflowHandle, type: string): Promise<number> {
  const events = (await handle.fetchHistory()).events ?? [];
  const ids = new Set(
    events
      .filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === type)
      .map((e) => String(e.eventId)),
  );
  let attempts = 0;
  for (const e of events) {
    const started = e.activityTaskStartedEventAttributes;
    if (started && ids.has(String(started.scheduledEventId))) attempts = started.attempt ?? 1;
  }
  return attempts;
}
