-- The murmur global (LAppS's string hash): installed by murmur.py.
local hash = ...
local type, tonumber = type, tonumber
local murmur = {}
local function digest(x)
  if type(x) ~= "string" and type(x) ~= "number" then
    error("usage: murmur.hashstr(string or number) / murmur.hashnum(string or number)", 3)
  end
  return hash(x)
end
function murmur.hashstr(x) return digest(x) end
function murmur.hashnum(x) return tonumber(digest(x), 16) end
return murmur
