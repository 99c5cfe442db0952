import * as path from 'node:path';
import { buildSpecOf, localInputs } from '../pipeline/build-spec';
import { StepRunner } from '../pipeline/context';
import { Pipeline } from '../pipeline/pipeline';
import { connectBuildHost } from '../host';
import type { LoadedConfig } from '../config';
import { humanSize } from '../store';

/**
 * `rootfs customize <lang> -- <command…>`: a one-off change to a built image. The command runs in
 * a copy of the image's tree on the build host; the result is a new artifact, verified and made
 * into the image like any build. The config is the durable place: the next build from config
 * publishes the image without the change.
 */
export async function customizeCommand(loaded: LoadedConfig, language: string, argv: string[]): Promise<number> {
  console.error(
    `warning: this changes only the current ${language} image; the next build from config replaces it.\n` +
      `         For a lasting change, put it in the config: languages.${language}.packages or languages.${language}.files.`,
  );
  const interrupted = new AbortController();
  const onInterrupt = () => interrupted.abort();
  process.once('SIGINT', onInterrupt);
  const host = await connectBuildHost(loaded);
  try {
    const runner = new StepRunner(host, () => {}, interrupted.signal);
    const spec = buildSpecOf(loaded, [language]);
    const pipeline = new Pipeline(runner, { config: spec, ...localInputs(spec, loaded) });
    const changed = await pipeline.customize(language, argv, (chunk) => process.stderr.write(chunk));
    console.error(
      `${language}: ${changed.reused ? 'the same change was made before, reused' : 'changed'}: artifact ${changed.key}`,
    );
    const verified = await pipeline.verify(language, changed.key);
    const image = await pipeline.image(language, verified.key, changed.key, changed.customizations);
    const { sizeBytes, sha256, versions } = image.data;
    console.log(
      `${path.basename(pipeline.imagePath(language))}  ${humanSize(sizeBytes)}  sha256 ${sha256.slice(0, 12)}  ${versions.join('; ')}`,
    );
    console.log(`customizations: ${changed.customizations.map((c) => c.join(' ')).join(' | ')}`);
    console.error(`upload it with: rootfs s3 upload-single ${language}`);
    return 0;
  } catch (err) {
    if (interrupted.signal.aborted) {
      console.error(`${language}: interrupted; the published image is unchanged`);
      return 130;
    }
    console.error(`${language}: ${(err as Error).message}\nthe published image is unchanged`);
    return 1;
  } finally {
    process.removeListener('SIGINT', onInterrupt);
    await host.close();
  }
}
