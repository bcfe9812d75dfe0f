// The editor tools' pure parts (no `vscode`): their declarations as `clientTools`, and the text
// arithmetic of `apply_edit`. Tested under plain Node.
import type { ClientTool } from '../protocol';

export const EDITOR_TOOL_DEFINITIONS: ClientTool[] = [
  {
    name: 'editor_selection',
    description:
      "The user's current selection in the active editor of VS Code: file path, language, line/column range (0-based) and the selected text (empty when nothing is selected).",
    parameters: { type: 'object', properties: {}, additionalProperties: false },
  },
  {
    name: 'open_editors',
    description:
      'The files open in VS Code editor tabs: path (relative to the workspace when inside it), language, whether it has unsaved changes, and which one is active.',
    parameters: { type: 'object', properties: {}, additionalProperties: false },
  },
  {
    name: 'read_document',
    description:
      'The current text of a document as VS Code holds it, including unsaved changes (unlike reading the file from disk). Optional 1-based inclusive line range.',
    parameters: {
      type: 'object',
      properties: {
        path: { type: 'string', description: 'File path, relative to the workspace root or absolute.' },
        startLine: { type: 'integer', minimum: 1, description: 'First line to return (1-based).' },
        endLine: { type: 'integer', minimum: 1, description: 'Last line to return (1-based, inclusive).' },
      },
      required: ['path'],
      additionalProperties: false,
    },
  },
  {
    name: 'apply_edit',
    description:
      'Proposes an edit to a file in the editor. VS Code shows the user a diff and the user accepts or rejects it; the result says which. ' +
      'Either give `edits` (each replaces the exact text `oldString` with `newString`; `oldString` must occur exactly once unless `replaceAll`), ' +
      'or `content` to replace the whole file (or create it).',
    parameters: {
      type: 'object',
      properties: {
        path: { type: 'string', description: 'File path, relative to the workspace root or absolute.' },
        edits: {
          type: 'array',
          items: {
            type: 'object',
            properties: {
              oldString: { type: 'string' },
              newString: { type: 'string' },
              replaceAll: { type: 'boolean' },
            },
            required: ['oldString', 'newString'],
            additionalProperties: false,
          },
        },
        content: { type: 'string', description: 'The complete new text of the file.' },
        description: { type: 'string', description: 'One line for the user: what the edit does.' },
      },
      required: ['path'],
      additionalProperties: false,
    },
  },
];

export interface TextEditSpec {
  oldString: string;
  newString: string;
  replaceAll?: boolean;
}

export interface ApplyEditInput {
  path: string;
  edits?: TextEditSpec[];
  content?: string;
  description?: string;
}

export class EditError extends Error {}

/** Validates loosely typed tool input into `ApplyEditInput`. */
export function parseApplyEditInput(input: unknown): ApplyEditInput {
  if (!input || typeof input !== 'object') throw new EditError('apply_edit needs an object input');
  const o = input as Record<string, unknown>;
  if (typeof o.path !== 'string' || o.path.trim() === '') throw new EditError('apply_edit needs `path` (a string)');
  const hasEdits = Array.isArray(o.edits) && o.edits.length > 0;
  const hasContent = typeof o.content === 'string';
  if (hasEdits === hasContent) throw new EditError('apply_edit needs exactly one of `edits` (non-empty) or `content`');
  const edits = hasEdits
    ? (o.edits as unknown[]).map((e, i) => {
        const x = e as Record<string, unknown>;
        if (!x || typeof x.oldString !== 'string' || typeof x.newString !== 'string') {
          throw new EditError(`edits[${i}] needs string \`oldString\` and \`newString\``);
        }
        return { oldString: x.oldString, newString: x.newString, replaceAll: x.replaceAll === true };
      })
    : undefined;
  return {
    path: o.path,
    edits,
    content: hasContent ? (o.content as string) : undefined,
    description: typeof o.description === 'string' ? o.description : undefined,
  };
}

/** Applies `oldString → newString` edits in order; each must match (exactly once unless replaceAll). */
export function applyTextEdits(text: string, edits: TextEditSpec[]): string {
  let out = text;
  edits.forEach((e, i) => {
    if (e.oldString === '') {
      if (out !== '') throw new EditError(`edits[${i}]: empty oldString is only allowed for an empty file`);
      out = e.newString;
      return;
    }
    const count = countOccurrences(out, e.oldString);
    if (count === 0) throw new EditError(`edits[${i}]: oldString not found in the document`);
    if (count > 1 && !e.replaceAll) {
      throw new EditError(`edits[${i}]: oldString occurs ${count} times; make it unique or set replaceAll`);
    }
    out = e.replaceAll ? out.split(e.oldString).join(e.newString) : out.replace(e.oldString, () => e.newString);
  });
  return out;
}

function countOccurrences(haystack: string, needle: string): number {
  let n = 0;
  for (let i = haystack.indexOf(needle); i >= 0; i = haystack.indexOf(needle, i + needle.length)) n++;
  return n;
}

/** Slices 1-based inclusive lines. */
export function sliceLines(text: string, startLine?: number, endLine?: number): string {
  if (startLine === undefined && endLine === undefined) return text;
  const lines = text.split('\n');
  const start = Math.max(1, startLine ?? 1);
  const end = Math.min(lines.length, endLine ?? lines.length);
  return lines.slice(start - 1, end).join('\n');
}

/** A one-line summary of how much an edit changes, for the tool result. */
export function describeChange(before: string, after: string): string {
  const a = before.split('\n');
  const b = after.split('\n');
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length - 1;
  let endB = b.length - 1;
  while (endA >= start && endB >= start && a[endA] === b[endB]) {
    endA--;
    endB--;
  }
  const removed = Math.max(0, endA - start + 1);
  const added = Math.max(0, endB - start + 1);
  return `${removed} line(s) replaced by ${added} line(s) starting at line ${start + 1}`;
}

/**
 * The 1-based, inclusive lines a selection covers, as people read them. A selection that ends
 * at column 0 of a later line (select all, or whole lines picked with Shift+Down) does not
 * include that line: nothing of it is selected.
 */
export function selectionLineRange(
  start: { line: number; character: number },
  end: { line: number; character: number },
): { first: number; last: number } {
  const [a, b] = start.line < end.line || (start.line === end.line && start.character <= end.character) ? [start, end] : [end, start];
  const last = b.line > a.line && b.character === 0 ? b.line - 1 : b.line;
  return { first: a.line + 1, last: last + 1 };
}
