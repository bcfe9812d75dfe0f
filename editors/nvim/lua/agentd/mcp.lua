-- MCP servers: :AgentdMcp (what `mcp/list` says, in a floating window) and
-- the `mcp/status` notifications (a failed server is notified once).
local api = vim.api
local client = require("agentd.client")
local util = require("agentd.util")

local M = {}

M.buf = nil -- the :AgentdMcp window's buffer and window (nil: closed)
M.win = nil

local ns = api.nvim_create_namespace("agentd_mcp")

-- "<sessionId or ''>|<name>" -> the error last notified for that server
-- (cleared when it becomes ready), so a server that keeps failing the same
-- way (it is retried on every prompt) is reported once.
local failures = {}

local STATE_HL = { ready = "String", failed = "ErrorMsg", starting = "WarningMsg", stopped = "Comment" }

--- Handle the mcp/status notification.
function M.on_status(params)
  local s = type(params) == "table" and params.server or nil
  if type(s) ~= "table" or type(s.name) ~= "string" then
    return
  end
  local key = tostring(s.sessionId or "") .. "|" .. s.name
  if s.state == "failed" then
    local err = type(s.error) == "string" and s.error or "unknown error"
    if failures[key] ~= err then
      failures[key] = err
      util.notify(("agentd: MCP server %s failed: %s"):format(s.name, err), vim.log.levels.WARN)
    end
    return
  end
  if s.state == "ready" then
    failures[key] = nil
  end
  local msg = ("agentd: MCP server %s %s"):format(s.name, tostring(s.state))
  if s.state == "ready" and s.toolCount then
    msg = msg .. (" (%s tools)"):format(tostring(s.toolCount))
  end
  util.notify(msg, vim.log.levels.DEBUG)
end

---------------------------------------------------------------------------
-- :AgentdMcp

--- Close the :AgentdMcp window (win: only if it is that one).
function M.close(win)
  win = win or M.win
  if win and api.nvim_win_is_valid(win) then
    pcall(api.nvim_win_close, win, true)
  end
  if win == M.win then
    M.win, M.buf = nil, nil
  end
end

local function pad(s, n)
  return s .. string.rep(" ", n - vim.fn.strdisplaywidth(s))
end

--- The window's lines and highlights ({row, col, end_col, group}) for
--- mcp/list's servers.
function M.format(servers)
  local lines, hls = {}, {}
  if #servers == 0 then
    lines[1] = "No MCP servers configured ([mcp_servers.<name>] in agentd's config.toml)."
    hls[1] = { 0, 0, #lines[1], "Comment" }
    return lines, hls
  end
  local w = { 0, 0, 0, 0 }
  for _, s in ipairs(servers) do
    w[1] = math.max(w[1], vim.fn.strdisplaywidth(tostring(s.name)))
    w[2] = math.max(w[2], #tostring(s.state))
    w[3] = math.max(w[3], #tostring(s.transport))
    w[4] = math.max(w[4], #tostring(s.trust))
  end
  for _, s in ipairs(servers) do
    local allowed, total = {}, 0
    for _, t in ipairs(s.tools or {}) do
      total = total + 1
      if t.allowed ~= false then
        allowed[#allowed + 1] = t
      end
    end
    local count = #allowed == total and ("(%d tool%s)"):format(total, total == 1 and "" or "s")
      or ("(%d of %d tools)"):format(#allowed, total)
    local name = pad(tostring(s.name), w[1])
    local state = pad(tostring(s.state), w[2])
    local transport, trust = pad(tostring(s.transport), w[3]), pad(tostring(s.trust), w[4])
    local line = table.concat({ name, state, transport, trust, count }, "  ")
    if s.sessionId ~= nil and s.sessionId ~= vim.NIL then
      line = line .. "  (this session)"
    end
    if s.enabled == false then
      line = line .. "  (disabled)"
    end
    lines[#lines + 1] = line
    hls[#hls + 1] = { #lines - 1, 0, #tostring(s.name), "Title" }
    hls[#hls + 1] = { #lines - 1, #name + 2, #name + 2 + #tostring(s.state), STATE_HL[s.state] or "Normal" }
    if type(s.error) == "string" and s.error ~= "" then
      for i, l in ipairs(util.split_lines(s.error)) do
        lines[#lines + 1] = (i == 1 and "  error: " or "         ") .. l
        hls[#hls + 1] = { #lines - 1, 0, #lines[#lines], "ErrorMsg" }
      end
    end
    local tw = 0
    for _, t in ipairs(allowed) do
      tw = math.max(tw, vim.fn.strdisplaywidth(tostring(t.qualifiedName)))
    end
    for _, t in ipairs(allowed) do
      local l = "  " .. pad(tostring(t.qualifiedName), tw)
      local desc = type(t.description) == "string" and t.description or ""
      if desc ~= "" then
        local start = #l + 2
        l = l .. "  " .. util.shorten(desc, 60)
        hls[#hls + 1] = { #lines, start, #l, "Comment" }
      end
      lines[#lines + 1] = l
    end
  end
  return lines, hls
end

local function show(servers)
  M.close()
  local lines, hls = M.format(servers)
  local buf = api.nvim_create_buf(false, true)
  api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  for _, h in ipairs(hls) do
    pcall(api.nvim_buf_set_extmark, buf, ns, h[1], h[2], { end_col = h[3], hl_group = h[4] })
  end
  local bo = vim.bo[buf]
  bo.modifiable = false
  bo.bufhidden = "wipe"
  bo.filetype = "agentd_mcp"
  local width = util.float_width(lines)
  local height = math.max(1, math.min(#lines, vim.o.lines - 6))
  local win = api.nvim_open_win(buf, true, {
    relative = "editor",
    row = math.max(0, math.floor((vim.o.lines - height) / 2) - 1),
    col = math.max(0, math.floor((vim.o.columns - width) / 2)),
    width = width,
    height = height,
    style = "minimal",
    border = "single",
  })
  vim.wo[win].wrap = false
  M.buf, M.win = buf, win
  local function close()
    M.close(win)
  end
  for _, key in ipairs({ "q", "<Esc>" }) do
    vim.keymap.set("n", key, close, { buffer = buf, nowait = true, silent = true, desc = "agentd: close" })
  end
  -- Going to another window closes it (after the autocommand: no layout
  -- change inside WinLeave).
  api.nvim_create_autocmd("WinLeave", {
    buffer = buf,
    once = true,
    callback = function()
      vim.schedule(close)
    end,
  })
end

--- :AgentdMcp: start the MCP servers not running yet, then show them all.
function M.list()
  local params = { connect = true }
  params.sessionId = require("agentd.chat").current_id()
  api.nvim_echo({ { "agentd: connecting MCP servers…" } }, false, {})
  client.request("mcp/list", params, function(err, res)
    vim.cmd("echo ''")
    if err then
      if err.code ~= -32099 then -- (daemon failures are notified already)
        util.notify("agentd: could not list MCP servers: " .. util.err_text(err), vim.log.levels.ERROR)
      end
      return
    end
    show(res and res.servers or {})
  end)
end

return M
