// Shared by the end-to-end tests: winding the bundled extension down as VS Code does
// (deactivate, then dispose what it registered).

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
