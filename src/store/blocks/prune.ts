import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import { send, type StoreContext } from '../client';
import { digestOfIndexKey, digestOfPackKey, INDEXES_PREFIX, PACKS_PREFIX } from './format';
import { listPrefix, loadIndex, readHeads } from './objects';
import { indexCacheDir } from './paths';

/**
 * Deletes what no version needs any more: indexes no head names, then packs no remaining index
 * names. Only objects older than the grace period go: a publisher running now may have written
 * a pack or index that its head does not name yet.
 */

export const PRUNE_GRACE_MS = 60 * 60 * 1000;

export interface PruneReport {
  indexesDeleted: number;
  packsDeleted: number;
  bytesFreed: number;
}

export async function pruneStore(ctx: StoreContext, opts: { graceMs?: number } = {}): Promise<PruneReport> {
  const cutoff = Date.now() - (opts.graceMs ?? PRUNE_GRACE_MS);
  const named = new Set<string>();
  for (const head of await readHeads(ctx)) for (const v of head.versions) named.add(v.index);
  const report: PruneReport = { indexesDeleted: 0, packsDeleted: 0, bytesFreed: 0 };
  const remove = async (key: string, sizeBytes: number) => {
    await send(ctx, { key, verb: 'delete', action: 's3:DeleteObject' }, (c) =>
      c.send(new DeleteObjectCommand({ Bucket: ctx.config.bucket, Key: key }), { abortSignal: ctx.signal }),
    );
    report.bytesFreed += sizeBytes;
  };

  const livePacks = new Set<string>();
  for (const o of await listPrefix(ctx, INDEXES_PREFIX)) {
    const sha = digestOfIndexKey(o.key);
    if (!sha) continue;
    if (!named.has(sha) && o.lastModified.getTime() < cutoff) {
      await remove(o.key, o.sizeBytes);
      report.indexesDeleted++;
      continue;
    }
    const index = await loadIndex(ctx, indexCacheDir(ctx.workspace), sha);
    for (const f of index.frames) livePacks.add(f.pack);
  }
  for (const o of await listPrefix(ctx, PACKS_PREFIX)) {
    const sha = digestOfPackKey(o.key);
    if (!sha || livePacks.has(sha) || o.lastModified.getTime() >= cutoff) continue;
    await remove(o.key, o.sizeBytes);
    report.packsDeleted++;
  }
  return report;
}
