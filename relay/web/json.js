// A JSON parser that keeps 64-bit integers exact.
//
// The relay's messages carry u64 values (the history epoch is a random u64, offsets and segment
// ids are u64). JSON.parse turns every number into a double, which silently rounds integers above
// 2^53, so a rounded epoch would make every resume fail. This parser returns every integer literal
// as a BigInt and every other number as a Number. Strings are decoded by JSON.parse itself, so
// escapes follow the standard exactly. Duplicate member names are rejected, as serde rejects
// them for the structs that the relay and the clinician device serialize.

const WHITESPACE = new Set([' ', '\t', '\n', '\r']);
const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;
const LITERALS = [
  ['true', true],
  ['false', false],
  ['null', null],
];

/**
 * Parses JSON text, returning integer literals as BigInt and other numbers as Number.
 * Throws a SyntaxError for invalid JSON, including trailing content.
 */
export function parseJson(text) {
  const parser = new Parser(String(text));
  const value = parser.parseValue();
  parser.skipWhitespace();
  if (parser.position !== parser.text.length) {
    parser.fail('unexpected content after the JSON value');
  }
  return value;
}

class Parser {
  constructor(text) {
    this.text = text;
    this.position = 0;
  }

  fail(problem) {
    throw new SyntaxError(`invalid JSON at position ${this.position}: ${problem}`);
  }

  skipWhitespace() {
    while (WHITESPACE.has(this.text[this.position])) {
      this.position += 1;
    }
  }

  parseValue() {
    this.skipWhitespace();
    const char = this.text[this.position];
    if (char === '{') {
      return this.parseObject();
    }
    if (char === '[') {
      return this.parseArray();
    }
    if (char === '"') {
      return this.parseString();
    }
    if (char === '-' || (char >= '0' && char <= '9')) {
      return this.parseNumber();
    }
    return this.parseLiteral();
  }

  parseObject() {
    const object = {};
    this.position += 1;
    this.skipWhitespace();
    if (this.text[this.position] === '}') {
      this.position += 1;
      return object;
    }
    for (;;) {
      this.skipWhitespace();
      if (this.text[this.position] !== '"') {
        this.fail('expected a member name');
      }
      const name = this.parseString();
      if (Object.hasOwn(object, name)) {
        this.fail(`duplicate member '${name}'`);
      }
      this.expect(':');
      const value = this.parseValue();
      // defineProperty, unlike assignment, stores a member named __proto__ as plain data.
      Object.defineProperty(object, name, { value, enumerable: true, writable: true });
      if (this.endOfList('}')) {
        return object;
      }
    }
  }

  parseArray() {
    const array = [];
    this.position += 1;
    this.skipWhitespace();
    if (this.text[this.position] === ']') {
      this.position += 1;
      return array;
    }
    for (;;) {
      array.push(this.parseValue());
      if (this.endOfList(']')) {
        return array;
      }
    }
  }

  // Consumes the `,` between items or the closing bracket; returns whether the list ended.
  endOfList(closing) {
    this.skipWhitespace();
    const char = this.text[this.position];
    this.position += 1;
    if (char === closing) {
      return true;
    }
    if (char !== ',') {
      this.position -= 1;
      this.fail(`expected ',' or '${closing}'`);
    }
    return false;
  }

  expect(char) {
    this.skipWhitespace();
    if (this.text[this.position] !== char) {
      this.fail(`expected '${char}'`);
    }
    this.position += 1;
  }

  parseString() {
    const start = this.position;
    let index = start + 1;
    while (index < this.text.length && this.text[index] !== '"') {
      index += this.text[index] === '\\' ? 2 : 1;
    }
    if (index >= this.text.length) {
      this.fail('unterminated string');
    }
    this.position = index + 1;
    return JSON.parse(this.text.slice(start, index + 1));
  }

  parseNumber() {
    NUMBER.lastIndex = this.position;
    const match = NUMBER.exec(this.text);
    if (match === null) {
      this.fail('invalid number');
    }
    this.position += match[0].length;
    const isInteger = match[1] === undefined && match[2] === undefined;
    return isInteger ? BigInt(match[0]) : Number(match[0]);
  }

  parseLiteral() {
    for (const [word, value] of LITERALS) {
      if (this.text.startsWith(word, this.position)) {
        this.position += word.length;
        return value;
      }
    }
    return this.fail('expected a value');
  }
}
