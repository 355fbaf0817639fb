/** The tests' XML well-formedness check catches what it must, so an SVG passing it means something. */
import { describe, expect, it } from 'vitest';
import { assertWellFormedXml } from './run';

describe('assertWellFormedXml', () => {
  it('accepts a well-formed document', () => {
    expect(() => assertWellFormedXml('<?xml version="1.0"?>\n<svg a="1"><g><text x="1">a &lt;b&gt; &amp; c</text><line/></g></svg>\n')).not.toThrow();
  });

  it.each([
    ['an unescaped <', '<svg><text>&lt;SEQ=1> <ACK=1></text></svg>'],
    ['a bare &', '<svg><text>a & b</text></svg>'],
    ['crossed tags', '<svg><g><text></g></text></svg>'],
    ['an unclosed tag', '<svg><g></svg>'],
    ['an unquoted attribute', '<svg a=1></svg>'],
    ['two roots', '<svg></svg><svg></svg>'],
  ])('rejects %s', (_, xml) => {
    expect(() => assertWellFormedXml(xml)).toThrow();
  });
});
