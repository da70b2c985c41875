// Runs lapps-client.js's CBOR codec (LAppS.CBOR) on vectors made by the
// tests with Python's cbor2, and its method-name checks, and prints one JSON
// object with what it did:
//
//   node cbor.mjs VECTORS.json
//
// VECTORS.json: {"decode": {name: hex}, "bad": {name: hex}}.
// Output:
//   decoded:  {name: {value: DESCRIPTION, reencoded: hex}}
//   bad:      {name: error message, or null if decode() did not throw}
//   encoded:  {name: hex}      values built here in JavaScript (see BUILT)
//   refused:  {name: error message, or null if encode() did not throw}
//   methods:  {name: what LAppS.Client#request(name) on a client that is not
//              open rejected with}
// A DESCRIPTION keeps what JSON cannot: {"f": float64 bits in hex, or "nan"},
// {"i": decimal BigInt}, {"s": text}, {"b": hex}, {"a": [...]},
// {"m": [[key, value], ...]} in decoded order, {"t": tag, "v": value},
// {"u": 1} for undefined; null and booleans as themselves.

import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

const require = createRequire(import.meta.url);
const LAppS = require("../../lapps/static/lapps-client.js");
const { encode, decode, Tagged } = LAppS.CBOR;

function hex(bytes) {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

function unhex(text) {
  const buf = Buffer.from(text, "hex");
  // A copy at a non-zero offset inside a larger buffer, so the decoder has
  // to honour byteOffset.
  const backing = new Uint8Array(buf.length + 3);
  backing.set(buf, 3);
  return backing.subarray(3);
}

function float64Bits(x) {
  if (Number.isNaN(x)) return "nan";
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  return hex(new Uint8Array(view.buffer));
}

function describe(value) {
  if (value === null || typeof value === "boolean") return value;
  if (value === undefined) return { u: 1 };
  if (typeof value === "number") return { f: float64Bits(value) };
  if (typeof value === "bigint") return { i: value.toString() };
  if (typeof value === "string") return { s: value };
  if (value instanceof Uint8Array) return { b: hex(value) };
  if (Array.isArray(value)) return { a: value.map(describe) };
  if (value instanceof Tagged) return { t: Number(value.tag), v: describe(value.value) };
  if (value instanceof Map) return { m: [...value].map(([k, v]) => [describe(k), describe(v)]) };
  if (typeof value === "object") {
    if (Object.getPrototypeOf(value) !== Object.prototype) {
      throw new Error("a decoded map is not a plain object");
    }
    return { m: Object.keys(value).map((k) => [describe(k), describe(value[k])]) };
  }
  throw new Error(`cannot describe a ${typeof value}`);
}

// Values only JavaScript can produce; the Python test knows what each must
// encode to.
const BUILT = {
  int_2_53: () => 2 ** 53,
  neg_2_53: () => -(2 ** 53),
  int_beyond_2_53: () => 2 ** 55,
  negative_zero: () => -0,
  nan: () => NaN,
  infinity: () => Infinity,
  minus_infinity: () => -Infinity,
  pi: () => Math.PI,
  tenth: () => 0.1,
  undefined_in_array: () => [undefined, null, true, false],
  undefined_in_object: () => ({ a: undefined, b: 1 }),
  map_with_int_keys: () => new Map([[1, "one"], [-2, "minus two"]]),
  uint16array: () => new Uint16Array([1, 258]),
  arraybuffer: () => new Uint8Array([1, 2, 3]).buffer,
  subarray: () => new Uint8Array([9, 1, 2, 3, 9]).subarray(1, 4),
  bigint_max: () => 2n ** 64n - 1n,
  bigint_min: () => -(2n ** 64n),
  bigint_small: () => 5n,
  tagged: () => new Tagged(4711, "x"),
  lapps_request: () => ({ lapps: 1, method: "echo", params: [{ authkey: "k" }, [1, 2, 3]] }),
  lapps_notification: () => ({ lapps: 1, method: "subscribe", params: [{ authkey: "k" }], cid: 5 }),
  nested: () => ({ a: [{ b: [[], {}, ""] }], "ключ": "значение 😀", n: -1.5 }),
  long_text: () => "é".repeat(40000),
};

const REFUSED = {
  function: () => () => 1,
  symbol: () => Symbol("s"),
  bigint_too_big: () => 2n ** 64n,
  bigint_too_small: () => -(2n ** 64n) - 1n,
};

async function main() {
  const vectors = JSON.parse(readFileSync(process.argv[2], "utf8"));
  const out = { decoded: {}, bad: {}, encoded: {}, refused: {} };
  for (const [name, text] of Object.entries(vectors.decode)) {
    const value = decode(unhex(text));
    out.decoded[name] = { value: describe(value), reencoded: hex(encode(value)) };
  }
  for (const [name, text] of Object.entries(vectors.bad)) {
    try {
      decode(unhex(text));
      out.bad[name] = null;
    } catch (error) {
      out.bad[name] = `${error.name}: ${error.message}`;
    }
  }
  for (const [name, make] of Object.entries(BUILT)) out.encoded[name] = hex(encode(make()));
  for (const [name, make] of Object.entries(REFUSED)) {
    try {
      encode(make());
      out.refused[name] = null;
    } catch (error) {
      out.refused[name] = `${error.name}: ${error.message}`;
    }
  }
  // An invalid name is refused before the client looks at its connection:
  // a valid one gets "not open" instead.
  const client = new LAppS.Client("ws://127.0.0.1:9/never-opened");
  out.methods = {};
  for (const name of METHODS) {
    try {
      await client.request(name, []);
      out.methods[String(name)] = null;
    } catch (error) {
      out.methods[String(name)] = `${error.name}: ${error.message}`;
    }
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

const METHODS = ["echo", "login", "x-y", "", "a.b", ".", "_internal", 5, null];

await main();
