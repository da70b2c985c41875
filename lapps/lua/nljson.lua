--[[ nljson: JSON values as Lua userdata, after LAppS's nlohmann::json binding
(spec section 6.1). Loaded by lapps/lua/nljson.py, which passes in the two
Python callables used for CBOR and receives the module table plus the internal
functions the Python side converts with.

Representation
  * Every value Lua code sees is a zero-size userdata from newproxy(), so
    type(obj) == "userdata" as in LAppS; all of them share one metatable.
    The userdata's node is its environment table (debug.setfenv): a container
    node itself, or a box holding a scalar. (A weak-keyed side table was
    measured 4x slower, and with 300k short-lived values it let the heap reach
    45 MiB for 0.1 MiB live before the collector caught up: a max_memory cap
    turns that into "not enough memory".)
  * A node is a Lua table with the metatable OBJ (a JSON object: string keys)
    or ARR (a JSON array: dense 1..n), or a scalar (string, number, boolean)
    or the sentinel NULL. Inside containers JSON null is NULL too, so arrays
    never have holes and #node is exact. Internal tables never reach user code.
  * A nested container read from a parent is a new userdata on the same
    internal table: it aliases the parent (writes through it change the parent).
  * All JSON text work (decode, encode, tostring) is done here in Lua, so it
    never needs Python or its GIL (standalone services run in threads). Only
    to_cbor and from_cbor call Python (cbor2).

Choices where the spec is silent or says "undefined" (LAppS issue list §11.14)
  * Reading a missing key, an out-of-range or non-integral index, a string key
    of an array, a number key of an object, or any key of a scalar gives nil.
    Reads never raise.
  * Writing to a scalar or null value raises an error (nlohmann would turn a
    null into an object; LAppS never relied on it). Array indices below 1 or
    non-integral raise an error; writing past the end grows the array with nulls.
  * Replacing a member detaches earlier aliases of it: they keep the old
    container (in nlohmann they would see the new value).
  * Strings that are not valid UTF-8 can be stored (Lua strings are bytes);
    encode, tostring, to_cbor and the conversion to Python raise on them.
  * Lua table conversion refuses tables nested more than 1000 levels (a table
    holding itself among them) with a one-line error; decode says "nested too
    deeply" for text nested past the Lua stack.
  * Lua table conversion: keys that are all integers >= 1 make an array whose
    length is the largest key, holes becoming null; an empty table is [].
    Otherwise an object: string keys are kept, number keys are stringified as in
    nljson.find (integral -> "%d"), keys of other types are skipped. Full userdata
    that are not nljson values become null, like functions and threads.
    Non-finite numbers are stored as they are and encode as null.
  * #obj is the number of elements of an array or members of an object, 0 for
    null and 1 for other scalars (nlohmann's size()).
  * encode, encode_pretty, to_cbor, find, foreach, traverse, erase, empty and
    typename raise "nljson value expected" for a first argument that is not an
    nljson value (plain tables included); decode, decode_file and from_cbor
    raise for a non-string argument.
  * foreach visits object members in key order (nlohmann keeps objects in a
    std::map), arrays in index order, and does nothing for scalars or null.
  * traverse reports the real 1-based index of array elements (LAppS always
    reported 1) and is not called for the root itself.
  * erase returns false (never raises) for a missing key, an index out of
    range, a number key on an object, a string key on an array, or a scalar.
  * empty is false for null as for every scalar (spec wording; nlohmann's
    empty() says true for null).
  * Numbers: integral values in [-2^63, 2^63) are written as integers; other
    finite numbers with the shortest of %.15g/%.16g/%.17g that reads back the
    same double (exact round trip, like nlohmann's shortest output);
    NaN and infinities as null. decode rejects numbers that overflow a double.
  * Objects encode with their keys in byte order (std::map). encode raises on a
    string that is not valid UTF-8 (nlohmann's type_error 316); decode rejects
    invalid UTF-8, lone surrogates, control characters in strings, trailing
    garbage and NaN/Infinity literals. Duplicate keys: the last one wins.
  * encode_pretty(obj, indent): indent <= 0 gives the compact form; otherwise
    nlohmann's layout ("key": value, one member per line, [] and {} for empty).
  * to_cbor writes integral numbers in [-2^63, 2^63) as CBOR integers, other
    finite numbers as 64-bit floats (the spec's §11.10 alternative), NaN and
    infinities as null, maps with sorted keys. from_cbor reads CBOR as the
    LAppS protocol reads client messages: it rejects trailing bytes, every
    tag (as nlohmann's from_cbor), non-string map keys, and undefined and
    other simple values; byte strings become Lua strings.
]]

local py_to_cbor, py_from_cbor = ...

local type, next, rawget, setmetatable, getmetatable = type, next, rawget, setmetatable, getmetatable
local getfenv, setfenv, raw_getmetatable = debug.getfenv, debug.setfenv, debug.getmetatable
local error, tostring, tonumber, newproxy, pcall = error, tostring, tonumber, newproxy, pcall
local floor, huge, frexp, ldexp = math.floor, math.huge, math.frexp, math.ldexp
local byte, char, find, format, sub, gsub, rep = string.byte, string.char, string.find, string.format, string.sub, string.gsub, string.rep
local concat, sort, remove = table.concat, table.sort, table.remove
local io_open = io.open

local ok_new, new_tab = pcall(require, "table.new")
if not ok_new then new_tab = function() return {} end end

local NULL = {}                           -- JSON null inside the tree
local OBJ, ARR = {}, {}                   -- metatables that mark containers
local OBJ_MARK, ARR_MARK = {}, {}         -- markers in flattened Python values
local BOX, VALUE = {}, {}                 -- metatable and key of a boxed scalar

local proto = newproxy(true)
local UMT = getmetatable(proto)

-- The userdata for a node: containers are their own environment, scalars are
-- boxed under a key no user code can name, so rawget(env, key) is nil for them.
local function wrap(node)
  local u = newproxy(proto)
  if type(node) ~= "table" or node == NULL then
    node = setmetatable({ [VALUE] = node }, BOX)
  end
  setfenv(u, node)
  return u
end

-- The node of an nljson userdata, or nil for any other value.
local function node_of(u)
  if type(u) ~= "userdata" or raw_getmetatable(u) ~= UMT then return nil end
  local env = getfenv(u)
  if getmetatable(env) == BOX then return env[VALUE] end
  return env
end

local function export(v)
  if v == NULL then return nil end
  if type(v) == "table" then return wrap(v) end
  return v
end

local function typename_of(v)
  if v == NULL then return "null" end
  local t = type(v)
  if t == "table" then return getmetatable(v) == OBJ and "object" or "array" end
  return t                                -- "string", "number", "boolean"
end

local function node_arg(v, fname)
  local node = node_of(v)
  if node == nil then
    error(format("bad argument #1 to 'nljson.%s' (nljson value expected, got %s)", fname, type(v)), 3)
  end
  return node
end

local function number_key(k)
  if k == floor(k) and k >= -2^63 and k < 2^63 then return format("%d", k) end
  return tostring(k)
end

---------------------------------------------------------------- copy / import

local function copy(v)
  if type(v) ~= "table" or v == NULL then return v end
  if getmetatable(v) == ARR then
    local n = #v
    local c = setmetatable(new_tab(n, 0), ARR)
    for i = 1, n do c[i] = copy(v[i]) end
    return c
  end
  local c = setmetatable({}, OBJ)
  for k, x in next, v do c[k] = copy(x) end
  return c
end

local import

-- Deeper Lua tables are refused: a table that holds itself would otherwise
-- recurse until the Lua stack overflows (the wire takes 400 levels of CBOR).
local MAX_IMPORT_DEPTH = 1000

local function import_table(t, depth)
  if depth > MAX_IMPORT_DEPTH then
    error("nljson: a table nested more than " .. MAX_IMPORT_DEPTH
          .. " levels deep (or holding itself) cannot be converted", 0)
  end
  depth = depth + 1
  local count, max, all_int = 0, 0, true
  for k in next, t do
    count = count + 1
    if all_int then
      if type(k) == "number" and k >= 1 and k == floor(k) and k < 2^53 then
        if k > max then max = k end
      else
        all_int = false
      end
    end
  end
  if all_int then                         -- includes the empty table -> []
    local a = setmetatable(new_tab(max, 0), ARR)
    for i = 1, max do
      local x = t[i]
      if x == nil then a[i] = NULL else a[i] = import(x, depth) end
    end
    return a
  end
  local o = setmetatable({}, OBJ)
  for k, x in next, t do
    local tk = type(k)
    if tk == "string" then o[k] = import(x, depth)
    elseif tk == "number" then o[number_key(k)] = import(x, depth) end
  end
  return o
end

function import(v, depth)
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" then return v end
  if t == "table" then return import_table(v, depth or 0) end
  if t == "userdata" then
    local node = node_of(v)
    if node ~= nil then return copy(node) end
  end
  return NULL                             -- nil, functions, threads, other userdata
end

---------------------------------------------------------------- UTF-8, escaping

-- A byte loop: JIT-compiled it checks 4.5 KB of two-byte text in ~6 us, and
-- even interpreted it beats seven gsub passes (~64 us against ~200 us).
-- Callers test for bytes >= 128 first, so pure ASCII never gets here.
local function valid_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c = byte(s, i)
    if c < 128 then
      i = i + 1
    elseif c >= 194 and c <= 223 then
      local c2 = byte(s, i + 1)
      if not c2 or c2 < 128 or c2 > 191 then return false end
      i = i + 2
    elseif c >= 224 and c <= 239 then
      local c2, c3 = byte(s, i + 1, i + 2)
      if not c3 or c2 < 128 or c2 > 191 or c3 < 128 or c3 > 191
         or (c == 224 and c2 < 160) or (c == 237 and c2 > 159) then return false end
      i = i + 3
    elseif c >= 240 and c <= 244 then
      local c2, c3, c4 = byte(s, i + 1, i + 3)
      if not c4 or c2 < 128 or c2 > 191 or c3 < 128 or c3 > 191 or c4 < 128 or c4 > 191
         or (c == 240 and c2 < 144) or (c == 244 and c2 > 143) then return false end
      i = i + 4
    else
      return false
    end
  end
  return true
end

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
                  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
for c = 0, 31 do
  local ch = char(c)
  if not ESCAPES[ch] then ESCAPES[ch] = format("\\u%04x", c) end
end

-- Anchored, so the pattern engine runs one pass (about 3x faster on long strings).
local PLAIN = '^[^%z\1-\31"\\\128-\255]*$'

local function put_string(buf, n, s)
  if not find(s, PLAIN) then
    if not valid_utf8(s) then
      error("nljson: cannot encode a string that is not valid UTF-8", 0)
    end
    s = gsub(s, '[%z\1-\31"\\]', ESCAPES)
  end
  buf[n + 1] = '"'; buf[n + 2] = s; buf[n + 3] = '"'
  return n + 3
end

local function number_text(x)
  if x == floor(x) then
    if x >= -2^63 and x < 2^63 then return format("%d", x) end
    if x ~= x or x == huge or x == -huge then return "null" end
  elseif x ~= x then
    return "null"
  end
  local s = format("%.15g", x)
  if tonumber(s) ~= x then
    s = format("%.16g", x)
    if tonumber(s) ~= x then s = format("%.17g", x) end
  end
  return s
end

---------------------------------------------------------------- encoding

local function sorted_keys(o)
  local keys, n = {}, 0
  for k in next, o do n = n + 1; keys[n] = k end
  if n > 1 then sort(keys) end
  return keys, n
end

-- JSON text of v into buf[n+1...]; returns the new n. step == nil is
-- compact output, else the indent per level (depth is the current level).
local function put_json(buf, n, v, step, depth)
  local t = type(v)
  if t == "string" then return put_string(buf, n, v) end
  if t == "number" then n = n + 1; buf[n] = number_text(v); return n end
  if t == "boolean" then n = n + 1; buf[n] = v and "true" or "false"; return n end
  if v == NULL then n = n + 1; buf[n] = "null"; return n end
  local inner, outer, colon = "", "", ":"
  if step then
    inner = "\n" .. rep(" ", step * (depth + 1))
    outer = "\n" .. rep(" ", step * depth)
    colon = ": "
  end
  local is_array = getmetatable(v) == ARR
  local keys, len
  if is_array then len = #v else keys, len = sorted_keys(v) end
  if len == 0 then n = n + 1; buf[n] = is_array and "[]" or "{}"; return n end
  n = n + 1; buf[n] = is_array and "[" or "{"
  for i = 1, len do
    n = n + 1; buf[n] = (i > 1) and ("," .. inner) or inner
    local value = v[i]
    if not is_array then
      local k = keys[i]
      n = put_string(buf, n, k)
      n = n + 1; buf[n] = colon
      value = v[k]
    end
    n = put_json(buf, n, value, step, step and depth + 1)
  end
  if step then n = n + 1; buf[n] = outer end
  n = n + 1; buf[n] = is_array and "]" or "}"
  return n
end

local function encode_node(node)
  local t = type(node)
  if t == "string" then
    local buf = {}
    return concat(buf, "", 1, put_string(buf, 0, node))
  elseif t ~= "table" or node == NULL then
    local buf = {}
    put_json(buf, 0, node)
    return buf[1]
  end
  local buf = {}
  return concat(buf, "", 1, put_json(buf, 0, node))
end

---------------------------------------------------------------- CBOR

-- CBOR for Python (to_python, to_cbor): strings are length-prefixed, so they
-- are copied, never scanned; cbor2 checks their UTF-8 in C. Integral numbers
-- in [-2^63, 2^63) are integers, other finite numbers 64-bit floats, NaN and
-- infinities null; maps have definite lengths and sorted keys, as cbor2 and
-- nlohmann write them.

local function u32(x)                     -- 4 big-endian bytes, 0 <= x < 2^32
  return char(floor(x / 16777216), floor(x / 65536) % 256, floor(x / 256) % 256, x % 256)
end

local function cbor_head(major, x)        -- x integral, 0 <= x < 2^64
  local m = major * 32
  if x < 24 then return char(m + x) end
  if x < 256 then return char(m + 24, x) end
  if x < 65536 then return char(m + 25, floor(x / 256), x % 256) end
  if x < 4294967296 then return char(m + 26) .. u32(x) end
  local hi = floor(x / 4294967296)
  return char(m + 27) .. u32(hi) .. u32(x - hi * 4294967296)
end

local function cbor_negative(x)           -- x integral, -2^63 <= x < 0: head(1, -1 - x)
  if x > -2^53 then return cbor_head(1, -1 - x) end
  local m = -x                            -- exact; -1 - x may not be
  local hi = floor(m / 4294967296)
  local lo = m - hi * 4294967296
  if lo == 0 then hi, lo = hi - 1, 4294967295 else lo = lo - 1 end
  return "\59" .. u32(hi) .. u32(lo)
end

local function cbor_double(x)             -- finite
  local sign = 0
  if x < 0 or (x == 0 and 1 / x < 0) then sign = 2147483648; x = -x end
  local hi, lo = sign, 0
  if x ~= 0 then
    local mant, e = frexp(x)              -- x = mant * 2^e, 0.5 <= mant < 1
    local biased, fraction = e + 1022, nil
    if biased > 0 then
      fraction = (mant * 2 - 1) * 4503599627370496        -- 52 fraction bits
    else
      fraction = ldexp(mant, e + 1074)    -- subnormal
      biased = 0
    end
    local fhi = floor(fraction / 4294967296)
    hi = sign + biased * 1048576 + fhi
    lo = fraction - fhi * 4294967296
  end
  return "\251" .. u32(hi) .. u32(lo)
end

local function put_cbor(buf, n, v)
  local t = type(v)
  n = n + 1
  if t == "string" then
    buf[n] = cbor_head(3, #v)
    n = n + 1; buf[n] = v
  elseif t == "number" then
    if v == floor(v) and v >= -2^63 and v < 2^63 then
      buf[n] = v >= 0 and cbor_head(0, v) or cbor_negative(v)
    elseif v == v and v ~= huge and v ~= -huge then
      buf[n] = cbor_double(v)
    else
      buf[n] = "\246"
    end
  elseif t == "boolean" then
    buf[n] = v and "\245" or "\244"
  elseif v == NULL then
    buf[n] = "\246"
  elseif getmetatable(v) == ARR then
    local len = #v
    buf[n] = cbor_head(4, len)
    for i = 1, len do n = put_cbor(buf, n, v[i]) end
  else
    local keys, len = sorted_keys(v)
    buf[n] = cbor_head(5, len)
    for i = 1, len do
      local k = keys[i]
      n = n + 1; buf[n] = cbor_head(3, #k)
      n = n + 1; buf[n] = k
      n = put_cbor(buf, n, v[k])
    end
  end
  return n
end

local function cbor_node(node)
  local buf = {}
  return concat(buf, "", 1, put_cbor(buf, 0, node))
end

---------------------------------------------------------------- decoding

local function parse_error(s, i, what)
  error(format("nljson.decode: parse error at byte %d: %s", i or #s + 1, what), 0)
end

local SIMPLE_UNESCAPES = { [34] = '"', [92] = "\\", [47] = "/", [98] = "\b",
                           [102] = "\f", [110] = "\n", [114] = "\r", [116] = "\t" }

local function utf8_char(cp)
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then return char(0xC0 + floor(cp / 0x40), 0x80 + cp % 0x40) end
  if cp < 0x10000 then
    return char(0xE0 + floor(cp / 0x1000), 0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return char(0xF0 + floor(cp / 0x40000), 0x80 + floor(cp / 0x1000) % 0x40,
              0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

-- Anchored runs of ordinary string bytes: one pattern pass, not one per position.
local STRING_RUN = '^[^"\\%z\1-\31]*'
local ASCII = '^[%z\1-\127]*$'

local function parse_string(s, i)        -- s[i] is the opening quote
  local _, e = find(s, STRING_RUN, i + 1)
  local j = e + 1
  local str
  if byte(s, j) == 34 then
    str = sub(s, i + 1, e)
  else
    local parts, np, start = {}, 0, i + 1
    while true do
      _, e = find(s, STRING_RUN, start)
      j = e + 1
      local c = byte(s, j)
      if not c then parse_error(s, nil, "unterminated string") end
      np = np + 1; parts[np] = sub(s, start, j - 1)
      if c == 34 then break end
      if c ~= 92 then parse_error(s, j, "control character in string") end
      local esc = byte(s, j + 1)
      if esc == 117 then
        local hex = sub(s, j + 2, j + 5)
        local cp = find(hex, "^%x%x%x%x$") and tonumber(hex, 16)
        if not cp then parse_error(s, j, "bad \\u escape") end
        start = j + 6
        if cp >= 0xD800 and cp <= 0xDBFF then
          local low = sub(s, j + 6, j + 7) == "\\u" and sub(s, j + 8, j + 11)
          low = low and find(low, "^%x%x%x%x$") and tonumber(low, 16)
          if not low or low < 0xDC00 or low > 0xDFFF then
            parse_error(s, j, "surrogate U+D800..U+DBFF must be followed by U+DC00..U+DFFF")
          end
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (low - 0xDC00)
          start = j + 12
        elseif cp >= 0xDC00 and cp <= 0xDFFF then
          parse_error(s, j, "lone low surrogate")
        end
        np = np + 1; parts[np] = utf8_char(cp)
      else
        local r = esc and SIMPLE_UNESCAPES[esc]
        if not r then parse_error(s, j, "bad escape") end
        np = np + 1; parts[np] = r
        start = j + 2
      end
    end
    str = concat(parts, "", 1, np)
  end
  if not find(str, ASCII) and not valid_utf8(str) then
    parse_error(s, i, "invalid UTF-8 in string")
  end
  return str, j + 1
end

local function parse_number(s, i)
  local _, e = find(s, "^-?%d+", i)
  if not e then parse_error(s, i, "syntax error") end
  local first = byte(s, i) == 45 and i + 1 or i
  if byte(s, first) == 48 and e > first then parse_error(s, i, "leading zero in number") end
  local _, f = find(s, "^%.%d+", e + 1)
  if f then e = f elseif byte(s, e + 1) == 46 then parse_error(s, e + 1, "bad fraction") end
  local _, x = find(s, "^[eE][-+]?%d+", e + 1)
  if x then e = x else
    local c = byte(s, e + 1)
    if c == 101 or c == 69 then parse_error(s, e + 1, "bad exponent") end
  end
  local n = tonumber(sub(s, i, e))
  if n == huge or n == -huge then parse_error(s, i, "number overflow") end
  return n, e + 1
end

local parse_value

local function parse_object(s, i)        -- s[i] is "{"
  local o = setmetatable({}, OBJ)
  i = find(s, "[^ \t\n\r]", i + 1)
  if i and byte(s, i) == 125 then return o, i + 1 end
  while true do
    if not i or byte(s, i) ~= 34 then parse_error(s, i, "object key expected") end
    local k
    k, i = parse_string(s, i)
    i = find(s, "[^ \t\n\r]", i)
    if not i or byte(s, i) ~= 58 then parse_error(s, i, "':' expected") end
    local v
    v, i = parse_value(s, i + 1)
    o[k] = v
    i = find(s, "[^ \t\n\r]", i)
    local c = i and byte(s, i)
    if c == 125 then return o, i + 1 end
    if c ~= 44 then parse_error(s, i, "',' or '}' expected") end
    i = find(s, "[^ \t\n\r]", i + 1)
  end
end

local function parse_array(s, i)         -- s[i] is "["
  local a = setmetatable({}, ARR)
  i = find(s, "[^ \t\n\r]", i + 1)
  if not i then parse_error(s, nil, "unexpected end of input") end
  if byte(s, i) == 93 then return a, i + 1 end
  local n = 0
  while true do
    local v
    v, i = parse_value(s, i)
    n = n + 1; a[n] = v
    i = find(s, "[^ \t\n\r]", i)
    local c = i and byte(s, i)
    if c == 93 then return a, i + 1 end
    if c ~= 44 then parse_error(s, i, "',' or ']' expected") end
    i = i + 1
  end
end

function parse_value(s, i)
  i = find(s, "[^ \t\n\r]", i)
  if not i then parse_error(s, nil, "unexpected end of input") end
  local c = byte(s, i)
  if c == 34 then return parse_string(s, i) end
  if c == 123 then return parse_object(s, i) end
  if c == 91 then return parse_array(s, i) end
  if c == 116 then
    if sub(s, i, i + 3) == "true" then return true, i + 4 end
  elseif c == 102 then
    if sub(s, i, i + 4) == "false" then return false, i + 5 end
  elseif c == 110 then
    if sub(s, i, i + 3) == "null" then return NULL, i + 4 end
  else
    return parse_number(s, i)
  end
  parse_error(s, i, "syntax error")
end

local function decode_text(s)
  local ok, v, i = pcall(parse_value, s, 1)
  if not ok then
    -- the parser recurses per level: thousands of them exhaust the Lua stack
    if v == "stack overflow" then v = "nljson.decode: parse error: nested too deeply" end
    error(v, 0)
  end
  if find(s, "[^ \t\n\r]", i) then parse_error(s, i, "unexpected trailing characters") end
  return v
end

---------------------------------------------------------------- flattened values from Python

-- Python sends a JSON-like value as one flat table: scalars as they are, null
-- as NULL, an object as OBJ_MARK, count, then key, value pairs, an array as
-- ARR_MARK, count, then its values.
local function build(flat, i)
  local v = flat[i]
  if v == OBJ_MARK then
    local n = flat[i + 1]
    i = i + 2
    local o = setmetatable({}, OBJ)
    for _ = 1, n do
      local k = flat[i]
      v = flat[i + 1]
      if v == OBJ_MARK or v == ARR_MARK then v, i = build(flat, i + 1) else i = i + 2 end
      o[k] = v
    end
    return o, i
  elseif v == ARR_MARK then
    local n = flat[i + 1]
    i = i + 2
    local a = setmetatable(new_tab(n, 0), ARR)
    for j = 1, n do
      v = flat[i]
      if v == OBJ_MARK or v == ARR_MARK then v, i = build(flat, i) else i = i + 1 end
      a[j] = v
    end
    return a, i
  end
  return v, i + 1
end

local function from_flat(flat)
  return wrap((build(flat, 1)))
end

local function from_args(...)
  return wrap((build({ ... }, 1)))
end

---------------------------------------------------------------- userdata behaviour

UMT.__metatable = "nljson"

function UMT.__index(u, k)
  local v = rawget(getfenv(u), k)
  if v == nil or v == NULL then return nil end
  if type(v) == "table" then return wrap(v) end
  return v
end

function UMT.__newindex(u, k, v)
  local node = node_of(u)
  local mt = type(node) == "table" and getmetatable(node)
  if mt == OBJ then
    if type(k) ~= "string" then
      error("nljson: an object member must be set with a string key, got " .. type(k), 2)
    end
    node[k] = import(v)
  elseif mt == ARR then
    if type(k) ~= "number" then
      error("nljson: an array element must be set with an integer index, got " .. type(k), 2)
    end
    if k < 1 or k ~= floor(k) or k >= 2^53 then
      error("nljson: array index " .. tostring(k) .. " is out of range (indices start at 1)", 2)
    end
    v = import(v)
    for i = #node + 1, k - 1 do node[i] = NULL end
    node[k] = v
  else
    error("nljson: cannot set a member of a " .. typename_of(node) .. " value", 2)
  end
end

function UMT.__len(u)
  local node = node_of(u)
  if node == NULL then return 0 end
  if type(node) ~= "table" then return 1 end
  if getmetatable(node) == ARR then return #node end
  local n = 0
  for _ in next, node do n = n + 1 end
  return n
end

function UMT.__tostring(u)
  return encode_node(node_of(u))
end

---------------------------------------------------------------- library

local nljson = {}

function nljson.decode(text)
  if type(text) ~= "string" then
    error("bad argument #1 to 'nljson.decode' (string expected, got " .. type(text) .. ")", 2)
  end
  return wrap(decode_text(text))
end

function nljson.decode_file(path)
  if type(path) ~= "string" then
    error("bad argument #1 to 'nljson.decode_file' (string expected, got " .. type(path) .. ")", 2)
  end
  local f, err = io_open(path, "rb")
  if not f then error("nljson.decode_file: " .. tostring(err), 2) end
  local text = f:read("*a")
  f:close()
  return wrap(decode_text(text or ""))
end

function nljson.encode(obj)
  return encode_node(node_arg(obj, "encode"))
end

function nljson.encode_pretty(obj, indent)
  local node = node_arg(obj, "encode_pretty")
  if indent == nil then indent = 2 end
  if type(indent) ~= "number" then
    error("bad argument #2 to 'nljson.encode_pretty' (number expected, got " .. type(indent) .. ")", 2)
  end
  indent = floor(indent)
  if indent <= 0 then return encode_node(node) end
  local buf = {}
  return concat(buf, "", 1, put_json(buf, 0, node, indent, 0))
end

function nljson.to_cbor(obj)
  local data, err = py_to_cbor(cbor_node(node_arg(obj, "to_cbor")))
  if data == nil then error("nljson.to_cbor: " .. tostring(err), 2) end
  return data
end

function nljson.from_cbor(data)
  if type(data) ~= "string" then
    error("bad argument #1 to 'nljson.from_cbor' (string expected, got " .. type(data) .. ")", 2)
  end
  local flat, err = py_from_cbor(data)
  if flat == nil then error("nljson.from_cbor: " .. tostring(err), 2) end
  return from_flat(flat)
end

function nljson.find(obj, key)
  local node = node_arg(obj, "find")
  if type(node) ~= "table" or getmetatable(node) ~= OBJ then return nil end
  if type(key) == "number" then key = number_key(key)
  elseif type(key) ~= "string" then return nil end
  return export(node[key])
end

function nljson.foreach(obj, fn)
  local node = node_arg(obj, "foreach")
  if type(node) ~= "table" or node == NULL then return end
  if getmetatable(node) == ARR then
    for i = 1, #node do fn(i, export(node[i])) end
    return
  end
  local keys, n = sorted_keys(node)
  for i = 1, n do
    local k = keys[i]
    fn(k, export(node[k]))
  end
end

local function walk(node, fn)
  if getmetatable(node) == ARR then
    for i = 1, #node do
      local v = node[i]
      if type(v) == "table" and v ~= NULL then walk(v, fn) end
      fn(i, export(v))
    end
    return
  end
  local keys, n = sorted_keys(node)
  for i = 1, n do
    local k = keys[i]
    local v = node[k]
    if v ~= nil then                      -- fn may have erased it
      if type(v) == "table" and v ~= NULL then walk(v, fn) end
      fn(k, export(v))
    end
  end
end

function nljson.traverse(obj, fn)
  local node = node_arg(obj, "traverse")
  if type(node) == "table" and node ~= NULL then walk(node, fn) end
end

function nljson.erase(obj, key)
  local node = node_arg(obj, "erase")
  if type(node) ~= "table" or node == NULL then return false end
  if getmetatable(node) == OBJ then
    if type(key) ~= "string" or node[key] == nil then return false end
    node[key] = nil
    return true
  end
  if type(key) ~= "number" or key ~= floor(key) or key < 0 or key >= #node then return false end
  remove(node, key + 1)                   -- 0-based, as in LAppS
  return true
end

function nljson.empty(obj)
  local node = node_arg(obj, "empty")
  if type(node) ~= "table" or node == NULL then return false end
  return next(node) == nil
end

function nljson.typename(obj)
  return typename_of(node_arg(obj, "typename"))
end

package.loaded.nljson = nljson

---------------------------------------------------------------- for Python

-- CBOR of an nljson value, a Lua table (converted as by assignment) or a scalar.
local function to_cbor(v)
  local node = node_of(v)
  if node == nil then node = import(v) end
  return cbor_node(node)
end

local function is_nljson(v)
  return node_of(v) ~= nil
end

return nljson, {
  to_cbor = to_cbor,
  from_flat = from_flat,
  from_args = from_args,
  is_nljson = is_nljson,
  NULL = NULL, OBJ_MARK = OBJ_MARK, ARR_MARK = ARR_MARK,
}
