import type { BlockPlan } from './blocks/fetch';
import type { SyncReport } from './download';
import type { Listing } from './list';
import type { UploadResult } from './upload';

/**
 * Text for people, from the structured results. Sizes and the listing follow
 * `aws s3 ls --human-readable --summarize`, so the output reads the same as before.
 */

/**
 * Characters that act on a terminal rather than show: C0 controls (ESC, newline, …), DEL, C1
 * controls (CSI is one) and the bidi controls that reorder what is shown.
 */
const BEYOND_C0 = '\\u007f-\\u009f\\u061c\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069';
const UNSAFE = new RegExp(`[\\u0000-\\u001f${BEYOND_C0}]`, 'g');
/** What JSON.stringify leaves raw (it escapes C0 controls in strings itself). */
const UNSAFE_IN_JSON = new RegExp(`[${BEYOND_C0}]`, 'g');
const UNSAFE_OR_BACKSLASH = new RegExp(`${UNSAFE.source}|\\\\`, 'g');
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t', '\\': '\\\\' };

/**
 * Text from the bucket (keys, manifest fields, errors quoting them) as it may be printed: each
 * unsafe character as a visible escape (`\x1b`, `\n`, `\u{202e}`), a backslash doubled so the
 * escapes cannot be faked. A hostile key cannot move the cursor, clear the screen or retitle
 * the window.
 */
