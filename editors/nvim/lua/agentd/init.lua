-- agentd.nvim: chat with the agentd daemon from Neovim.
local api = vim.api
local config = require("agentd.config")
local client = require("agentd.client")
local chat = require("agentd.chat")
local panel = require("agentd.panel")
local tools = require("agentd.tools")
local sessions = require("agentd.sessions")
local mcp = require("agentd.mcp")
local util = require("agentd.util")

local M = {}

local installed = false

local function on_notification(method, params)
  if method == "mcp/status" then
    return mcp.on_status(params)
  end
  chat.on_notification(method, params)
end

local function on_request(method, params)
  if method == "tool/execute" then
    return tools.execute(params)
  elseif method == "permission/request" then
    return tools.permission(params)
  end
  return nil, require("vim.lsp.rpc").rpc_response_error(-32601, "method not found: " .. tostring(method))
end

--- Wire the daemon to the UI and set the autocommands (idempotent).
function M._install()
  if installed then
    return
  end
  installed = true
  client.handlers = {
    notification = on_notification,
    request = on_request,
    exit = chat.on_exit,
  }
  chat.on_status(panel.redraw_status)
  client.on_state = chat.status_changed
  local group = api.nvim_create_augroup("agentd", { clear = true })
  api.nvim_create_autocmd("VimLeavePre", {
    group = group,
    callback = function()
      client.stop({ sync = true })
    end,
  })
  api.nvim_create_autocmd({ "WinEnter", "BufEnter" }, {
    group = group,
    callback = function()
      tools.track()
    end,
  })
  tools.track()
end

local function set_global_keymaps()
  local g = (config.get().keymaps or {}).global or {}
  local function map(modes, lhs, rhs, desc)
    if lhs and lhs ~= "" then
      vim.keymap.set(modes, lhs, rhs, { silent = true, desc = desc })
    end
  end
  map("n", g.chat, "<Cmd>AgentdChat<CR>", "agentd: chat panel")
  map("x", g.chat, ":AgentdChat<CR>", "agentd: chat about the selection")
  map("n", g.sessions, "<Cmd>AgentdSessions<CR>", "agentd: sessions")
  map("n", g.new, "<Cmd>AgentdNew<CR>", "agentd: new chat")
  map("n", g.abort, "<Cmd>AgentdAbort<CR>", "agentd: abort the answer")
end

--- Configure the plugin. See :help agentd-options.
function M.setup(opts)
  config.set(opts)
  require("agentd.commands").register()
  M._install()
  set_global_keymaps()
end

---------------------------------------------------------------------------
-- Commands

-- The selection (or line range) of the current buffer as prompt context.
local function range_context(line1, line2)
  local buf = api.nvim_get_current_buf()
  local ft = vim.bo[buf].filetype
  if ft == "agentd" or ft == "agentd_input" then
    return nil
  end
  local s = api.nvim_buf_get_mark(buf, "<")
  local e = api.nvim_buf_get_mark(buf, ">")
  local sel
  if s[1] == line1 and e[1] == line2 and s[1] > 0 then
    local mode = vim.fn.visualmode()
    if mode == "" then
      mode = "V"
    end
    sel = {
      buf = buf,
      l1 = line1,
      c1 = s[2] + 1,
      l2 = line2,
      c2 = e[2] + 1,
      mode = mode,
    }
  else
    sel = { buf = buf, l1 = line1, c1 = 1, l2 = line2, c2 = 1, mode = "V" }
  end
  sel.text = tools.region_text(buf, sel.l1, sel.c1, sel.l2, sel.c2, sel.mode)
  local name = api.nvim_buf_get_name(buf)
  name = name == "" and "[No Name]" or vim.fn.fnamemodify(name, ":t")
  local label = line1 == line2 and ("%s:%d"):format(name, line1) or ("%s:%d-%d"):format(name, line1, line2)
  return { label = label, text = tools.describe_selection(sel) }
end

