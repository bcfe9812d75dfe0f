// Safe markdown: markdown-it with raw HTML disabled, then DOMPurify over its output, so model
// text can never inject markup, scripts or event handlers. The page's CSP is the second wall.
import DOMPurify from 'dompurify';
import MarkdownIt from 'markdown-it';

const md = new MarkdownIt({
  html: false,
  linkify: true,
  breaks: false,
  typographer: false,
});

// Only web and mail links; markdown-it already refuses javascript:, vbscript:, file: and most data:.
const SAFE_LINK = /^(https?:|mailto:|#)/i;
const defaultValidateLink = md.validateLink.bind(md);
md.validateLink = (url: string) => defaultValidateLink(url) && (SAFE_LINK.test(url.trim()) || !/^[a-z][a-z0-9+.-]*:/i.test(url.trim()));

const PURIFY_CONFIG = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select', 'iframe', 'object', 'embed', 'svg', 'math'],
  FORBID_ATTR: ['style', 'srcset'],
  ALLOW_DATA_ATTR: false,
};

let hooked = false;
function ensureHooks(): void {
  if (hooked) return;
  hooked = true;
  DOMPurify.addHook('afterSanitizeAttributes', (node) => {
    if (node.tagName === 'A') {
      node.setAttribute('rel', 'noopener noreferrer');
      const href = node.getAttribute('href') ?? '';
      if (href && !SAFE_LINK.test(href) && /^[a-z][a-z0-9+.-]*:/i.test(href)) node.removeAttribute('href');
    }
    if (node.tagName === 'IMG') {
      // Remote images are blocked by the CSP anyway; say so instead of showing a broken image.
      const src = node.getAttribute('src') ?? '';
      if (!src.startsWith('data:image/')) {
        node.setAttribute('data-blocked-src', src);
        node.removeAttribute('src');
        node.setAttribute('alt', `[image blocked: ${node.getAttribute('alt') || src}]`);
      }
    }
  });
}

/** Markdown to sanitised HTML. */
export function renderMarkdownToHtml(text: string): string {
  ensureHooks();
  const html = md.render(text);
  return DOMPurify.sanitize(html, PURIFY_CONFIG) as unknown as string;
}

export function escapeHtml(s: string): string {
  return s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}
