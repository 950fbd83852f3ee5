// Build the dashboard into dist/: content-hashed JS and CSS under dist/assets/, and
// dist/index.html naming them. Deterministic: the same sources and lockfile give the same
// bytes (CI rebuilds and compares with the committed dist/).
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');

const result = await build({
  absWorkingDir: here,
  entryPoints: ['src/main.tsx'],
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  outdir: 'dist/assets',
  entryNames: 'app-[hash]',
  assetNames: '[name]-[hash]',
  legalComments: 'eof',
  charset: 'utf8',
  sourcemap: false,
  metafile: true,
  write: false,
  logLevel: 'warning',
});

rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, 'assets'), { recursive: true });
const names = {};
for (const file of result.outputFiles) {
  writeFileSync(file.path, file.contents);
  const name = basename(file.path);
  if (name.endsWith('.js')) names.js = name;
  if (name.endsWith('.css')) names.css = name;
}
if (!names.js || !names.css) throw new Error(`build produced ${JSON.stringify(names)}`);
const index = readFileSync(join(here, 'index.html'), 'utf8')
  .replace('{{js}}', names.js)
  .replace('{{css}}', names.css);
writeFileSync(join(dist, 'index.html'), index);
copyFileSync(join(here, 'favicon.svg'), join(dist, 'favicon.svg'));
for (const [name, size] of Object.entries(names).map(([, n]) => [n, readFileSync(join(dist, 'assets', n)).length])) {
  console.log(`dist/assets/${name} ${(size / 1024).toFixed(1)} KiB`);
}
