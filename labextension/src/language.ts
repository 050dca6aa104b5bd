/**
 * The `%%mpc` cell language: a CodeMirror 6 stream parser.
 *
 * A cell looks like
 *
 *     %%mpc --out by_sex --plot bar
 *     SELECT sex, COUNT(*), AVG(age), MEDIAN(bmi)  -- one row per sex
 *     FROM patients WHERE age >= 18 GROUP BY sex
 *
 * The first line is the magic and its options; the rest is the SQL-like query
 * language of `mpc_jupyter`. Token names are CodeMirror highlight tags, so the
 * colours come from the JupyterLab theme (`--jp-mirror-editor-*-color`).
 */
import type { StreamParser, StringStream } from '@codemirror/language';

/** MIME type given to `%%mpc` cells. */
export const MPC_MIME = 'text/x-mpc';

/** First-line prefix that marks a cell as an MPC query. */
export const MPC_MAGIC = '%%mpc';

/** Does this cell source hold an MPC query? */
export function isMpcSource(source: string): boolean {
  // A cell magic must be the very first characters of the cell (`%%mpcx` is another magic).
  return source.startsWith(MPC_MAGIC) && !/^%%mpc\w/.test(source);
}

export const KEYWORDS = new Set([
  'ALL', 'AND', 'ANY', 'AS', 'ASC', 'BETWEEN', 'BY', 'CASE', 'CAST', 'CUBE', 'DESC', 'DISTINCT', 'ELSE',
  'END', 'EXCEPT', 'EXISTS', 'FILTER', 'FROM', 'GROUP', 'HAVING', 'ILIKE', 'IN', 'INNER',
  'INTERSECT', 'INTERVAL', 'IS', 'JOIN', 'LEFT', 'LIKE', 'LIMIT', 'NOT', 'ON', 'OR', 'ORDER',
  'OUTER', 'OVER', 'PARTITION', 'RIGHT', 'ROLLUP', 'SELECT', 'THEN', 'UNION', 'USING', 'WHEN', 'WHERE',
  'WITH', 'WITHIN'
]);

export const ATOMS = new Set(['NULL', 'TRUE', 'FALSE', 'CURRENT_DATE']);

/** Aggregates of docs/query-language.md, and the scalar functions allowed in queries. */
export const FUNCTIONS = new Set([
  // aggregates
  'COUNT', 'SUM', 'AVG', 'VARIANCE', 'VAR_SAMP', 'VAR_POP', 'STDDEV', 'STDDEV_SAMP', 'STDDEV_POP',
  'MEDIAN', 'QUANTILE_CONT', 'PERCENTILE_CONT', 'MIN', 'MAX', 'PROPORTION', 'RATE',
  // scalar
  'ABS', 'CEIL', 'COALESCE', 'DATE', 'DATE_PART', 'DATE_TRUNC', 'DAY', 'EXP', 'EXTRACT', 'FLOOR',
  'GREATEST', 'LEAST', 'LENGTH', 'LN', 'LOG', 'LOWER', 'MONTH', 'ROUND', 'SQRT', 'SUBSTRING',
  'UPPER', 'YEAR'
]);

/** Options of the `%%mpc` cell magic (mpc_jupyter/command.py), shown as attributes. */
export const MAGIC_OPTIONS = new Set(['--out', '--plot', '--explain', '--shares', '--analyst']);

/** Options followed by a value: a variable name, a chart kind (optional for --plot). */
const VALUED_OPTIONS = new Set(['--out', '--plot', '--analyst']);

export interface IMpcState {
  /** Index of the current line in the cell (-1 before the first). */
  line: number;
  /** The first line is a `%%mpc` magic line. */
  magicLine: boolean;
  /** The previous magic token was an option that takes a value. */
  expectValue: boolean;
  /** Inside a `/* ... *\/` comment. */
  blockComment: boolean;
  /** Inside a string opened with this quote on an earlier line. */
  quote: string | null;
}

