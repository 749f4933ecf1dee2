// Paths of the repository, whatever the working directory of the test runner.

import { fileURLToPath } from 'node:url';

/** Absolute path of a file given relative to the repository root. */
export function repoPath(relative) {
  return fileURLToPath(new URL(`../../../${relative}`, import.meta.url));
}
