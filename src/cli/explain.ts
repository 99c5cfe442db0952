import * as path from 'node:path';
import { z } from 'zod';
import { ArtifactStore } from '../pipeline/artifacts';
import { StepRunner } from '../pipeline/context';
import { keyInputChanges } from '../pipeline/key-diff';
import { KEY_PATTERN } from '../pipeline/keys';
import type { KeyRecord } from '../pipeline/step-keys';
import type { LoadedConfig } from '../config';
import { connectBuildHost, type Host } from '../host';
import { imageKey, MANIFEST_SUFFIX } from '../store/layout';

/**
 * `rootfs explain <lang>`: why each step behind the published image ran. It walks the image's
 * chain of artifacts on the build host (image → verify → tree steps → base, by the `previous` in
 * each artifact's key record) and compares each with the closest earlier artifact of the same
 * step and language: the differences are what made the step run. It reads small files only (the
 * image's manifest, key records, meta.json) and lists artifacts with one `find` per step.
 */

export interface ExplainedStep {
  step: string;
  key: string;
  /** When the artifact was published; absent when it is gone from the store. */
  builtAt?: string;
  /** `no-record`: built before artifacts kept their key input. `first`: nothing earlier to compare with. */
  state: 'gone' | 'no-record' | 'first' | 'changed';
  comparedWith?: { key: string; builtAt?: string };
  changes: string[];
}

export interface Explanation {
  language: string;
  image: string;
  artifactKey: string;
  treeKey?: string;
  /** From the base to the image, in build order. */
  steps: ExplainedStep[];
}

const Key = z.string().regex(KEY_PATTERN);
const PublishedManifest = z.object({ artifactKey: Key, treeKey: Key.optional() });

export async function explainImage(host: Host, workspace: string, language: string): Promise<Explanation> {
  const store = new ArtifactStore(new StepRunner(host), workspace);
  const image = path.posix.join(workspace, 'images', imageKey(language));
  const manifestFile = `${image}${MANIFEST_SUFFIX}`;
  if (!(await host.stat(manifestFile))) {
    throw new Error(
      `${language} has no image in ${path.posix.dirname(image)}: build it first (rootfs create ${language})`,
    );
  }
  let manifest: z.infer<typeof PublishedManifest>;
  try {
    manifest = PublishedManifest.parse(JSON.parse((await host.readFile(manifestFile)).toString('utf8')));
  } catch (err) {
    const why = (err as Error).message.split('\n')[0];
    throw new Error(`${manifestFile} names no artifact to explain (${why}): rebuild the image`, { cause: err });
  }

  // The chain, image first. Without a record the way down is unknown, except that an image is made
  // from the tree its manifest names: the walk goes on there.
  const chain: Array<{ key: string; record: KeyRecord | null }> = [];
  const seen = new Set<string>();
  for (let key: string | null = manifest.artifactKey; key && !seen.has(key); ) {
    seen.add(key);
    const record = await store.keyRecord(key);
    chain.push({ key, record });
    key = record ? record.previous : manifest.treeKey && !seen.has(manifest.treeKey) ? manifest.treeKey : null;
  }

  const listed = new Map<string, Array<{ key: string; time: number }>>();
  const recordedOf = async (step: string) => {
    if (!listed.has(step)) listed.set(step, await store.recorded(step));
    return listed.get(step)!;
  };
  const builtAt = async (key: string) => (await store.lookup(key))?.createdAt;

  const steps: ExplainedStep[] = [];
  for (const { key, record } of chain.reverse()) {
    const step = key.slice(0, key.lastIndexOf('-'));
    const at = await builtAt(key);
    if (!at) {
      steps.push({ step, key, state: 'gone', changes: [] });
    } else if (!record) {
      steps.push({ step, key, builtAt: at, state: 'no-record', changes: [] });
    } else {
      const earlier = await closestEarlier(store, await recordedOf(step), record);
      if (!earlier) {
        steps.push({ step, key, builtAt: at, state: 'first', changes: [] });
      } else {
        const comparedWith = { key: earlier.key, builtAt: await builtAt(earlier.key) };
        steps.push({
          step,
          key,
          builtAt: at,
          state: 'changed',
          comparedWith,
          changes: keyInputChanges(earlier, record),
        });
      }
    }
  }
  return { language, image, artifactKey: manifest.artifactKey, treeKey: manifest.treeKey, steps };
}

/**
 * The most recent artifact published before `record`'s of the same step and language (the base,
 * shared by all languages, has none). Records that cannot be read are passed over: they are not
 * what is being explained.
 */
async function closestEarlier(
  store: ArtifactStore,
  recorded: Array<{ key: string; time: number }>,
  record: KeyRecord,
): Promise<KeyRecord | null> {
  const own = recorded.find((r) => r.key === record.key);
  if (!own) return null;
  for (const candidate of recorded) {
    if (candidate.key === record.key || candidate.time > own.time) continue;
    const other = await store.keyRecord(candidate.key).catch(() => null);
    if (other && other.step === record.step && other.language === record.language) return other;
  }
  return null;
}

export function formatExplanation(e: Explanation): string {
  const lines = [
    `${e.language}: ${e.image} is ${e.artifactKey}${e.treeKey ? `, made from the tree ${e.treeKey}` : ''}`,
  ];
  for (const s of e.steps) {
    const head = `${s.step.padEnd(9)} ${s.key}`;
    if (s.state === 'gone') lines.push(`${head}  gone from the artifact store`);
    else if (s.state === 'no-record')
      lines.push(`${head}  built ${s.builtAt}: no record (built before artifacts kept their key input)`);
    else if (s.state === 'first')
      lines.push(`${head}  built ${s.builtAt}: no earlier ${s.step} artifact to compare with`);
    else {
      const other = s.comparedWith!;
      lines.push(`${head}  built ${s.builtAt}, since ${other.key}${other.builtAt ? ` (built ${other.builtAt})` : ''}:`);
      lines.push(...s.changes.map((c) => `  ${c}`));
    }
  }
  return lines.join('\n') + '\n';
}

export async function explainCommand(
  loaded: LoadedConfig,
  language: string,
  opts: { json?: boolean } = {},
): Promise<number> {
  const host = await connectBuildHost(loaded);
  try {
    const explanation = await explainImage(host, loaded.config.workspace, language);
    process.stdout.write(opts.json ? JSON.stringify(explanation, null, 2) + '\n' : formatExplanation(explanation));
    return 0;
  } catch (err) {
    console.error(`${language}: ${(err as Error).message}`);
    return 1;
  } finally {
    await host.close();
  }
}
