// A minimal POSIX ustar writer (regular files only), enough for an OPA bundle. Each file is a
// 512-byte header followed by its content padded to 512 bytes; the archive ends with two zero
// blocks. Deterministic: mtime, uid and gid are fixed, so equal input gives equal bytes.
const BLOCK = 512;

export interface TarFile {
  /** Relative path, ASCII, at most 100 bytes (no prefix field needed for our names). */
  name: string;
  content: Buffer;
  /** Seconds since the epoch (default 0). */
  mtime?: number;
}

function octal(value: number, width: number): string {
  // width - 1 octal digits, then NUL.
  return value.toString(8).padStart(width - 1, '0') + '\0';
}

function header(file: TarFile): Buffer {
  const name = Buffer.from(file.name, 'ascii');
  if (name.length === 0 || name.length > 100 || !/^[\x21-\x7e]+$/.test(file.name)) throw new Error(`tar: unsupported file name '${file.name}'`);
  const h = Buffer.alloc(BLOCK, 0);
  name.copy(h, 0);
  h.write(octal(0o644, 8), 100, 'ascii'); // mode
  h.write(octal(0, 8), 108, 'ascii'); // uid
  h.write(octal(0, 8), 116, 'ascii'); // gid
  h.write(octal(file.content.length, 12), 124, 'ascii'); // size
  h.write(octal(Math.floor(file.mtime ?? 0), 12), 136, 'ascii'); // mtime
  h.write('        ', 148, 'ascii'); // checksum: spaces while summing
  h.write('0', 156, 'ascii'); // typeflag: regular file
  h.write('ustar\0', 257, 'ascii'); // magic
  h.write('00', 263, 'ascii'); // version
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
  return h;
}

/** The tar archive (uncompressed) of these files, in this order. */
export function ustar(files: TarFile[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of files) {
    parts.push(header(f), f.content);
    const pad = (BLOCK - (f.content.length % BLOCK)) % BLOCK;
    if (pad > 0) parts.push(Buffer.alloc(pad, 0));
  }
  parts.push(Buffer.alloc(2 * BLOCK, 0));
  return Buffer.concat(parts);
}
