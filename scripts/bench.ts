// `npm run bench`: the benchmarks of bench/ (see docs/benchmarks.md). A thin entry point.
import { main } from '../bench/main.ts';

process.exitCode = await main(process.argv.slice(2));