--- :[range]AgentdChat [text]
function M.chat_command(cmd)
  M._install()
  cmd = cmd or {}
  local text = cmd.args or ""
  local ctx = nil
  if cmd.range and cmd.range > 0 then
    ctx = range_context(cmd.line1, cmd.line2)
  end
  local asked = chat.restore() -- (a prompt goes to the remembered chat once it is open)
  if text ~= "" then
    panel.open({ focus = "input" })
    chat.send(text, ctx and { ctx.text } or nil)
    panel.scroll_to_end()
  else
    if ctx then
      panel.set_context(ctx)
    end
    panel.open({ focus = "input", insert = config.get().panel.start_insert })
    if not asked then
      client.ensure() -- warm the daemon up while the prompt is typed
    end
  end
end

--- Open (or focus) the panel.
function M.open(opts)
  M._install()
  chat.restore()
  panel.open(opts)
end

function M.close()
  panel.close()
end

function M.toggle()
  if panel.is_open() then
    panel.close()
  else
    M.open()
  end
end

--- Send a prompt to the current session (context: optional list of strings).
function M.send(text, context)
  M._install()
  chat.send(text, context)
end

function M.abort()
  M._install()
  chat.abort()
end

function M.new()
  M._install()
  chat.new()
  panel.context = nil
  panel.redraw_status()
end

function M.sessions()
  M._install()
  sessions.pick()
end

function M.rename(title)
  M._install()
  sessions.rename(title)
end

function M.delete(force)
  M._install()
  sessions.delete(force)
end

--- Fork the session at the message under the cursor in the chat panel (elsewhere: the
--- whole session) and open the fork. cb(err) once it is shown.
function M.fork(cb)
  M._install()
  require("agentd.history").fork(cb)
end

--- Revert the session to the message under the cursor, after a preview and a yes.
function M.revert(cb)
  M._install()
  require("agentd.history").revert(cb)
end

--- Undo the latest revert, after a preview and a yes.
function M.unrevert(cb)
  M._install()
  require("agentd.history").unrevert(cb)
end

--- The session as Markdown (or JSON: format "json") in a new scratch buffer.
function M.export(format, cb)
  M._install()
  require("agentd.history").export(format, cb)
end

--- :AgentdMcp: connect the MCP servers and show them with their tools.
function M.mcp()
  M._install()
  mcp.list()
end

--- What initialize said of the daemon serving this Neovim, in lines.
function M.describe_daemon(info)
  if type(info) ~= "table" then
    return { "agentd is not running (it starts on first use)" }
  end
  local server = type(info.serverInfo) == "table" and info.serverInfo or {}
  local lines = {
    ("agentd %s (agentd.nvim %s)"):format(tostring(server.version or "?"), client.VERSION),
  }
  local d = info.daemon
  if type(d) ~= "table" then
    lines[#lines + 1] = "daemon: not said (an agentd from before shared daemons)"
    return lines
  end
  if d.shared then
    local n = tonumber(d.connections) or 1
    lines[#lines + 1] = ("daemon: shared, pid %s, %d editor%s connected when this Neovim joined"):format(
      tostring(d.pid),
      n,
      n == 1 and "" or "s"
    )
  else
    lines[#lines + 1] = ("daemon: this Neovim's own (not shared), pid %s"):format(tostring(d.pid))
  end
  if d.onDisconnect == "continue" then
    lines[#lines + 1] = "answers go on when Neovim quits or restarts (reopen the session to see them)"
  else
    lines[#lines + 1] = "answers stop when Neovim quits"
  end
  return lines
end

--- :AgentdInfo: the daemon serving this Neovim (started if it is not running) and the
--- current session. cb(lines) once shown.
function M.info(cb)
  M._install()
  client.ensure(function(err)
    local lines = M.describe_daemon(not err and client.info or nil)
    if err then
      lines[#lines + 1] = "error: " .. util.err_text(err)
    end
    local s = chat.state.session
    if s then
      local title = type(s.title) == "string" and s.title ~= "" and s.title or "(untitled)"
      lines[#lines + 1] = ("session: %s (%s), %s"):format(title, s.id, chat.status())
    end
    util.notify(table.concat(lines, "\n"), vim.log.levels.INFO)
    if cb then
      cb(lines)
    end
  end)
end

--- Stop the daemon (it starts again on next use).
function M.stop()
  return client.stop({ sync = true })
end

--- For the statusline: "idle", "busy", "retrying", "starting" or "off"
--- ("off": the daemon is not running).
function M.status()
  return chat.status()
end

--- The current session (a table as agentd sends it) or nil.
function M.session()
  return chat.state.session
end

M.log = util.log_text

return M
