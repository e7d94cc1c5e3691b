// Builds the deployable daemon on the host (image builds have no network):
//   agentd/dist/agentd.mjs   the daemon and all its npm dependencies in one ESM file
//   agentd/dist/proto/       agentd's protos and @grpc/reflection's, found next to the bundle
// The container image copies dist/ and runs `node /app/agentd.mjs`.
//
// Usage: node agentd/scripts/build.ts [--outdir DIR]        (or: npm run build -w agentd)
import { cp, mkdir, readFile, rm, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const AGENTD_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export interface BuildResult {
  outDir: string;
  outfile: string;
  protoDir: string;
  bytes: number;
}

// Runs before anything else in the bundle: CommonJS dependencies expect require, __dirname
// and __filename, which an ES module does not have.
const BANNER = `import { createRequire as __agentdCreateRequire } from 'node:module';
import { fileURLToPath as __agentdFileURLToPath } from 'node:url';
import { dirname as __agentdDirname, join as __agentdJoin } from 'node:path';
const require = __agentdCreateRequire(import.meta.url);
const __filename = __agentdFileURLToPath(import.meta.url);
const __dirname = __agentdDirname(__filename);
const __agentdProtoDir = __agentdJoin(__dirname, 'proto');`;

/**
 * @grpc/reflection loads its own protos from `path.join(__dirname, '../../proto/...')`,
 * relative to its package. In the bundle they live in dist/proto, so point it there (and fail
 * the build if a new version changed the code, instead of failing at run time).
 */
const reflectionProtoPath: esbuild.Plugin = {
  name: 'agentd-reflection-proto-path',
  setup(build) {
    build.onLoad({ filter: /[\\/]@grpc[\\/]reflection[\\/]build[\\/]src[\\/]implementations[\\/]reflection-v1(alpha)?\.js$/ }, async (args) => {
      const source = await readFile(args.path, 'utf8');
      const needle = /path\.join\(__dirname, '\.\.\/\.\.\/proto\//g;
      if (!needle.test(source)) {
        throw new Error(`${args.path}: expected path.join(__dirname, '../../proto/...'); @grpc/reflection changed, update agentd/scripts/build.ts`);
      }
      return { contents: source.replace(needle, "path.join(__agentdProtoDir, '"), loader: 'js' };
    });
  },
};

export async function buildBundle(opts: { outDir?: string } = {}): Promise<BuildResult> {
  const outDir = path.resolve(opts.outDir ?? path.join(AGENTD_DIR, 'dist'));
  const outfile = path.join(outDir, 'agentd.mjs');
  const protoDir = path.join(outDir, 'proto');
  await rm(outDir, { recursive: true, force: true });
  await mkdir(outDir, { recursive: true });

  await esbuild.build({
    absWorkingDir: AGENTD_DIR,
    entryPoints: [path.join(AGENTD_DIR, 'src', 'main.ts')],
    outfile,
    bundle: true,
    // Paths in the bundle's comments stay relative to agentd/ even when node_modules is a link,
    // so the same sources give the same bytes (and the same image tag) from any checkout.
    preserveSymlinks: true,
    platform: 'node',
    format: 'esm',
    target: 'node24',
    banner: { js: BANNER },
    plugins: [reflectionProtoPath],
    legalComments: 'eof',
    sourcemap: false,
    minify: false,
    logLevel: 'warning',
    // Optional peer dependencies some packages probe for at run time; never present.
    external: ['pino-pretty'],
  });

  await cp(path.join(AGENTD_DIR, 'proto'), protoDir, { recursive: true });
  const require = createRequire(path.join(AGENTD_DIR, 'package.json'));
  const reflectionPkg = path.dirname(require.resolve('@grpc/reflection/package.json'));
  await cp(path.join(reflectionPkg, 'build', 'proto', 'grpc', 'reflection'), path.join(protoDir, 'grpc', 'reflection'), { recursive: true });

  return { outDir, outfile, protoDir, bytes: (await stat(outfile)).size };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--outdir');
  const outDir = i > 0 ? process.argv[i + 1] : undefined;
  const r = await buildBundle(outDir ? { outDir } : {});
  process.stdout.write(
    `agentd bundle: ${path.relative(process.cwd(), r.outfile)} (${(r.bytes / 1024 / 1024).toFixed(1)} MiB), protos in ${path.relative(process.cwd(), r.protoDir)}\n`,
  );
}