export function printable(text: string): string {
  return text.replace(UNSAFE_OR_BACKSLASH, (c) => {
    const code = c.codePointAt(0)!;
    return NAMED[c] ?? (code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u{${code.toString(16)}}`);
  });
}

/**
 * JSON for a terminal: JSON.stringify escapes C0 controls but prints DEL, C1 and bidi controls
 * raw; these become `\uXXXX` too, which any JSON reader turns back into the same string.
 */
export function terminalJson(value: unknown): string {
  return JSON.stringify(value, null, 2).replace(
    UNSAFE_IN_JSON,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

const UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];

/** `1 Byte`, `512 Bytes`, `1.0 KiB`, `512.0 MiB`: the AWS CLI's rule, rounding included. */
export function humanSize(bytes: number): string {
  if (bytes === 1) return '1 Byte';
  if (bytes < 1024) return `${Math.floor(bytes)} Bytes`;
  let i = 0;
  // The next unit as soon as this one would round to 1024 (so 1048575 bytes is `1.0 MiB`).
  while (Math.round(bytes / 1024 ** (i + 1)) >= 1024 && i < UNITS.length - 1) i++;
  return `${(bytes / 1024 ** (i + 1)).toFixed(1)} ${UNITS[i]}`;
}

const pad2 = (n: number) => String(n).padStart(2, '0');

/** `2024-05-01 12:00:00`, in local time like the AWS CLI, or UTC. */
export function formatTimestamp(d: Date, utc = false): string {
  const [y, mo, da, h, mi, s] = utc
    ? [d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()]
    : [d.getFullYear(), d.getMonth() + 1, d.getDate(), d.getHours(), d.getMinutes(), d.getSeconds()];
  return `${y}-${pad2(mo)}-${pad2(da)} ${pad2(h)}:${pad2(mi)}:${pad2(s)}`;
}

export function formatSeconds(seconds: number): string {
  return seconds < 10 ? `${seconds.toFixed(1)}s` : `${Math.round(seconds)}s`;
}

/**
 * One line per object, then the totals; under an image with a manifest, its language and the
 * versions verified at build (keys and versions through `printable`):
 *
 *     2024-05-01 12:00:00  512.0 MiB rootfs-python.ext4
 *                                    python: Python 3.10.12
 *
 *     Total Objects: 2
 *        Total Size: 512.0 MiB
 */
export function formatListing(listing: Listing, opts: { utc?: boolean } = {}): string {
  const lines: string[] = [];
  for (const o of listing.objects) {
    lines.push(
      `${formatTimestamp(new Date(o.lastModified), opts.utc)} ${humanSize(o.sizeBytes).padStart(10)} ${printable(o.key)}`,
    );
    const m = o.manifest;
    if (m?.language) {
      lines.push(
        `${' '.repeat(31)}${m.language}: ${m.versions.length ? printable(m.versions.join('; ')) : 'no versions recorded'}`,
      );
    }
  }
  if (listing.blockStore) lines.push('', ...blockStoreLines(listing.blockStore, opts));
  lines.push('', `Total Objects: ${listing.totalObjects}`, `   Total Size: ${humanSize(listing.totalBytes)}`);
  return lines.join('\n') + '\n';
}

/**
 * The block store: per image its versions, newest first, the current one marked, with what a new
 * host fetches for it; then what the packs and indexes take.
 *
 *     Block store (blocks/): 2 images, 3 versions
 *       rootfs-python.ext4
 *       * 1a2b3c4d5e6f  2024-05-01 12:00:00  1.9 GiB, fetch 180.2 MiB  Python 3.10.12
 *         0f9e8d7c6b5a  2024-04-30 09:00:00  1.9 GiB, fetch 180.1 MiB  Python 3.10.12
 *       packs: 3, 517.0 MiB; indexes: 3, 4.1 MiB
 */
function blockStoreLines(store: NonNullable<Listing['blockStore']>, opts: { utc?: boolean }): string[] {
  const versions = store.heads.reduce((n, h) => n + h.versions.length, 0);
  const lines = [`Block store (blocks/): ${store.heads.length} file(s), ${versions} version(s)`];
  for (const head of store.heads) {
    lines.push(`  ${printable(head.key)}`);
    for (const v of head.versions) {
      const mark = v.index === head.current ? '*' : ' ';
      const when = formatTimestamp(new Date(v.publishedAt), opts.utc);
      const what = v.versions.length ? `  ${printable(v.versions.join('; '))}` : '';
      lines.push(
        `  ${mark} ${v.index.slice(0, 12)}  ${when}  ${humanSize(v.sizeBytes)}, fetch ${humanSize(v.fetchBytes)}${what}`,
      );
    }
  }
  lines.push(
    `  packs: ${store.packs.count}, ${humanSize(store.packs.bytes)}; indexes: ${store.indexes.count}, ${humanSize(store.indexes.bytes)}`,
  );
  return lines;
}

/** Before a sync fetches anything: what the block store's files will take. */
export function formatPlan(plans: BlockPlan[]): string {
  const work = plans.filter((p) => !p.unchanged);
  if (!work.length) return '';
  const bytes = work.reduce((n, p) => n + p.fetchBytes, 0);
  const local = work.reduce((n, p) => n + p.blocksLocal + p.blocksInPlace, 0);
  const lines = work.map(
    (p) =>
      `  ${printable(p.key)} ${p.index.slice(0, 12)}: ${p.keptVersion ? 'kept here, nothing to fetch' : `fetch ${humanSize(p.fetchBytes)} in ${p.ranges} range(s), ${p.blocksLocal + p.blocksInPlace} block(s) from local files`}`,
  );
  return `will fetch ${humanSize(bytes)} for ${work.length} file(s) (${local} block(s) already here):\n${lines.join('\n')}\n`;
}

export function formatUploads(results: UploadResult[]): string {
  const width = Math.max(0, ...results.map((r) => r.key.length));
  const lines = results.map((r) => {
    const head = `${r.status.padEnd(9)} ${r.key.padEnd(width)} ${humanSize(r.sizeBytes).padStart(10)}`;
    const b = r.blocks;
    const blocks =
      b?.status === 'published'
        ? `  version ${b.index.slice(0, 12)}: ${b.newBlocks} new block(s) of ${b.dataBlocks}, ${humanSize(b.packBytes)} packed`
        : '';
    if (r.status === 'unchanged') return head;
    const parts = r.partsReused ? `, resumed: ${r.partsSent} part(s) sent, ${r.partsReused} already stored` : '';
    return `${head}  ${formatSeconds(r.seconds)}${parts}${blocks}`;
  });
  const sent = results.reduce((n, r) => n + r.bytesSent, 0);
  const uploaded = results.filter((r) => r.status === 'uploaded').length;
  lines.push(`${uploaded} uploaded, ${results.length - uploaded} unchanged, ${humanSize(sent)} sent`);
  return lines.join('\n') + '\n';
}

export function formatSync(report: SyncReport): string {
  const width = Math.max(0, ...report.files.map((f) => f.key.length));
  const lines = report.files.map((f) =>
    f.status === 'failed'
      ? `FAILED    ${f.key.padEnd(width)} ${printable(f.error ?? '')}`
      : `${f.status.padEnd(9)} ${f.key.padEnd(width)} ${humanSize(f.sizeBytes).padStart(10)}${f.status === 'downloaded' ? `  ${formatSeconds(f.seconds)}` : ''}${f.version ? `  version ${f.version}${f.status === 'downloaded' ? `, ${humanSize(f.bytes)} fetched, ${f.blocksLocal ?? 0} block(s) from local files` : ''}` : ''}`,
  );
  const count = (s: string) => report.files.filter((f) => f.status === s).length;
  lines.push(
    `${count('downloaded')} downloaded (${humanSize(report.bytesTransferred)}), ${count('unchanged')} unchanged, ${count('failed')} failed`,
  );
  if (report.link) lines.push(`${report.link} -> ${report.linkTarget}`);
  if (report.linkProblem) lines.push(report.linkProblem);
  if (report.oldLinkRemoved) lines.push(`removed ${report.oldLinkRemoved}, the default link of earlier versions`);
  return lines.join('\n') + '\n';
}
