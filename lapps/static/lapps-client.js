/*
 * lapps-client.js: a browser client for the LAppS protocol, with no
 * dependencies. Defines the global `LAppS`:
 *
 *   LAppS.CBOR.encode(value) -> Uint8Array    LAppS.CBOR.decode(bytes) -> value
 *   new LAppS.Client(url, options)    a LAppS connection over a WebSocket,
 *                                     opened again when it drops
 *
 * Every LAppS message is a CBOR map in a binary frame. Requests are answered
 * on cid 0 in the order they were sent; the server's out-of-order
 * notifications (OONs) arrive on other cids.
 */
(function (root) {
  "use strict";

  // ---------------------------------------------------------------- CBOR --

  var TWO_32 = 4294967296;
  var TWO_53 = 9007199254740992;
  var MAX_DEPTH = 512;

  /** A tagged CBOR item that this codec does not interpret (tag, value). */
  function Tagged(tag, value) {
    this.tag = tag;
    this.value = value;
  }

  function utf8Encode(text) {
    return new TextEncoder().encode(text);
  }

  var utf8Decoder = null;
  function utf8Decode(bytes) {
    if (utf8Decoder === null) {
      utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
    }
    try {
      return utf8Decoder.decode(bytes);
    } catch (error) {
      throw new SyntaxError("CBOR: a text string that is not valid UTF-8");
    }
  }

  function Writer() {
    this.bytes = new Uint8Array(256);
    this.view = new DataView(this.bytes.buffer);
    this.length = 0;
  }

  Writer.prototype.reserve = function (n) {
    var needed = this.length + n;
    if (needed <= this.bytes.length) return;
    var size = this.bytes.length * 2;
    while (size < needed) size *= 2;
    var bigger = new Uint8Array(size);
    bigger.set(this.bytes.subarray(0, this.length));
    this.bytes = bigger;
    this.view = new DataView(bigger.buffer);
  };

  Writer.prototype.byte = function (b) {
    this.reserve(1);
    this.bytes[this.length++] = b;
  };

  Writer.prototype.raw = function (bytes) {
    this.reserve(bytes.length);
    this.bytes.set(bytes, this.length);
    this.length += bytes.length;
  };

  /** The head of an item: major type and argument (0 <= n <= 2^64-1). */
  Writer.prototype.head = function (major, n) {
    var m = major << 5;
    if (typeof n === "bigint") {
      if (n < 4294967296n) {
        n = Number(n);
      } else {
        this.reserve(9);
        this.bytes[this.length++] = m | 27;
        this.view.setBigUint64(this.length, n);
        this.length += 8;
        return;
      }
    }
    if (n < 24) {
      this.byte(m | n);
    } else if (n < 0x100) {
      this.reserve(2);
      this.bytes[this.length++] = m | 24;
      this.bytes[this.length++] = n;
    } else if (n < 0x10000) {
      this.reserve(3);
      this.bytes[this.length++] = m | 25;
      this.view.setUint16(this.length, n);
      this.length += 2;
    } else if (n < TWO_32) {
      this.reserve(5);
      this.bytes[this.length++] = m | 26;
      this.view.setUint32(this.length, n);
      this.length += 4;
    } else {
      this.reserve(9);
      this.bytes[this.length++] = m | 27;
      this.view.setUint32(this.length, Math.floor(n / TWO_32));
      this.view.setUint32(this.length + 4, n % TWO_32);
      this.length += 8;
    }
  };

  Writer.prototype.float64 = function (x) {
    this.reserve(9);
    this.bytes[this.length++] = 0xfb;
    this.view.setFloat64(this.length, x);
    this.length += 8;
  };

  function isPlainInteger(x) {
    return Number.isInteger(x) && Math.abs(x) <= TWO_53 && !Object.is(x, -0);
  }

  function encodeItem(w, value, depth) {
    if (depth > MAX_DEPTH) throw new RangeError("CBOR: nesting deeper than " + MAX_DEPTH);
    if (value === null || value === undefined) {
      w.byte(0xf6);
    } else if (value === false) {
      w.byte(0xf4);
    } else if (value === true) {
      w.byte(0xf5);
    } else if (typeof value === "number") {
      if (isPlainInteger(value)) {
        if (value >= 0) w.head(0, value);
        else w.head(1, -1 - value);
      } else {
        w.float64(value);
      }
    } else if (typeof value === "bigint") {
      if (value >= 0n && value < 18446744073709551616n) w.head(0, value);
      else if (value < 0n && value >= -18446744073709551616n) w.head(1, -1n - value);
      else throw new RangeError("CBOR: integer out of the 64-bit range: " + value);
    } else if (typeof value === "string") {
      var text = utf8Encode(value);
      w.head(3, text.length);
      w.raw(text);
    } else if (value instanceof ArrayBuffer) {
      w.head(2, value.byteLength);
      w.raw(new Uint8Array(value));
    } else if (ArrayBuffer.isView(value)) {
      var bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
      w.head(2, bytes.length);
      w.raw(bytes);
    } else if (Array.isArray(value)) {
      w.head(4, value.length);
      for (var i = 0; i < value.length; i++) encodeItem(w, value[i], depth + 1);
    } else if (value instanceof Map) {
      w.head(5, value.size);
      value.forEach(function (v, k) {
        encodeItem(w, k, depth + 1);
        encodeItem(w, v, depth + 1);
      });
    } else if (value instanceof Tagged) {
      w.head(6, value.tag);
      encodeItem(w, value.value, depth + 1);
    } else if (typeof value === "object") {
      // Like JSON: keys whose value is undefined are left out.
      var keys = Object.keys(value).filter(function (k) { return value[k] !== undefined; });
      w.head(5, keys.length);
      for (var j = 0; j < keys.length; j++) {
        encodeItem(w, keys[j], depth + 1);
        encodeItem(w, value[keys[j]], depth + 1);
      }
    } else {
      throw new TypeError("CBOR: cannot encode a " + typeof value);
    }
  }

  /** Encode `value` as CBOR; returns a Uint8Array. */
  function encode(value) {
    var w = new Writer();
    encodeItem(w, value, 0);
    return w.bytes.slice(0, w.length);
  }

  function float16(bits) {
    var sign = bits & 0x8000 ? -1 : 1;
    var exponent = (bits >> 10) & 0x1f;
    var fraction = bits & 0x3ff;
    if (exponent === 0) return sign * fraction * Math.pow(2, -24);
    if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
    return sign * (1 + fraction / 1024) * Math.pow(2, exponent - 15);
  }

  var BREAK = {};  // marks the 0xff "break" that ends an indefinite-length item

  function Reader(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.offset = 0;
  }

  Reader.prototype.need = function (n) {
    if (this.offset + n > this.bytes.length) {
      throw new RangeError("CBOR: truncated input at byte " + this.offset);
    }
  };

  Reader.prototype.take = function (n) {
    this.need(n);
    var slice = this.bytes.subarray(this.offset, this.offset + n);
    this.offset += n;
    return slice;
  };

  /** The argument of a head with additional information `info`, or -1 for
   * an indefinite length (31). */
  Reader.prototype.argument = function (info) {
    var v = this.view;
    var at = this.offset;
    if (info < 24) return info;
    if (info === 24) { this.need(1); this.offset += 1; return v.getUint8(at); }
    if (info === 25) { this.need(2); this.offset += 2; return v.getUint16(at); }
    if (info === 26) { this.need(4); this.offset += 4; return v.getUint32(at); }
    if (info === 27) {
      this.need(8);
      this.offset += 8;
      var hi = v.getUint32(at);
      var lo = v.getUint32(at + 4);
      if (hi <= 0x200000 && !(hi === 0x200000 && lo !== 0)) return hi * TWO_32 + lo;
      return (BigInt(hi) << 32n) | BigInt(lo);
    }
    if (info === 31) return -1;
    throw new SyntaxError("CBOR: reserved additional information " + info +
                          " at byte " + (this.offset - 1));
  };

  Reader.prototype.length = function (n) {
    if (typeof n === "bigint" || n > this.bytes.length - this.offset) {
      throw new RangeError("CBOR: length " + n + " exceeds the input at byte " + this.offset);
    }
    return n;
  };

  /** The chunks of an indefinite-length byte or text string, each a
   * definite string of the same major type. */
  Reader.prototype.chunks = function (major) {
    var parts = [];
    for (;;) {
      this.need(1);
      var initial = this.bytes[this.offset++];
      if (initial === 0xff) return parts;
      if (initial >> 5 !== major || (initial & 0x1f) === 31) {
        throw new SyntaxError("CBOR: bad chunk in an indefinite-length string at byte " +
                              (this.offset - 1));
      }
      parts.push(this.take(this.length(this.argument(initial & 0x1f))));
    }
  };

  Reader.prototype.item = function (depth) {
    if (depth > MAX_DEPTH) throw new RangeError("CBOR: nesting deeper than " + MAX_DEPTH);
    this.need(1);
    var initial = this.bytes[this.offset++];
    var major = initial >> 5;
    var info = initial & 0x1f;
    var n, i, result;

    if (major === 7) {
      switch (info) {
        case 20: return false;
        case 21: return true;
        case 22: return null;
        case 23: return undefined;
        case 25: this.need(2); this.offset += 2; return float16(this.view.getUint16(this.offset - 2));
        case 26: this.need(4); this.offset += 4; return this.view.getFloat32(this.offset - 4);
        case 27: this.need(8); this.offset += 8; return this.view.getFloat64(this.offset - 8);
        case 31: return BREAK;
        default:
          throw new SyntaxError("CBOR: unsupported simple value (info " + info + ") at byte " +
                                (this.offset - 1));
      }
    }

    n = this.argument(info);
    if (n === -1 && (major === 0 || major === 1 || major === 6)) {
      throw new SyntaxError("CBOR: indefinite length on major type " + major);
    }
    switch (major) {
      case 0:
        return n;
      case 1:
        return typeof n === "bigint" || n > TWO_53 - 1 ? -1n - BigInt(n) : -1 - n;
      case 2:
        if (n === -1) return concat(this.chunks(2));
        return this.take(this.length(n)).slice();
      case 3:
        if (n === -1) return this.chunks(3).map(utf8Decode).join("");
        return utf8Decode(this.take(this.length(n)));
      case 4:
        result = [];
        if (n === -1) {
          for (;;) {
            var element = this.item(depth + 1);
            if (element === BREAK) return result;
            result.push(element);
          }
        }
        this.length(n);  // each element takes at least one byte
        for (i = 0; i < n; i++) result.push(this.definite(depth + 1));
        return result;
      case 5:
        var keys = [];
        var values = [];
        if (n === -1) {
          for (;;) {
            var key = this.item(depth + 1);
            if (key === BREAK) break;
            keys.push(key);
            values.push(this.definite(depth + 1));
          }
        } else {
          this.length(n);
          for (i = 0; i < n; i++) {
            keys.push(this.definite(depth + 1));
            values.push(this.definite(depth + 1));
          }
        }
        return makeMap(keys, values);
      case 6:
        return new Tagged(n, this.definite(depth + 1));
    }
    throw new SyntaxError("CBOR: unknown major type " + major);  // not reached
  };

  /** An item that must not be a "break". */
  Reader.prototype.definite = function (depth) {
    var at = this.offset;
    var value = this.item(depth);
    if (value === BREAK) throw new SyntaxError("CBOR: unexpected break at byte " + at);
    return value;
  };

  function concat(parts) {
    var total = 0;
    parts.forEach(function (p) { total += p.length; });
    var out = new Uint8Array(total);
    var at = 0;
    parts.forEach(function (p) { out.set(p, at); at += p.length; });
    return out;
  }

  /** A plain object when every key is a string, else a Map. */
  function makeMap(keys, values) {
    var i;
    if (keys.every(function (k) { return typeof k === "string"; })) {
      var object = {};
      for (i = 0; i < keys.length; i++) {
        // defineProperty: a "__proto__" key is data, never the prototype.
        Object.defineProperty(object, keys[i], {
          value: values[i], enumerable: true, writable: true, configurable: true
        });
      }
      return object;
    }
    var map = new Map();
    for (i = 0; i < keys.length; i++) map.set(keys[i], values[i]);
    return map;
  }

  /** Decode one CBOR item from an ArrayBuffer or a typed array / DataView. */
  function decode(input) {
    var bytes;
    if (input instanceof ArrayBuffer) bytes = new Uint8Array(input);
    else if (ArrayBuffer.isView(input)) bytes = new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
    else throw new TypeError("CBOR: decode needs an ArrayBuffer or a typed array");
    var reader = new Reader(bytes);
    var value = reader.definite(0);
    if (reader.offset !== bytes.length) {
      throw new SyntaxError("CBOR: " + (bytes.length - reader.offset) + " bytes after the item");
    }
    return value;
  }

  // -------------------------------------------------------------- client --

  /** An error response; `code`, `message` and `data` as the server sent them. */
  class LAppSError extends Error {
    constructor(code, message, data) {
      super(message);
      this.name = "LAppSError";
      this.code = code;
      this.data = data;
    }
  }

  /** Throw unless `method` is a valid LAppS method name. */
  function validateMethod(method) {
    if (typeof method !== "string") throw new TypeError("LAppS: method name must be a string");
    if (method === "") throw new RangeError("LAppS: method name must not be empty");
    if (method.indexOf(".") !== -1) throw new RangeError("LAppS: method name must not contain '.': " + method);
    if (method.charAt(0) === "_") throw new RangeError("LAppS: method name must not start with '_': " + method);
  }

  function buildMessage(method, params) {
    validateMethod(method);
    var message = { lapps: 1, method: method };
    if (params !== undefined && params !== null) {
      if (!Array.isArray(params)) throw new TypeError("LAppS: params must be an array");
      message.params = params;
    }
    return message;
  }

  function checkCid(cid) {
    if (typeof cid !== "number" || !Number.isInteger(cid)) {
      throw new TypeError("LAppS: cid must be an integer");
    }
  }

  /**
   * A LAppS connection. `url` is a ws:// or wss:// URL. Options:
   * `WebSocket`, another WebSocket implementation; `reconnect` (true): once
   * open, the connection is opened again whenever it drops other than by
   * close(), each attempt after a random delay up to a ceiling that starts
   * at `backoffInitial` ms (100) and doubles up to `backoffMax` ms (5000).
   * Set `onconnect` to a function(client) returning a Promise, to log in and
   * subscribe after every open, and `onclose` to a function(event), called
   * whenever a socket closes (a failed attempt to reconnect too); `closed`
   * is then true if no reconnection follows.
   */
  function Client(url, options) {
    options = options || {};
    this.url = url;
    this.onconnect = null;
    this.onclose = null;
    this.socket = null;
    this.closed = false;
    this.reconnects = 0;     // opens after a drop
    this._WebSocket = options.WebSocket || root.WebSocket;
    this._reconnect = options.reconnect !== false;
    this._backoffInitial = options.backoffInitial || 100;
    this._backoffMax = options.backoffMax || 5000;
    this._ceiling = this._backoffInitial;
    this._timer = null;
    this._wasOpen = false;   // reconnecting starts once a connection was open
    this._stopped = false;   // close() was called, or onconnect failed
    this._opening = null;    // {resolve, reject} of open(), until it is settled
    this._pending = [];      // {resolve, reject, method}, in send order
    this._handlers = {};     // cid -> [fn]
    this._positions = {};    // cid -> {epoch, offset}
    this._closed = null;     // the Error that fails requests while closed
  }

  /** Open the connection; resolves with the client once it is open and
   * `onconnect` has run, rejects if the client closes first. The first
   * socket is not retried if it does not open. */
  Client.prototype.open = function () {
    var self = this;
    if (this.socket) return Promise.reject(new Error("LAppS: open() was already called"));
    return new Promise(function (resolve, reject) {
      self._opening = { resolve: resolve, reject: reject };
      self._connect();
    });
  };

  Client.prototype._connect = function () {
    var self = this;
    var socket = new this._WebSocket(this.url);  // no subprotocol
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onopen = function () {
      if (self._wasOpen) self.reconnects += 1;
      self._wasOpen = true;
      self._closed = null;
      self._greet(socket);
    };
    socket.onmessage = function (event) { self._receive(event.data); };
    socket.onclose = function (event) {
      var again = self._reconnect && self._wasOpen && !self._stopped;
      self.closed = !again;
      self._shutdown(event);
      if (again) {
        self._redial();
      } else {
        self._settle(new Error("LAppS: could not connect to " + self.url +
                               " (close code " + event.code + ")"));
      }
    };
    socket.onerror = function () {};  // onclose follows and says what happened
  };

  /** Resolve or reject what open() returned, once; false if it was. */
  Client.prototype._settle = function (error) {
    var opening = this._opening;
    this._opening = null;
    if (!opening) return false;
    if (error) opening.reject(error);
    else opening.resolve(this);
    return true;
  };

  /** Run `onconnect` on the socket just opened. A failure while the socket
   * is still open stops the client, as it would most likely follow every
   * reconnection; one because the socket closed waits for the next. */
  Client.prototype._greet = function (socket) {
    var self = this;
    new Promise(function (resolve) {
      resolve(typeof self.onconnect === "function" ? self.onconnect(self) : undefined);
    }).then(function () {
      self._ceiling = self._backoffInitial;
      self._settle(null);
    }, function (error) {
      if (socket.readyState !== 1) return;
      self.close();
      if (!self._settle(error)) setTimeout(function () { throw error; });  // report it
    });
  };

  /** The next attempt, after a random delay up to the doubling ceiling
   * ("full jitter": the clients of a restarted server spread out). */
  Client.prototype._redial = function () {
    var self = this;
    var delay = Math.random() * this._ceiling;
    this._ceiling = Math.min(this._backoffMax, this._ceiling * 2);
    this._timer = setTimeout(function () {
      self._timer = null;
      self._connect();
    }, delay);
  };

  /** Send a request; resolves with its `result` array, rejects with a
   * LAppSError for an error response or an Error if the connection closes. */
  Client.prototype.request = function (method, params) {
    var self = this;
    var data;
    try {
      data = encode(buildMessage(method, params));
      this._checkOpen(method);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise(function (resolve, reject) {
      self._pending.push({ resolve: resolve, reject: reject, method: method });
      self.socket.send(data);
    });
  };

  /** Send a client notification (CN) on channel `cid`; nothing answers it. */
  Client.prototype.notify = function (method, params, cid) {
    checkCid(cid);
    var message = buildMessage(method, params);
    message.cid = cid;
    this._checkOpen(method);
    this.socket.send(encode(message));
  };

  /** Call fn(message, notification) for every OON on `cid`, with its
   * `message` array. Returns a function that removes fn. */
  Client.prototype.onMessage = function (cid, fn) {
    checkCid(cid);
    if (cid === 0) throw new RangeError("LAppS: cid 0 is the command channel");
    if (typeof fn !== "function") throw new TypeError("LAppS: onMessage needs a function");
    var list = this._handlers[cid] || (this._handlers[cid] = []);
    list.push(fn);
    return function () {
      var at = list.indexOf(fn);
      if (at !== -1) list.splice(at, 1);
    };
  };

  /** {epoch, offset} of the last OON seen on `cid` that carried them (a
   * bcast channel with history), or null. It outlives reconnections, so that
   * `onconnect` can resubscribe from it; in an onMessage handler it is that
   * OON's own. */
  Client.prototype.position = function (cid) {
    var position = this._positions[cid];
    return position ? { epoch: position.epoch, offset: position.offset } : null;
  };

  /** Close the connection for good; pending requests are rejected. */
  Client.prototype.close = function (code, reason) {
    this._stopped = true;
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
      this.closed = true;
    }
    if (this.socket) this.socket.close(code === undefined ? 1000 : code, reason || "");
  };

  Client.prototype._checkOpen = function (method) {
    if (this._closed) throw new Error("LAppS: cannot send '" + method + "': " + this._closed.message);
    if (!this.socket || this.socket.readyState !== 1) {
      throw new Error("LAppS: cannot send '" + method + "': the connection is not open");
    }
  };

  Client.prototype._receive = function (data) {
    var message;
    try {
      if (!(data instanceof ArrayBuffer)) throw new Error("a text frame (LAppS uses binary frames)");
      message = decode(data);
      if (message === null || typeof message !== "object" || Array.isArray(message) ||
          message instanceof Map || message instanceof Uint8Array) {
        throw new Error("a CBOR item that is not a map");
      }
      if (typeof message.cid !== "number" || !Number.isInteger(message.cid)) {
        throw new Error("a message without an integer cid");
      }
      if (message.cid === 0) this._response(message);
      else this._notification(message);
    } catch (error) {
      this._protocolError(error);
    }
  };

  Client.prototype._response = function (message) {
    if (this._pending.length === 0) throw new Error("a response with no request pending");
    if (message.status === 1) {
      if (!Array.isArray(message.result)) throw new Error("a success response without a result array");
      this._pending.shift().resolve(message.result);
    } else if (message.status === 0) {
      var error = message.error;
      if (!error || typeof error !== "object" || !("code" in error)) {
        throw new Error("an error response without an error object");
      }
      this._pending.shift().reject(new LAppSError(
        error.code, typeof error.message === "string" ? error.message : "", error.data));
    } else {
      throw new Error("a response with status " + message.status);
    }
  };

  Client.prototype._notification = function (message) {
    if (!Array.isArray(message.message)) throw new Error("an OON without a message array");
    if (Number.isInteger(message.offset) && typeof message.epoch === "string") {
      this._positions[message.cid] = { epoch: message.epoch, offset: message.offset };
    }
    var list = (this._handlers[message.cid] || []).slice();
    for (var i = 0; i < list.length; i++) {
      try {
        list[i](message.message, message);
      } catch (error) {
        setTimeout(function () { throw error; });  // report it, go on dispatching
      }
    }
  };

  Client.prototype._protocolError = function (error) {
    this._closed = this._closed || new Error("invalid LAppS message from the server: " + error.message);
    this._rejectPending(this._closed);
    if (this.socket) this.socket.close(4002, "invalid LAppS message");
  };

  Client.prototype._rejectPending = function (error) {
    var pending = this._pending;
    this._pending = [];
    pending.forEach(function (p) {
      var e = new Error(error.message + " before the response to '" + p.method + "'");
      e.name = "LAppSConnectionClosed";
      e.closeCode = error.closeCode;
      p.reject(e);
    });
  };

  Client.prototype._shutdown = function (event) {
    if (!this._closed) {
      this._closed = new Error("connection closed (code " + event.code +
                               (event.reason ? ", " + JSON.stringify(event.reason) : "") + ")");
      this._closed.closeCode = event.code;
    }
    this._rejectPending(this._closed);
    if (typeof this.onclose === "function") this.onclose(event);
  };

  root.LAppS = {
    CBOR: { encode: encode, decode: decode, Tagged: Tagged },
    Client: Client,
    LAppSError: LAppSError,
    validateMethod: validateMethod
  };
  if (typeof module === "object" && module && module.exports) module.exports = root.LAppS;
})(typeof globalThis !== "undefined" ? globalThis : this);
