import { canonicalJson } from './keys';
import type { KeyRecord } from './step-keys';

/**
 * Why a step ran: what differs between the key input of an artifact and that of the closest
 * earlier artifact of the same step. Pure, so that `rootfs explain` only reads the records.
 */

const MAX_VALUE = 120;

function show(value: unknown): string {
  if (value === undefined) return '(none)';
  const text = JSON.stringify(value);
  return text.length > MAX_VALUE ? `${text.slice(0, MAX_VALUE - 1)}…` : text;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function diff(at: string, before: unknown, after: unknown, out: string[]): void {
  if (canonicalJson(before) === canonicalJson(after)) return;
  const name = at || '(input)';
  if (isObject(before) && isObject(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    for (const k of keys) diff(at ? `${at}.${k}` : k, before[k], after[k], out);
    return;
  }
  // Lists of records (runtime sources, version checks, files): the entry that changed, when none came or went.
  if (
    Array.isArray(before) &&
    Array.isArray(after) &&
    before.length === after.length &&
    [...before, ...after].some(isObject)
  ) {
    before.forEach((b, i) => diff(`${name}.${i}`, b, after[i], out));
    return;
  }
  // Rendered files (the unit, the profile): the lines that changed, not the whole text twice.
  if (typeof before === 'string' && typeof after === 'string' && (before.includes('\n') || after.includes('\n'))) {
    const [was, now] = [before.split('\n'), after.split('\n')];
    const removed = was.filter((l) => !now.includes(l));
    const added = now.filter((l) => !was.includes(l));
    if (removed.length || added.length) {
      const part = (verb: string, lines: string[]) => (lines.length ? [`${verb} ${lines.map(show).join(', ')}`] : []);
      out.push(`${name}: ${[...part('removed', removed), ...part('added', added)].join('; ')}`);
      return;
    }
  }
  out.push(`${name}: ${show(before)} → ${show(after)}`);
}

/**
 * One line per difference, `<step>: <path>: <before> → <after>`, e.g.
 * `runtime: packages: [] → ["python3-venv"]`; a step that ran only because the step before it
 * did says so with `previous`. Empty when the records hash the same.
 */
export function keyInputChanges(before: KeyRecord, after: KeyRecord): string[] {
  const out: string[] = [];
  if (before.previous !== after.previous)
    out.push(`previous: ${before.previous ?? '(none)'} → ${after.previous ?? '(none)'}`);
  diff('', before.input, after.input, out);
  return out.map((line) => `${after.step}: ${line}`);
}
