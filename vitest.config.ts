import { defineConfig } from 'vitest/config';

// One runner for every rung of the verification ladder (README.md, "Tests"). Suites that start real
// processes or containers choose free ports themselves, so files may run in parallel; the
// machines have 2 cores, hence at most 2 workers.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['node_modules/**'],
    testTimeout: 60_000,
    hookTimeout: 600_000,
    maxWorkers: 2,
    reporters: ['default'],
  },
});
