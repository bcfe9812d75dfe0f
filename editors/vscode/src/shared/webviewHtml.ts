// The chat view's HTML. Used by the extension (with webview URIs) and by the tests, which serve
// the same page over loopback with a stand-in for `acquireVsCodeApi`.

export interface WebviewHtmlOptions {
  /** `webview.cspSource` in VS Code; the page's own origin in tests. */
  cspSource: string;
  nonce: string;
  scriptUri: string;
  styleUri: string;
  /** Test only: a script run before the view's own (with the nonce), e.g. the API stand-in. */
  preludeScript?: string;
  /** Extra body classes (VS Code adds `vscode-light` / `vscode-dark` itself). */
  bodyClass?: string;
}

export function renderWebviewHtml(o: WebviewHtmlOptions): string {
  // Strict policy: no inline script without the nonce, no eval, nothing remote. Images only from
  // the extension or data: URIs, so that model output cannot make the view fetch a tracking URL.
  const csp = [
    "default-src 'none'",
    `style-src ${o.cspSource} 'nonce-${o.nonce}'`,
    `script-src 'nonce-${o.nonce}'`,
    `img-src ${o.cspSource} data:`,
    `font-src ${o.cspSource}`,
    "connect-src 'none'",
    "frame-src 'none'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
  ].join('; ');
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${esc(csp)}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${esc(o.styleUri)}" nonce="${esc(o.nonce)}">
<title>agentd</title>
</head>
<body class="${esc(o.bodyClass ?? '')}">
<div id="app"></div>
${o.preludeScript ? `<script nonce="${esc(o.nonce)}">${o.preludeScript}</script>\n` : ''}<script nonce="${esc(o.nonce)}" src="${esc(o.scriptUri)}"></script>
</body>
</html>
`;
}
