-- settle(failed, a, b, key), for the globals whose Python side may answer
-- later (answers.py): Python answers (a, b) now, or (nil, nil, key): then
-- the answer comes by waiting on key (a reactive instance on a shared
-- bus); "failed" is what a wait given up at stop returns first.
local wait = ...
return function(failed, a, b, key)
  if key == nil then return a, b end
  local ok, got, err = wait(key)
  if ok then return got, err end
  return failed, got
end
