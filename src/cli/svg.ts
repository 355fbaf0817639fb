/**
 * A close drawn as an SVG ladder: the same rows as the text ladder (`layout()`), TCP A's axis on
 * the left, TCP B's on the right, time going down, segments as arrows between the axes. Pure: a
 * string out, a well-formed standalone SVG document.
 */
import {
  addressOf,
  endLine,
  layout,
  rowTime,
  legend,
  NO_SEGMENTS_NOTE,
  pathLine,
  segmentLabel,
  segmentLeg,
  sourceLabel,
  type Cell,
  type Diagram,
} from './diagram';

const ROW = 24;
const TOP = 100;
const LINE = 18;
const FONT = 'ui-monospace, SFMono-Regular, Menlo, Consolas, monospace';

/** Text as XML character data or an attribute value. */
export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
}

function text(x: number, y: number, content: string, attrs = ''): string {
  return `<text x="${x}" y="${y}"${attrs ? ` ${attrs}` : ''}>${escapeXml(content)}</text>`;
}

function cellSvg(cell: Cell, x: number, y: number, anchor: 'start' | 'end'): string {
  if (cell.kind === 'action') return text(x, y, `(${cell.text})`, `text-anchor="${anchor}" class="action"`);
  const { entry } = cell;
  const cls = entry.anomaly ? 'anomaly' : entry.source === 'inferred' ? 'inferred' : 'state';
  const label = `${entry.state}${entry.anomaly ? '!' : ''} (${sourceLabel(entry)})`;
  return text(x, y, label, `text-anchor="${anchor}" class="${cls}"`);
}

/** The ladder of `diagram` as an SVG document. */
export function renderSvg(diagram: Diagram): string {
  const rows = layout(diagram);
  const withSegments = diagram.segments !== undefined;
  const xTime = 70;
  const xA = 340;
  const xB = xA + (withSegments ? 380 : 200);
  const width = xB + 320;
  const yEnd = TOP + rows.length * ROW;
  const notes = withSegments ? diagram.notes : [...diagram.notes, NO_SEGMENTS_NOTE];
  const footer = [`TCP A: ${endLine(diagram.a)}`, `TCP B: ${endLine(diagram.b)}`, '', ...notes.map((n) => `note: ${n}`), '', ...legend(diagram)];
  const height = yEnd + 24 + footer.length * LINE + 12;

  const body: string[] = [];
  body.push(text(16, 24, `finwait demo ${diagram.scenario}: ${diagram.title}`, 'class="title"'));
  body.push(text(16, 42, pathLine(diagram), 'class="small"'));
  body.push(text(xA, 68, 'TCP A', 'text-anchor="middle" class="end"'));
  body.push(text(xB, 68, 'TCP B', 'text-anchor="middle" class="end"'));
  body.push(text(xA, 84, `${diagram.a.label} ${addressOf(diagram.a.local)}`.trim(), 'text-anchor="middle" class="small"'));
  body.push(text(xB, 84, `${diagram.b.label} ${addressOf(diagram.b.local)}`.trim(), 'text-anchor="middle" class="small"'));
  body.push(text(xTime, 84, 'time ms', 'text-anchor="end" class="small"'));
  body.push(`<line x1="${xA}" y1="${TOP - 8}" x2="${xA}" y2="${yEnd}" class="axis"/>`);
  body.push(`<line x1="${xB}" y1="${TOP - 8}" x2="${xB}" y2="${yEnd}" class="axis"/>`);

  rows.forEach((row, i) => {
    const y = TOP + i * ROW + 12;
    body.push(text(xTime, y, rowTime(row, diagram.t0), 'text-anchor="end" class="small"'));
    if (row.segment) {
      const s = row.segment;
      const [x1, x2] = s.from === 'a' ? [xA, xB] : [xB, xA];
      const middle = (x1 + x2) / 2;
      const leg = segmentLeg(s);
      const y1 = y - 10;
      const y2 = y + 8;
      if (leg === 'lost') {
        body.push(`<line x1="${x1}" y1="${y1}" x2="${middle}" y2="${y}" class="segment"/>`);
        body.push(text(middle, y + 4, 'X', 'text-anchor="middle" class="anomaly"'));
      } else if (leg === 'held') {
        // Sent, and waiting on the wire: the first half, dotted at its end, like figure 14's "...".
        body.push(`<line x1="${x1}" y1="${y1}" x2="${middle}" y2="${y}" class="segment"/>`);
        body.push(`<line x1="${middle}" y1="${y}" x2="${middle + (x2 - x1) / 8}" y2="${y + 2}" class="segment held"/>`);
      } else if (leg === 'released') {
        body.push(`<line x1="${middle}" y1="${y1}" x2="${x2}" y2="${y2}" class="segment" marker-end="url(#arrow)"/>`);
        body.push(`<line x1="${middle - (x2 - x1) / 8}" y1="${y1 - 2}" x2="${middle}" y2="${y1}" class="segment held"/>`);
      } else {
        body.push(`<line x1="${x1}" y1="${y1}" x2="${x2}" y2="${y2}" class="segment" marker-end="url(#arrow)"/>`);
      }
      const verdict = s.verdict && s.verdict !== 'pass' ? ` [${s.verdict}]` : '';
      body.push(text((xA + xB) / 2, y - 12, `${segmentLabel(s)}${verdict}`, 'text-anchor="middle" class="label"'));
      return;
    }
    if (row.a) {
      if (row.a.kind === 'state') body.push(`<circle cx="${xA}" cy="${y - 4}" r="3" class="dot"/>`);
      body.push(cellSvg(row.a, xA - 10, y, 'end'));
    }
    if (row.b) {
      if (row.b.kind === 'state') body.push(`<circle cx="${xB}" cy="${y - 4}" r="3" class="dot"/>`);
      body.push(cellSvg(row.b, xB + 10, y, 'start'));
    }
  });
  footer.forEach((line, i) => {
    if (line) body.push(text(16, yEnd + 24 + i * LINE, line, 'class="small"'));
  });

  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${FONT}" font-size="13">`,
    `<title>${escapeXml(`finwait demo ${diagram.scenario}: ${diagram.title}`)}</title>`,
    '<defs>',
    '<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#b58900"/></marker>',
    '<style>',
    '.title { font-weight: bold; font-size: 15px; } .end { font-weight: bold; } .small { font-size: 11px; fill: #555; }',
    '.state { font-weight: bold; fill: #111; } .inferred { font-style: italic; fill: #888; } .anomaly { fill: #c00; font-weight: bold; }',
    '.action { fill: #0a6b7a; } .label { font-size: 11px; fill: #7a5c00; } .axis { stroke: #333; stroke-width: 2; }',
    '.segment { stroke: #b58900; stroke-width: 1.5; } .held { stroke-dasharray: 2 4; } .dot { fill: #333; }',
    '</style>',
    '</defs>',
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}
