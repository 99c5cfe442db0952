import * as crypto from 'node:crypto';
import { KERNEL_STEPS, STEPS, type ImageStep, type KernelStep } from '../../workflows/types';

/**
 * Content addresses of build steps. A step's key hashes the previous step's key and everything
 * the step reads, so a change anywhere upstream changes every key below it, and identical inputs
 * always give the identical key: looking a key up is both "resume" and "nothing changed".
 */

/** Steps that make an artifact: every step of a build but allocate, `rootfs customize`, the kernel's. */
export type StepName = Exclude<ImageStep, 'allocate'> | 'customize' | KernelStep;
export const STEP_NAMES: readonly StepName[] = [
  ...STEPS.filter((s): s is Exclude<ImageStep, 'allocate'> => s !== 'allocate'),
  'customize',
  ...KERNEL_STEPS,
];

export const KEY_PATTERN = new RegExp(`^(${STEP_NAMES.join('|')})-[0-9a-f]{32}$`);

/** JSON with object keys sorted, so that equal values always serialize to equal text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v === undefined) return undefined;
    if (typeof v === 'number' && !Number.isFinite(v)) throw new Error('non-finite numbers have no canonical form');
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      return Object.fromEntries(
        Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
      );
    }
    return v;
  });
}

/** `<step>-<128-bit hex>`: readable in paths and in Temporal Web, and unguessable from outside. */
export function stepKey(step: StepName, previous: string | null, input: unknown): string {
  if (previous !== null && !KEY_PATTERN.test(previous)) throw new Error(`not a step key: ${previous}`);
  const digest = crypto.createHash('sha256').update(canonicalJson({ step, previous, input })).digest('hex');
  return `${step}-${digest.slice(0, 32)}`;
}
