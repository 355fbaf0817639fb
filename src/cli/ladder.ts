/**
 * A close drawn as text, in the manner of RFC 793 figures 13 and 14: TCP A's states down the
 * left, TCP B's down the right, time going down, each row with the time (ms) it was seen, and
 * (when known) each segment as an arrow labelled `<SEQ=…><ACK=…><CTL=…>`. Pure: a string out.
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
  type DiagramEnd,
  type Segment,
} from './diagram';
import { plain, type Style } from './style';

const TIME_WIDTH = 10;
const A_WIDTH = 30;
const MIDDLE_WITH_SEGMENTS = 44;
const MIDDLE_STATES_ONLY = 4;

/** Pads `text` to `width` visible characters (colour codes take no room). */
function pad(text: string, width: number): string {
  const visible = text.replace(/\x1b\[[0-9;]*m/g, '').length;
  return text + ' '.repeat(Math.max(1, width - visible));
}

function cellText(cell: Cell | undefined, style: Style): string {
  if (!cell) return '';
  if (cell.kind === 'action') return style.action(`(${cell.text})`);
  const { entry } = cell;
  const how = `(${sourceLabel(entry)})`;
  const state = entry.anomaly ? style.anomaly(`${entry.state}!`) : style.state(entry.state);
  return `${state} ${entry.source === 'inferred' ? style.inferred(how) : style.dim(how)}`;
}

/**
 * A segment as RFC 793 draws it: `--> <SEQ=…> -->` from A, `<-- … <--` from B; `...` for the
 * part of the way it has not yet gone (held on the wire: `--> … ...`; delivered after a hold:
 * `... … -->`, as figure 14's delayed FIN), `X` where it was lost.
 */
function arrow(segment: Segment, width: number): string {
  const label = segmentLabel(segment);
  const leg = segmentLeg(segment);
  const fromA = segment.from === 'a';
  const sent = fromA ? '-->' : '<--';
  const [near, far] = leg === 'held' ? [sent, '...'] : leg === 'released' ? ['...', sent] : leg === 'lost' ? [sent, fromA ? '--X' : 'X--'] : [sent, sent];
  // The sender's end is drawn on its side: A's on the left, B's on the right.
  const [head, tail] = fromA ? [near, far] : [far, near];
  const text = `${head} ${label} ${tail}`;
  return text.length >= width ? text : text + ' '.repeat(width - text.length);
}

function endHeader(name: string, end: DiagramEnd): string {
  const local = addressOf(end.local);
  const remote = addressOf(end.remote);
  return `${name}: ${end.label}${local ? ` ${local}` : ''}${remote ? ` -> ${remote}` : ''}`;
}

/**
 * The ladder of `diagram` as lines of text (no trailing newline). `style` colours it; the default
 * is plain text.
 */
export function renderLadder(diagram: Diagram, style: Style = plain): string {
  const middle = diagram.segments ? MIDDLE_WITH_SEGMENTS : MIDDLE_STATES_ONLY;
  const out: string[] = [];
  out.push(style.title(`finwait demo ${diagram.scenario}: ${diagram.title}`));
  out.push(pathLine(diagram));
  out.push(endHeader('TCP A', diagram.a));
  out.push(endHeader('TCP B', diagram.b));
  out.push('');
  out.push(style.dim(`${'time ms'.padStart(TIME_WIDTH)}  ${pad('TCP A', A_WIDTH)}${' '.repeat(middle)}TCP B`));
  for (const row of layout(diagram)) {
    const time = style.dim(rowTime(row, diagram.t0).padStart(TIME_WIDTH));
    if (row.segment) {
      const drawn = arrow(row.segment, middle);
      const tag = row.segment.verdict && row.segment.verdict !== 'pass' ? style.dim(` [${row.segment.verdict}]`) : '';
      out.push(`${time}  ${' '.repeat(A_WIDTH)}${style.segment(drawn)}${tag}`.trimEnd());
      continue;
    }
    const left = cellText(row.a, style);
    const right = cellText(row.b, style);
    const line = right ? `${pad(left, A_WIDTH)}${' '.repeat(middle)}${right}` : left;
    out.push(`${time}  ${line}`.trimEnd());
  }
  out.push('');
  out.push(`TCP A: ${endLine(diagram.a)}`);
  out.push(`TCP B: ${endLine(diagram.b)}`);
  const notes = diagram.segments ? diagram.notes : [...diagram.notes, NO_SEGMENTS_NOTE];
  if (notes.length > 0) {
    out.push('');
    for (const note of notes) out.push(`note: ${note}`);
  }
  const sources = legend(diagram);
  if (sources.length > 0) {
    out.push('');
    for (const line of sources) out.push(style.dim(line));
  }
  return out.join('\n');
}
