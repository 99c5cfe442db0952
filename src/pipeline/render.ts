import type { LanguageSpec } from '../config/schema';

/**
 * Text files the pipeline writes into every image. Values come from the config schema, which
 * already refuses quotes, `$`, `%` and newlines, so nothing here needs escaping.
 */

export const OPERATOR_PATH = '/usr/local/bin/infra.operator';
export const UNIT_NAME = 'infra.operator.service';
export const UNIT_PATH = `/etc/systemd/system/${UNIT_NAME}`;
export const UNIT_WANTS_LINK = `/etc/systemd/system/multi-user.target.wants/${UNIT_NAME}`;
export const OPERATOR_PORT = 5000;

export function renderUnit(spec: Pick<LanguageSpec, 'environment'>): string {
  const env = Object.entries(spec.environment).map(([k, v]) => `Environment=${k}=${v}`);
  return [
    '[Unit]',
    'Description=infra.operator guest agent',
    'After=network.target',
    '',
    '[Service]',
    'Type=simple',
    `ExecStart=${OPERATOR_PATH} guest --port ${OPERATOR_PORT}`,
    'Restart=always',
    'RestartSec=1',
    ...env,
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

/** Variables a login shell should not take from the unit: the unit's own HOME and its whole PATH. */
const UNIT_ONLY = new Set(['HOME', 'PATH']);

export function renderProfile(language: string, spec: Pick<LanguageSpec, 'environment' | 'path'>): string {
  const lines = [`# ${language} runtime, written by rootfs-pipeline.`];
  for (const [k, v] of Object.entries(spec.environment)) if (!UNIT_ONLY.has(k)) lines.push(`export ${k}=${v}`);
  if (spec.path.length) lines.push(`export PATH=${spec.path.join(':')}:$PATH`);
  return lines.join('\n') + '\n';
}
