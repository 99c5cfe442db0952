import * as path from 'node:path';
import type { LanguageSpec } from '../config/schema';
import type { StepRunner } from './context';
import { OPERATOR_PATH, renderUnit, UNIT_PATH, UNIT_WANTS_LINK } from './render';

/**
 * Checks a finished tree for what every bootable image must have. Symlinks are resolved inside
 * the tree (an absolute link target means the image's root, not the build host's).
 */

async function readlinkIn(runner: StepRunner, tree: string, p: string): Promise<string | null> {
  const chunks: Buffer[] = [];
  const { code } = await runner.host.run(['readlink', '--', path.posix.join(tree, p)], {
    onStdout: (c) => chunks.push(c),
  });
  return code === 0 ? Buffer.concat(chunks).toString('utf8').trim() : null;
}

/** Follows symlinks inside the tree; returns the final in-image path, or null when it dangles. */
export async function resolveInTree(runner: StepRunner, tree: string, p: string): Promise<string | null> {
  let current = p;
  for (let hops = 0; hops < 16; hops++) {
    const target = await readlinkIn(runner, tree, current);
    if (target === null) return (await runner.host.stat(path.posix.join(tree, current))) ? current : null;
    current = target.startsWith('/') ? target : path.posix.join(path.posix.dirname(current), target);
  }
  return null;
}

export async function inspectTree(
  runner: StepRunner,
  tree: string,
  language: string,
  spec: LanguageSpec,
): Promise<string[]> {
  const problems: string[] = [];
  const at = (p: string) => path.posix.join(tree, p);

  const init = await resolveInTree(runner, tree, '/sbin/init');
  if (!init || !/systemd$/.test(init))
    problems.push(`/sbin/init does not resolve to systemd (got ${init ?? 'nothing'})`);

  const operator = await runner.host.stat(at(OPERATOR_PATH));
  if (!operator?.isFile) problems.push(`${OPERATOR_PATH} is missing`);
  else if ((operator.mode & 0o7777) !== 0o755)
    problems.push(`${OPERATOR_PATH} has mode ${(operator.mode & 0o7777).toString(8)}, not 755`);

  const unit = (await runner.host.stat(at(UNIT_PATH)))
    ? (await runner.host.readFile(at(UNIT_PATH))).toString('utf8')
    : null;
  if (unit !== renderUnit(spec))
    problems.push(`${UNIT_PATH} is ${unit === null ? 'missing' : 'not the expected unit'}`);
  if ((await resolveInTree(runner, tree, UNIT_WANTS_LINK)) !== UNIT_PATH)
    problems.push(`${UNIT_WANTS_LINK} does not resolve to ${UNIT_PATH}`);

  if (!(await runner.host.stat(at(`/etc/profile.d/${language}.sh`))))
    problems.push(`/etc/profile.d/${language}.sh is missing`);
  if (await runner.host.stat(at('/usr/sbin/policy-rc.d'))) problems.push('/usr/sbin/policy-rc.d was left in the image');

  const leftovers = await runner.read([
    'find',
    at('/var/lib/apt/lists'),
    at('/var/cache/apt'),
    '-type',
    'f',
    '-not',
    '-name',
    'lock',
  ]);
  if (leftovers.trim())
    problems.push(`apt lists or caches left in the image: ${leftovers.trim().split('\n').slice(0, 3).join(', ')}`);
  return problems;
}
