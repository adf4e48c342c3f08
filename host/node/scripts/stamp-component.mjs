// Records which component the transpiled engine came from: build/component.json holds
// the SHA-256 of the exact file jco transpiled (the digest `trustlog component export`
// prints), which every command reports as `component_sha256`.

import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

const [file] = process.argv.slice(2);
if (!file) {
  process.stderr.write('usage: node scripts/stamp-component.mjs build/trustlog.wasm\n');
  process.exit(2);
}
const bytes = readFileSync(file);
const jco = JSON.parse(readFileSync(new URL('../node_modules/@bytecodealliance/jco/package.json', import.meta.url), 'utf8')).version;
const stamp = {
  file: basename(file),
  sha256: createHash('sha256').update(bytes).digest('hex'),
  bytes: bytes.length,
  jco,
};
writeFileSync(join(dirname(file), 'component.json'), `${JSON.stringify(stamp, null, 2)}\n`);
console.log(`${stamp.sha256}  ${file} (transpiled with jco ${jco})`);
