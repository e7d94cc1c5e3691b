// `npm run bench`: the benchmarks of bench/ (see docs/benchmarks.md). A thin entry point.
import { main } from './main.ts';

process.exitCode = await main(process.argv.slice(2));