function readQuoted(stream: StringStream, quote: string): boolean {
  // SQL escapes a quote by doubling it: 'O''Brien'.
  while (!stream.eol()) {
    const ch = stream.next();
    if (ch === quote) {
      if (stream.peek() === quote) {
        stream.next();
        continue;
      }
      return true;
    }
  }
  return false;
}

function magicToken(stream: StringStream, state: IMpcState): string | null {
  if (stream.sol() && stream.match(MPC_MAGIC)) {
    return 'meta';
  }
  if (stream.match(/^--?[A-Za-z][\w-]*/)) {
    const option = stream.current();
    state.expectValue = VALUED_OPTIONS.has(option);
    return MAGIC_OPTIONS.has(option) ? 'attributeName' : 'invalid';
  }
  if (stream.match(/^(['"])(?:(?!\1).)*\1?/)) {
    state.expectValue = false;
    return 'string';
  }
  if (stream.match(/^[^\s]+/)) {
    const wasValue = state.expectValue;
    state.expectValue = false;
    if (/^\d+(\.\d+)?$/.test(stream.current())) {
      return 'number';
    }
    return wasValue ? 'variableName.definition' : 'variableName';
  }
  stream.next();
  return null;
}

function queryToken(stream: StringStream, state: IMpcState): string | null {
  if (state.blockComment) {
    if (stream.skipTo('*/')) {
      stream.match('*/');
      state.blockComment = false;
    } else {
      stream.skipToEnd();
    }
    return 'comment';
  }
  if (state.quote) {
    const quote = state.quote;
    if (readQuoted(stream, quote)) {
      state.quote = null;
    }
    return quote === "'" ? 'string' : 'variableName.special';
  }
  if (stream.match('--')) {
    stream.skipToEnd();
    return 'comment';
  }
  if (stream.match('/*')) {
    state.blockComment = true;
    return queryToken(stream, state) ?? 'comment';
  }
  const ch = stream.peek() as string;
  if (ch === "'" || ch === '"') {
    stream.next();
    if (!readQuoted(stream, ch)) {
      state.quote = ch;
    }
    // Single quotes are string literals; double quotes are quoted identifiers.
    return ch === "'" ? 'string' : 'variableName.special';
  }
  if (stream.match(/^(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/)) {
    return 'number';
  }
  // Python values passed into the query: {name} or :name.
  if (stream.match(/^\{[A-Za-z_][\w.]*\}/) || stream.match(/^:[A-Za-z_]\w*/)) {
    return 'variableName.special';
  }
  if (stream.match(/^[A-Za-z_][\w]*/)) {
    const word = stream.current().toUpperCase();
    if (FUNCTIONS.has(word) && /^\s*\(/.test(stream.string.slice(stream.pos))) {
      return 'variableName.standard';
    }
    if (KEYWORDS.has(word)) {
      return 'keyword';
    }
    if (ATOMS.has(word)) {
      return 'atom';
    }
    return 'variableName';
  }
  if (stream.match(/^(<=|>=|<>|!=|\|\||::|[-+*/%<>=])/)) {
    return 'operator';
  }
  if (stream.match(/^[(),;.]/)) {
    return 'punctuation';
  }
  stream.next();
  return null;
}

export const mpcParser: StreamParser<IMpcState> = {
  name: 'mpc',
  startState: () => ({
    line: -1,
    magicLine: false,
    expectValue: false,
    blockComment: false,
    quote: null
  }),
  copyState: state => ({ ...state }),
  blankLine: state => {
    state.line += 1;
    state.magicLine = false;
  },
  token: (stream, state) => {
    if (stream.sol()) {
      // Called once per line with the stream at its start.
      state.line += 1;
      state.magicLine = state.line === 0 && stream.string.startsWith(MPC_MAGIC);
      state.expectValue = false;
    }
    if (stream.eatSpace()) {
      return null;
    }
    return state.magicLine ? magicToken(stream, state) : queryToken(stream, state);
  },
  languageData: {
    commentTokens: { line: '--', block: { open: '/*', close: '*/' } }
  }
};
