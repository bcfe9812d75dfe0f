#!/usr/bin/env node
// Bundles with esbuild (type-checking is `tsc --noEmit`, run before this by `npm run build`):
//   dist/extension.js   the extension (Node, CommonJS, `vscode` external)
//   dist/webview.js     the chat page (browser, IIFE)
//   out/client.cjs      the client layer alone, for the Node tests
//   out/webviewHtml.cjs the page's HTML template, for the webview tests
import * as esbuild from 'esbuild';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const production = process.argv.includes('--production');
const common = { absWorkingDir: root, bundle: true, logLevel: 'warning', legalComments: 'none', sourcemap: !production && 'linked' };

await Promise.all([
  esbuild.build({
    ...common,
    entryPoints: ['src/extension.ts'],
    outfile: 'dist/extension.js',
    platform: 'node',
    format: 'cjs',
    target: 'node18',
    external: ['vscode'],
    minify: production,
  }),
  esbuild.build({
    ...common,
    entryPoints: ['src/webview/main.ts'],
    outfile: 'dist/webview.js',
    platform: 'browser',
    format: 'iife',
    target: ['chrome114'],
    minify: production,
  }),
  esbuild.build({
    ...common,
    entryPoints: ['src/client/index.ts'],
    outfile: 'out/client.cjs',
    platform: 'node',
    format: 'cjs',
    target: 'node18',
  }),
  esbuild.build({
    ...common,
    entryPoints: ['src/shared/webviewHtml.ts'],
    outfile: 'out/webviewHtml.cjs',
    platform: 'node',
    format: 'cjs',
    target: 'node18',
  }),
]);
console.log(`bundle: dist/extension.js, dist/webview.js, out/client.cjs, out/webviewHtml.cjs${production ? ' (production)' : ''}`);
