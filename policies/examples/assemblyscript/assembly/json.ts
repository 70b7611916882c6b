// A small JSON reader for the policy: the full grammar of RFC 8259 (escapes and \u sequences
// decoded, surrogate pairs kept as UTF-16), into a tree whose objects keep their keys in order.
// It never traps on bad input: `parse` returns null instead, so that the policy can answer
// "malformed" as ABI v1 requires (AssemblyScript has no exceptions to catch).

export const enum Kind { Null, Bool, Number, String, Array, Object }

/** One JSON value. Objects are parallel key and value lists, in document order. */
export class Value {
  kind: Kind = Kind.Null;
  str: string = "";
  items: Array<Value> = [];
  keys: Array<string> = [];

  /** This object's member `key` (the last of duplicates), or null (also for non-objects). */
  get(key: string): Value | null {
    if (this.kind != Kind.Object) return null;
    for (let i = this.keys.length - 1; i >= 0; i--) {
      if (this.keys[i] == key) return this.items[i];
    }
    return null;
  }
}

/** Nesting deeper than this is refused: the reader recurses, and the stack is bounded. */
const MAX_DEPTH = 128;

class Reader {
  pos: i32 = 0;
  failed: bool = false;
  constructor(public text: string) {}

  code(): i32 {
    return this.pos < this.text.length ? this.text.charCodeAt(this.pos) : -1;
  }

  ws(): void {
    let c = this.code();
    while (c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d) {
      this.pos++;
      c = this.code();
    }
  }

  fail(): Value {
    this.failed = true;
    return new Value();
  }

  word(w: string): bool {
    if (this.text.substr(this.pos, w.length) != w) return false;
    this.pos += w.length;
    return true;
  }

  value(depth: i32): Value {
    this.ws();
    const c = this.code();
    const v = new Value();
    if (c == 0x22) {
      v.kind = Kind.String;
      v.str = this.string();
    } else if (c == 0x7b || c == 0x5b) {
      if (depth >= MAX_DEPTH) return this.fail();
      const object = c == 0x7b;
      v.kind = object ? Kind.Object : Kind.Array;
      this.pos++;
      this.ws();
      if (this.code() == (object ? 0x7d : 0x5d)) {
        this.pos++;
        return v;
      }
      while (!this.failed) {
        if (object) {
          this.ws();
          if (this.code() != 0x22) return this.fail();
          v.keys.push(this.string());
          this.ws();
          if (this.code() != 0x3a) return this.fail();
          this.pos++;
        }
        v.items.push(this.value(depth + 1));
        this.ws();
        const sep = this.code();
        this.pos++;
        if (sep == 0x2c) continue;
        if (sep == (object ? 0x7d : 0x5d)) return v;
        return this.fail();
      }
    } else if (c == 0x74 || c == 0x66) {
      v.kind = Kind.Bool;
      if (!this.word(c == 0x74 ? "true" : "false")) return this.fail();
    } else if (c == 0x6e) {
      if (!this.word("null")) return this.fail();
    } else if (c == 0x2d || (c >= 0x30 && c <= 0x39)) {
      v.kind = Kind.Number;
      this.number();
    } else {
      return this.fail();
    }
    return v;
  }

  // -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?; the value itself is never needed.
  number(): void {
    if (this.code() == 0x2d) this.pos++;
    if (this.code() == 0x30) this.pos++;
    else if (!this.digits()) this.failed = true;
    if (this.code() == 0x2e) {
      this.pos++;
      if (!this.digits()) this.failed = true;
    }
    if ((this.code() | 0x20) == 0x65) {
      this.pos++;
      if (this.code() == 0x2b || this.code() == 0x2d) this.pos++;
      if (!this.digits()) this.failed = true;
    }
  }

  digits(): bool {
    const start = this.pos;
    while (this.code() >= 0x30 && this.code() <= 0x39) this.pos++;
    return this.pos > start;
  }

  // At an opening quote: the decoded string, the position after the closing quote.
  string(): string {
    this.pos++;
    let out = "";
    let run = this.pos;
    while (true) {
      const c = this.code();
      if (c < 0x20) {
        this.failed = true; // the end of input (-1) or an unescaped control character
        return out;
      }
      if (c == 0x22) break;
      if (c != 0x5c) {
        this.pos++;
        continue;
      }
      out += this.text.substring(run, this.pos);
      this.pos++;
      const e = this.code();
      this.pos++;
      if (e == 0x22 || e == 0x5c || e == 0x2f) out += String.fromCharCode(e);
      else if (e == 0x62) out += "\b";
      else if (e == 0x66) out += "\f";
      else if (e == 0x6e) out += "\n";
      else if (e == 0x72) out += "\r";
      else if (e == 0x74) out += "\t";
      else if (e == 0x75) {
        let unit = 0;
        for (let i = 0; i < 4; i++) {
          const h = this.code();
          this.pos++;
          let d = -1;
          if (h >= 0x30 && h <= 0x39) d = h - 0x30;
          else if ((h | 0x20) >= 0x61 && (h | 0x20) <= 0x66) d = (h | 0x20) - 0x61 + 10;
          if (d < 0) {
            this.failed = true;
            return out;
          }
          unit = unit * 16 + d;
        }
        out += String.fromCharCode(unit);
      } else {
        this.failed = true;
        return out;
      }
      run = this.pos;
    }
    out += this.text.substring(run, this.pos);
    this.pos++;
    return out;
  }
}

/** The value `text` holds (nothing but whitespace around it), or null if it is not JSON. */
export function parse(text: string): Value | null {
  const reader = new Reader(text);
  const v = reader.value(0);
  reader.ws();
  if (reader.failed || reader.pos != text.length) return null;
  return v;
}

/** `s` as a JSON string literal, quotes included. */
export function quote(s: string): string {
  let out = "\"";
  let run = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c != 0x22 && c != 0x5c) continue;
    out += s.substring(run, i);
    if (c == 0x22) out += "\\\"";
    else if (c == 0x5c) out += "\\\\";
    else out += "\\u00" + (c < 0x10 ? "0" : "") + c.toString(16);
    run = i + 1;
  }
  return out + s.substring(run) + "\"";
}
