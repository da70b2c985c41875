-- require of the service module, checked for its functions: load_module() in runtime.py.
local name, required = ...
local ok, module = pcall(require, name)
if not ok then
  local why = tostring(module):gsub("^error loading module '[^']*' from file '[^']*':\n%s*", "")
  local file, cut = package.searchpath(name, package.path), why:match("^%.%.%.([^:]*):")
  if file and cut and file:sub(-#cut) == cut then why = file .. why:sub(#cut + 4) end
  return nil, (why:gsub(":?\n%s*", "; "))
end
if type(module) ~= "table" then
  return nil, "module " .. name .. " returned " .. type(module) .. " instead of a table"
end
for _, fn in ipairs(required) do
  if type(module[fn]) ~= "function" then
    return nil, "module " .. name .. " has no function " .. fn
  end
end
_G[name] = module
return module, false
