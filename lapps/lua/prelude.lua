-- Every runtime's first chunk (no python global, one-write print, lua_path): new_runtime() in runtime.py.
python, package.loaded.python = nil, nil
-- print() writes each line with one unbuffered write, at once: lines
-- from several instance threads and the server's log never mix
local select, tostring, concat, stdout = select, tostring, table.concat, io.stdout
function print(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
  stdout:write(concat(parts, "\t") .. "\n")
end
local extra = ...
if #extra > 0 then package.path = extra .. ";" .. package.path end
