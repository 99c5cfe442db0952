import type { StoreContext } from '../client';
import { StoreError, where } from '../errors';
import { headKey, shortName, type HeadVersion } from './format';
import { updateHead } from './objects';

/**
 * Moving a head between the versions it keeps: nothing is uploaded or deleted, so a rollback
 * takes one small conditional write, and hosts that kept the version fetch nothing.
 */

export interface Rollback {
  key: string;
  from: HeadVersion;
  to: HeadVersion;
}

/**
 * Makes `version` (the start of an index digest, 4 or more hex digits) current for `key`; by
 * default the version published before the current one.
 */
export async function rollback(ctx: StoreContext, key: string, version?: string): Promise<Rollback> {
  if (version !== undefined && !/^[0-9a-f]{4,64}$/.test(version)) {
    throw new StoreError(
      'invalid-input',
      `${JSON.stringify(version).slice(0, 80)} is not a version (the first hex digits of one, as \`s3 list\` shows them).`,
    );
  }
  let result: Rollback | undefined;
  await updateHead(ctx, key, (head) => {
    if (!head) {
      throw new StoreError(
        'not-found',
        `Cannot roll back ${where(ctx.config, headKey(key))}: the block store has no version of ${key}.`,
      );
    }
    const from = head.versions.find((v) => v.index === head.current)!;
    let to: HeadVersion | undefined;
    if (version === undefined) {
      to = head.versions[head.versions.indexOf(from) + 1];
      if (!to)
        throw new StoreError(
          'invalid-input',
          `Cannot roll back ${key}: ${shortName(from.index)} is the oldest version kept.`,
        );
    } else {
      const matches = head.versions.filter((v) => v.index.startsWith(version));
      const known = head.versions.map((v) => shortName(v.index)).join(', ');
      if (matches.length !== 1) {
        throw new StoreError(
          'invalid-input',
          `Cannot roll back ${key}: ${matches.length ? `${version} names ${matches.length} versions` : `no version ${version}`} (kept: ${known}).`,
        );
      }
      to = matches[0]!;
    }
    result = { key, from, to };
    return { ...head, current: to.index };
  });
  return result!;
}
