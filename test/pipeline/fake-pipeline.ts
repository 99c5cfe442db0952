import * as fs from 'node:fs';
import * as path from 'node:path';
import type { BuildSettings } from '../../src/pipeline/build-spec';
import { StepRunner } from '../../src/pipeline/context';
import { Pipeline } from '../../src/pipeline/pipeline';
import { LocalHost } from '../../src/host';
import { FIRST, OPERATOR_CONTENT, sha256 } from './key-fixtures';

/** A pipeline whose artifacts are built by writing files; `built` lists the steps that ran. */
export function fakePipeline(
  dir: string,
  settings: BuildSettings,
  runner = new StepRunner(new LocalHost()),
): { pipeline: Pipeline; built: string[] } {
  const pipeline = new Pipeline(runner, {
    config: settings,
    operatorPath: path.join(dir, 'operator'),
    keyringPath: path.join(dir, 'keyring.gpg'),
  });
  const built: string[] = [];
  const ensure = pipeline.store.ensure.bind(pipeline.store);
  pipeline.store.ensure = (record, _build) =>
    ensure(record, async (work) => {
      built.push(record.step);
      if (record.step === 'verify') return { versions: ['Python 3.10.12'] };
      if (record.step === 'image') {
        const file = `rootfs-${record.language}.ext4`;
        const content = `image ${record.key}\n`;
        fs.writeFileSync(path.join(work, file), content);
        return { file, sizeBytes: content.length, sizeMiB: 1, usedMiB: 0, sha256: sha256(content) };
      }
      fs.mkdirSync(path.join(work, 'tree'));
      fs.writeFileSync(path.join(work, 'tree', 'built-by'), `${record.key}\n`);
      return {};
    });
  return { pipeline, built };
}

export async function buildPython(pipeline: Pipeline) {
  const base = await pipeline.base(FIRST.archive);
  const runtime = await pipeline.runtime('python', base.key, FIRST.archive);
  const operator = await pipeline.operator('python', runtime.key, sha256(OPERATOR_CONTENT));
  const verify = await pipeline.verify('python', operator.key);
  const image = await pipeline.image('python', verify.key, operator.key);
  return { base: base.key, runtime: runtime.key, operator: operator.key, verify: verify.key, image: image.key };
}
