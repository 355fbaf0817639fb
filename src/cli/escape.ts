/**
 * Text from other processes (command lines, command names) and from the command line on its way
 * to a terminal. A terminal obeys control characters wherever they appear: ESC and the C1 CSI
 * (U+009B) start sequences that set the window title, clear the screen, recolour text or write
 * the clipboard (OSC 52); bidi overrides and zero-width characters make text read as something
 * it is not. These helpers make every such character visible instead.
 */

/**
 * Control (C0, DEL, C1), format (bidi overrides and isolates, zero-width characters, soft hyphen,
 * tags) and line/paragraph separator characters: \p{Cc}, \p{Cf}, \p{Zl}, \p{Zp}.
 */
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu;
const INVISIBLE_TEST = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;
const INVISIBLE_BUT_NEWLINE = /(?!\n)[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu;
/** What JSON.stringify leaves raw: it escapes C0 inside strings, and its own newlines are structure. */
const JSON_RAW = /[\u007f-\u009f\p{Cf}\p{Zl}\p{Zp}]/gu;
const JSON_RAW_TEST = /[\u007f-\u009f\p{Cf}\p{Zl}\p{Zp}]/u;

function hex(code: number, width: number): string {
  return code.toString(16).padStart(width, '0');
}

function visibleChar(char: string): string {
  const code = char.codePointAt(0)!;
  if (code <= 0xff) return `\\x${hex(code, 2)}`;
  if (code <= 0xffff) return `\\u${hex(code, 4)}`;
  return `\\u{${code.toString(16)}}`;
}

/**
 * `text` with every control, format and separator character written out as an escape, the way a
 * JavaScript string literal writes it: ESC as `\x1b`, CSI as `\x9b`, a newline as `\x0a`, a
 * right-to-left override as `\u202e`. Printable text (any script) is left alone.
 */
export function visible(text: string): string {
  return INVISIBLE_TEST.test(text) ? text.replace(INVISIBLE, visibleChar) : text;
}

/** `visible(text)`, except that newlines stay: for messages of several lines (an error quoting a tool's output). */
export function visibleLines(text: string): string {
  return INVISIBLE_TEST.test(text) ? text.replace(INVISIBLE_BUT_NEWLINE, visibleChar) : text;
}

function jsonEscape(char: string): string {
  let out = '';
  for (let i = 0; i < char.length; i++) out += `\\u${hex(char.charCodeAt(i), 4)}`;
  return out;
}

/**
 * `JSON.stringify(value, null, indent)`, with the characters JSON leaves raw but a terminal obeys (DEL,
 * C1 controls such as U+009B, format and separator characters) written as `\uXXXX` escapes too:
 * the same JSON value, safe to print on a terminal.
 */
export function jsonText(value: unknown, indent = 2): string {
  const json = JSON.stringify(value, null, indent);
  return JSON_RAW_TEST.test(json) ? json.replace(JSON_RAW, jsonEscape) : json;
}
