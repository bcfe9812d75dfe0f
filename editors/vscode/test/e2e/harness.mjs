// Shared by the end-to-end tests: the `vscode` stand-in for the bundled extension,
// and winding the extension down as VS Code does.
import Module, { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** Makes `require('vscode')` (from the bundle) return the stand-in; `restore` undoes it. */
export function installVscodeStub() {
  const vscode = require('./vscodeStub.cjs');
  const originalLoad = Module._load;
  Module._load = function (request, ...rest) {
    if (request === 'vscode') return vscode;
    return originalLoad.call(this, request, ...rest);
  };
  return { vscode, stub: vscode.__stub, restore: () => void (Module._load = originalLoad) };
}

export async function deactivateExtension(ext, context) {
  await ext?.deactivate();
  for (const d of context?.subscriptions ?? []) {
    try {
      d.dispose();
    } catch {
      /* a disposable that fails must not keep the others alive */
    }
  }
}
