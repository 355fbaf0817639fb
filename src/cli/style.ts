/**
 * Colours for the CLI's text: only on a terminal, never when `NO_COLOR` is set (no-color.org).
 * Renderers take a `Style` so they stay pure and are tested in plain text.
 */

/** How each kind of text is drawn. */
export interface Style {
  title(text: string): string;
  state(text: string): string;
  inferred(text: string): string;
  action(text: string): string;
  segment(text: string): string;
  anomaly(text: string): string;
  warn(text: string): string;
  dim(text: string): string;
}

const same = (text: string): string => text;

/** No colour at all. */
export const plain: Style = {
  title: same,
  state: same,
  inferred: same,
  action: same,
  segment: same,
  anomaly: same,
  warn: same,
  dim: same,
};

const sgr = (on: string, off: string) => (text: string) => `\x1b[${on}m${text}\x1b[${off}m`;

/** ANSI colours. */
export const ansi: Style = {
  title: sgr('1', '22'),
  state: sgr('1', '22'),
  inferred: sgr('2;3', '23;22'),
  action: sgr('36', '39'),
  segment: sgr('33', '39'),
  anomaly: sgr('31;1', '22;39'),
  warn: sgr('33;1', '22;39'),
  dim: sgr('2', '22'),
};

/** The style for `stream`: colours on a TTY unless `NO_COLOR` is set to anything non-empty. */
export function styleFor(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): Style {
  return stream.isTTY === true && !env.NO_COLOR ? ansi : plain;
}
