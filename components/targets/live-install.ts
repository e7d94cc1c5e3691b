// Installs a new revision of a live directory atomically, the way a Kubernetes ConfigMap or
// Secret volume does: the files go into `..<revision>/`, then one rename points `..data` at it
// (the moment the workload's watcher sees: an inotify MOVED_TO in the directory), and each
// top-level entry is a link through `..data`. A reader sees the old revision or the new one,
// never a mix. The Docker target runs this function's source in its writer container
// (`node -e`); the local stack calls it directly. It takes fs and path as arguments so that
// its source stands alone.

type Fs = typeof import('node:fs');
type Path = typeof import('node:path');

export function installLiveRevision(fs: Fs, path: Path, staging: string, dir: string, revision: string): void {
  const data = '..data';
  const target = `..${revision}`;
  fs.mkdirSync(staging, { recursive: true }); // a revision may have no files (no credential yet)
  fs.mkdirSync(dir, { recursive: true });
  fs.rmSync(path.join(dir, target), { recursive: true, force: true });
  fs.cpSync(staging, path.join(dir, target), { recursive: true });
  const entries = fs.readdirSync(path.join(dir, target));
  // New top-level entries first: they dangle until the swap, and nothing names them before it.
  for (const name of entries) {
    const link = path.join(dir, name);
    let exists = true;
    try {
      fs.lstatSync(link);
    } catch {
      exists = false;
    }
    if (!exists) fs.symlinkSync(path.join(data, name), link);
  }
  // The swap: one rename of a link onto `..data`.
  const next = path.join(dir, `${data}_tmp`);
  fs.rmSync(next, { force: true });
  fs.symlinkSync(target, next);
  fs.renameSync(next, path.join(dir, data));
  // Then the leftovers: entries the new revision no longer has, and older revisions.
  for (const name of fs.readdirSync(dir)) {
    if (name.startsWith('..')) {
      if (name !== data && name !== target) fs.rmSync(path.join(dir, name), { recursive: true, force: true });
    } else if (!entries.includes(name)) {
      fs.rmSync(path.join(dir, name), { force: true });
    }
  }
}

/** The `node -e` program that runs installLiveRevision on its arguments (staging, dir, revision, and again for more pairs). */
export function liveInstallProgram(): string {
  return [
    `const install = ${installLiveRevision.toString()};`,
    "const [, ...a] = process.argv; for (let i = 0; i + 2 < a.length; i += 3) install(require('node:fs'), require('node:path'), a[i], a[i + 1], a[i + 2]);",
  ].join('\n');
}
