local M = {}

local log_lines = {}

--- Keep a short in-memory log (see :lua print(require("agentd.util").log_text())).
function M.log(msg)
  table.insert(log_lines, os.date("%H:%M:%S ") .. tostring(msg))
  if #log_lines > 500 then
    table.remove(log_lines, 1)
  end
end

function M.log_text()
  return table.concat(log_lines, "\n")
end

function M.notify(msg, level)
  level = level or vim.log.levels.INFO
  M.log(msg)
  local min = require("agentd.config").get().notify_level or vim.log.levels.INFO
  if level < min then
    return
  end
  local function go()
    vim.notify(msg, level, { title = "agentd" })
  end
  if vim.in_fast_event() then
    vim.schedule(go)
  else
    go()
  end
end

--- Text of a JSON-RPC error object (or anything).
function M.err_text(err)
  if type(err) ~= "table" then
    return tostring(err)
  end
  local s = err.message or err.name or vim.inspect(err)
  if err.name and err.message then
    s = err.name .. ": " .. err.message
  end
  if err.code and err.code ~= -32099 then
    s = s .. (" (%s)"):format(tostring(err.code))
  end
  return s
end

--- Split on "\n" exactly (a trailing "\n" gives a trailing "").
function M.split_lines(s)
  local out = {}
  local start = 1
  while true do
    local i = string.find(s, "\n", start, true)
    if not i then
      out[#out + 1] = string.sub(s, start)
      break
    end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
  return out
end

function M.now_ms()
  return os.time() * 1000
end

--- "just now", "5m ago", "3h ago", "2d ago", or a date.
function M.reltime(ms)
  if type(ms) ~= "number" then
    return ""
  end
  local d = math.floor((M.now_ms() - ms) / 1000)
  if d < 45 then
    return "just now"
  elseif d < 3600 then
    return ("%dm ago"):format(math.max(1, math.floor(d / 60 + 0.5)))
  elseif d < 86400 then
    return ("%dh ago"):format(math.floor(d / 3600 + 0.5))
  elseif d < 86400 * 14 then
    return ("%dd ago"):format(math.floor(d / 86400 + 0.5))
  end
  return os.date("%Y-%m-%d", math.floor(ms / 1000))
end

--- 1234567 -> "1.2M", 12345 -> "12.3k".
function M.short_num(n)
  n = tonumber(n) or 0
  if n >= 1e6 then
    return ("%.1fM"):format(n / 1e6)
  elseif n >= 1e4 then
    return ("%.1fk"):format(n / 1e3)
  end
  return tostring(math.floor(n))
end

function M.cost(c)
  c = tonumber(c)
  if not c then
    return nil
  end
  if c == 0 then
    return "$0"
  elseif c < 0.01 then
    return ("$%.4f"):format(c)
  end
  return ("$%.2f"):format(c)
end

--- First line of s, cut to n display cells with an ellipsis.
function M.shorten(s, n)
  s = tostring(s or ""):gsub("\r", ""):gsub("\n.*", " …")
  if vim.fn.strdisplaywidth(s) <= n then
    return s
  end
  local chars = vim.fn.strchars(s)
  local lo = math.min(chars, n)
  while lo > 0 and vim.fn.strdisplaywidth(vim.fn.strcharpart(s, 0, lo)) > n - 1 do
    lo = lo - 1
  end
  return vim.fn.strcharpart(s, 0, lo) .. "…"
end

--- Width of a floating window showing `lines`: the widest line, within the screen.
function M.float_width(lines)
  local width = 20
  for _, l in ipairs(lines) do
    width = math.max(width, vim.fn.strdisplaywidth(l))
  end
  return math.min(width + 1, math.max(20, vim.o.columns - 4))
end

--- Is this (main-loop) code running in a coroutine it may yield from?
function M.can_yield()
  local co, main = coroutine.running()
  return co ~= nil and not main
end

--- Ask something asynchronous (start(resolve) calls resolve(value) once) and
--- return its answer. Inside a server-request coroutine (Neovim >= 0.10) it
--- yields until the answer comes. Otherwise (Neovim 0.7-0.9 run server
--- requests outside coroutines) it only works if the answer comes
--- synchronously; returns nil, false when it did not.
function M.await(start)
  local answered, value = false, nil
  local co = M.can_yield() and coroutine.running() or nil
  local waiting = false
  start(function(v)
    if answered then
      return
    end
    answered, value = true, v
    if waiting and co then
      vim.schedule(function()
        local ok, err = coroutine.resume(co)
        if not ok then
          M.notify("agentd: " .. tostring(err), vim.log.levels.ERROR)
        end
      end)
    end
  end)
  if answered then
    return value, true
  end
  if co then
    waiting = true
    coroutine.yield()
    return value, true
  end
  return nil, false
end

--- Pick one of items synchronously with inputlist() (fallback when a UI
--- cannot be awaited). Returns the item or nil.
function M.inputlist_select(items, prompt, format)
  local lines = { prompt }
  for i, it in ipairs(items) do
    lines[#lines + 1] = ("%d. %s"):format(i, format and format(it) or tostring(it))
  end
  local ok, n = pcall(vim.fn.inputlist, lines)
  if ok and type(n) == "number" and n >= 1 and n <= #items then
    return items[n]
  end
  return nil
end

--- vim.ui.select, awaited; falls back to inputlist() where it cannot wait.
function M.select(items, opts)
  local v, ok = M.await(function(resolve)
    local okc, err = pcall(vim.ui.select, items, opts, function(choice)
      resolve(choice or false)
    end)
    if not okc then
      M.log("vim.ui.select failed: " .. tostring(err))
      resolve(false)
    end
  end)
  if ok then
    return v or nil
  end
  return M.inputlist_select(items, opts.prompt or "agentd", opts.format_item)
end

return M
