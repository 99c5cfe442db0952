import * as path from 'node:path';
import { besideFile } from '../layout';

/** What a workspace keeps for the block store (docs/block-store.md, "On a host"). */
export const blocksDir = (workspace: string): string => path.join(workspace, '.blocks');
export const indexCacheDir = (workspace: string): string => path.join(blocksDir(workspace), 'indexes');
/** Earlier versions of files, kept so that a rollback fetches nothing: one folder per file name. */
export const versionsRoot = (workspace: string): string => path.join(blocksDir(workspace), 'versions');
export const versionsDir = (workspace: string, name: string): string => path.join(versionsRoot(workspace), name);
/** The record beside a file: which index it holds. */
export const recordOf = (file: string): string => besideFile(file, '.blocks.json');
/** The unfinished download of `index` into `dest`. */
export const partialOf = (dest: string, index: string): string =>
  besideFile(dest, `.${index.slice(0, 12)}.blocks-partial`);
