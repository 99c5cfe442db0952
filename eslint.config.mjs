// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { builtinModules } from 'node:module';

/** What workflow code must never import: Node built-ins and anything doing I/O. Types are fine. */
const workflowForbidden = [
  ...builtinModules,
  ...builtinModules.map((m) => `node:${m}`),
  'ssh2',
  '@aws-sdk/*',
  '@temporalio/activity',
  '@temporalio/client',
  '@temporalio/worker',
  '@temporalio/testing',
  'yaml',
];

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', '.tools/', '.rootfs/', 'guest/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
  {
    files: ['workflows/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: workflowForbidden,
              allowTypeImports: true,
              message:
                'Workflow code must stay deterministic: no Node built-ins or I/O libraries (import type is fine).',
            },
          ],
        },
      ],
    },
  },
);
