-- The current session: its messages, rendered into the chat buffer as the
-- daemon's notifications arrive, and the requests that drive it.
local api = vim.api
local client = require("agentd.client")
local config = require("agentd.config")
local render = require("agentd.render")
local util = require("agentd.util")

local M = {}

M.REASONING_PREFIX = "┆ "
M.TOOL_STATE = {
  pending = "pending",
  running = "running",
  completed = "done",
  error = "failed",
}

M.session = nil -- the current Session object (nil: a new chat, created on first send)
M.statuses = {} -- sessionId -> {status, attempt, nextRetryAt, message}
M.view = nil
M.buf = nil
local messages = {} -- id -> { msg, header, tail, footer, parts = {id -> true} }
local parts = {} -- id -> { part, msg_id, region }
local order = {} -- message ids in display order
local creating = nil -- callbacks waiting for session/create
local reported = {} -- "runId|name|message" of errors already notified
local error_notices = {} -- same key -> notice region shown for a session/error
local inflight = {} -- sessionId -> number of our session/chat requests not answered yet

---------------------------------------------------------------------------
-- The buffer

function M.get_buf()
  if M.buf and api.nvim_buf_is_valid(M.buf) then
    return M.buf
  end
  local buf = api.nvim_create_buf(false, true)
  pcall(api.nvim_buf_set_name, buf, "agentd://chat")
  local bo = vim.bo[buf]
  bo.buftype = "nofile"
  bo.bufhidden = "hide"
  bo.swapfile = false
  bo.undolevels = -1
  bo.modifiable = false
  bo.filetype = "agentd"
  M.buf = buf
  M.view = render.new(buf)
  messages, parts, order = {}, {}, {}
  M.show_placeholder()
  return buf
end

function M.show_placeholder()
  local view = M.view
  if not view or #view.regions > 0 then
    return
  end
  local keys = config.get().keymaps
  local function hint(items)
    local out = {}
    for _, kv in ipairs(items) do
      if kv[1] then
        out[#out + 1] = kv[1] .. " " .. kv[2]
      end
    end
    return "  " .. table.concat(out, " · ")
  end
  M.placeholder = view:insert(nil, {
    "  (new chat)",
    hint({ { keys.send, "send" }, { keys.abort, "abort" } }),
    hint({ { keys.close, "close" }, { keys.sessions, "sessions" }, { keys.new, "new" } }),
  }, { kind = "placeholder" })
  for i = 0, 2 do
    pcall(api.nvim_buf_set_extmark, M.buf, render.ns_hl, i, 0, { line_hl_group = "Comment" })
  end
end

local function drop_placeholder()
  if M.placeholder then
    local p = M.placeholder
    M.placeholder = nil
    api.nvim_buf_clear_namespace(M.buf, render.ns_hl, 0, -1)
    M.view:remove(p)
  end
end

local function reset_view()
  M.get_buf()
  M.view:clear()
  messages, parts, order = {}, {}, {}
  error_notices = {}
  M.placeholder = nil
end

---------------------------------------------------------------------------
-- Formatting

local function input_summary(input)
  if type(input) ~= "table" then
    return input and tostring(input) or ""
  end
  for _, k in ipairs({ "command", "path", "pattern", "file", "query", "url", "name" }) do
    if type(input[k]) == "string" and input[k] ~= "" then
      return input[k]
    end
  end
  if next(input) == nil then
    return ""
  end
  local ok, s = pcall(vim.json.encode, input)
  return ok and s or ""
end

-- A command's sandbox in a few words (the `sandbox` agentd puts on its tool state):
-- "workspace-write", "read-only, network", "full access", "unconfined: no sandbox".
function M.sandbox_label(sb)
  if type(sb) ~= "table" or type(sb.mode) ~= "string" then
    return nil
  end
  if type(sb.fallback) == "string" then
    return "unconfined: no sandbox"
  end
  local bits = { sb.mode == "full-access" and "full access" or sb.mode }
  if sb.mode ~= "full-access" and sb.network == true then
    bits[#bits + 1] = "network"
  end
  if type(sb.rerunOf) == "string" then
    bits[#bits + 1] = "rerun"
  elseif type(sb.blocked) == "string" then
    bits[#bits + 1] = "blocked"
  end
  return table.concat(bits, ", ")
end

function M.tool_line(part)
  local st = part.state or {}
  local status = M.TOOL_STATE[st.status] or tostring(st.status or "pending")
  local tool = tostring(part.tool or "tool")
  local label = M.sandbox_label(st.sandbox)
  local summary = st.title
  local meta = type(st.metadata) == "table" and st.metadata or {}
  if type(meta.mcpServer) == "string" then
    summary = "" -- an MCP tool: its title is "<server>: <tool> <arguments>"; the name says the first two
  elseif type(summary) == "string" and summary:sub(1, #tool + 1) == tool .. " " then
    summary = summary:sub(#tool + 2) -- agentd's default titles start with the tool's name
  end
  if type(summary) ~= "string" or summary == "" or summary == tool then
    summary = input_summary(st.input)
  end
  -- Keep the line about as wide as the panel (it is rewritten in place).
  local width = 60
  local win = M.buf and vim.fn.bufwinid(M.buf) or -1
  if win ~= -1 then
    width = math.max(40, api.nvim_win_get_width(win))
  end
  local line = "  ⚙ " .. tool
  if label then
    line = line .. " (" .. label .. ")"
  end
  if summary ~= "" then
    line = line .. ": " .. util.shorten(summary, math.max(24, width - #tool - 14))
  end
  if st.status == "error" then
    return line .. " [failed: " .. util.shorten(tostring(st.error or "error"), math.max(20, width - 10)) .. "]"
  end
  local p = st.status == "running" and type(meta.progress) == "table" and meta.progress or nil
  if p and type(p.progress) == "number" then
    -- An MCP server's progress for the call: "3/5", or the count alone.
    local done = ("%g"):format(p.progress)
    status = status .. " " .. (type(p.total) == "number" and (done .. "/" .. ("%g"):format(p.total)) or done)
  end
  return line .. " [" .. status .. "]"
end

local function header_lines(msg, first)
  local title
  if msg.role == "user" then
    title = "▍ You"
  else
    title = "▍ Assistant"
    if type(msg.model) == "string" and msg.model ~= "" then
      title = title .. " · " .. msg.model
    end
  end
  local t = msg.time and msg.time.created
  if type(t) == "number" then
    title = title .. " · " .. os.date("%H:%M", math.floor(t / 1000))
  end
  if first then
    return { title }
  end
  return { "", title }
end

local function usage_line(msg)
  local u = msg.usage or {}
  local bits = {}
  if (tonumber(u.inputTokens) or 0) > 0 or (tonumber(u.outputTokens) or 0) > 0 then
    bits[#bits + 1] = util.short_num(u.inputTokens) .. " in"
    local out = util.short_num(u.outputTokens) .. " out"
    if (tonumber(u.reasoningTokens) or 0) > 0 then
      out = out .. " (" .. util.short_num(u.reasoningTokens) .. " reasoning)"
    end
    bits[#bits + 1] = out
    if (tonumber(u.cacheReadTokens) or 0) > 0 then
      bits[#bits + 1] = util.short_num(u.cacheReadTokens) .. " cached"
    end
  end
  local c = util.cost(msg.cost)
  if c and (#bits > 0 or (tonumber(msg.cost) or 0) > 0) then
    bits[#bits + 1] = c
  end
  local t = msg.time or {}
  if type(t.created) == "number" and type(t.completed) == "number" then
    bits[#bits + 1] = ("%.1fs"):format((t.completed - t.created) / 1000)
  end
  local fr = msg.finishReason
  if fr and fr ~= "stop" then
    local names = {
      ["tool-calls"] = "step limit reached",
      length = "cut: output limit",
      ["content-filter"] = "content filtered",
    }
    bits[#bits + 1] = names[fr] or fr
  end
  return "  └ " .. table.concat(bits, " · ")
end

local function footer_lines(msg)
  local lines = {}
  if type(msg.error) == "table" then
    local e = msg.error
    local text = tostring(e.message or "")
    local first = util.split_lines(text)
    local head = "✗ " .. tostring(e.name or "Error") .. ": " .. (first[1] or "")
    lines[#lines + 1] = head
    for i = 2, #first do
      lines[#lines + 1] = "  " .. first[i]
    end
  end
  lines[#lines + 1] = usage_line(msg)
  return lines
end

local function is_done(msg)
  return msg.role == "assistant" and type(msg.time) == "table" and msg.time.completed ~= nil
end

---------------------------------------------------------------------------
-- Applying notifications

local function last_region_before_footer(entry)
  return entry.tail or entry.header
end

local function ensure_message(msg)
  local entry = messages[msg.id]
  if entry then
    return entry, false
  end
  drop_placeholder()
  local first = #M.view.regions == 0
  entry = { msg = msg, first = first }
  -- Messages are displayed in arrival order, at the end of the buffer.
  entry.header = M.view:insert(nil, header_lines(msg, first), { kind = "header" })
  messages[msg.id] = entry
  order[#order + 1] = msg.id
  return entry, true
end

function M.apply_message(msg)
  if type(msg) ~= "table" or not msg.id then
    return
  end
  M.get_buf()
  local entry = ensure_message(msg)
  local keep_parts = entry.msg.parts
  entry.msg = vim.tbl_extend("force", entry.msg, msg)
  if msg.parts == nil then
    entry.msg.parts = keep_parts
  end
  -- The model or time may come with a later update (a no-op when unchanged).
  M.view:replace(entry.header, header_lines(entry.msg, entry.first))
  if is_done(entry.msg) then
    local e = entry.msg.error
    if type(e) == "table" then
      local key = tostring(entry.msg.runId) .. "|" .. tostring(e.name) .. "|" .. tostring(e.message)
      -- The footer shows it: drop a notice made for the same error by session/error.
      if error_notices[key] then
        M.view:remove(error_notices[key])
        error_notices[key] = nil
      end
      if not reported[key] and not M.replaying then
        reported[key] = true
        util.notify(("agentd: %s: %s"):format(tostring(e.name or "Error"), tostring(e.message or "")), vim.log.levels.ERROR)
      end
    end
    local lines = footer_lines(entry.msg)
    if entry.footer then
      M.view:replace(entry.footer, lines)
    else
      entry.footer = M.view:insert(last_region_before_footer(entry), lines, { kind = "footer" })
    end
  end
end

local function part_lines(part)
  local t = part.type
  if t == "text" then
    return util.split_lines(part.text or ""), ""
  elseif t == "reasoning" then
    local lines = { M.REASONING_PREFIX .. "reasoning" }
    for _, l in ipairs(util.split_lines(part.text or "")) do
      lines[#lines + 1] = M.REASONING_PREFIX .. l
    end
    return lines, M.REASONING_PREFIX
  elseif t == "tool" then
    return { M.tool_line(part) }, ""
  elseif t == "file" then
    return { "  [file] " .. tostring(part.path or "") }, ""
  elseif t == "compaction" then
    return { "  ─ earlier conversation summarized ─" }, ""
  end
  return nil
end

function M.apply_part(message_id, part)
  if type(part) ~= "table" or not part.id then
    return
  end
  M.get_buf()
  local p = parts[part.id]
  if p then
    local old = p.part
    p.part = part
    if not p.region then
      return
    end
    if (part.type == "text" or part.type == "reasoning") and old.text ~= part.text then
      local ot, nt = old.text or "", part.text or ""
      if #nt > #ot and nt:sub(1, #ot) == ot then
        M.view:append(p.region, nt:sub(#ot + 1))
      else
        M.view:replace(p.region, (part_lines(part)))
      end
    elseif part.type == "tool" then
      M.view:replace(p.region, { M.tool_line(part) })
    end
    return
  end
  local entry = messages[message_id]
  if not entry then
    entry = ensure_message({ id = message_id, role = "assistant" })
  end
  local lines, prefix = part_lines(part)
  local region = nil
  if lines then
    region = M.view:insert(last_region_before_footer(entry), lines, { prefix = prefix, kind = part.type })
    entry.tail = region
  end
  parts[part.id] = { part = part, msg_id = message_id, region = region }
end

function M.apply_delta(params)
  local p = parts[params.partId]
  if not p then
    -- A delta before its part/updated: make the part.
    M.apply_part(params.messageId, { id = params.partId, type = "text", text = "" })
    p = parts[params.partId]
  end
  local field = params.field or "text"
  local delta = params.delta or ""
  if field ~= "text" then
    p.part[field] = (p.part[field] or "") .. delta
    return
  end
  p.part.text = (p.part.text or "") .. delta
  if p.region then
    M.view:append(p.region, delta)
  end
end

--- A whole message with its parts (history, or a session/chat answer).
function M.apply_full(msg)
  local body = vim.tbl_extend("force", {}, msg)
  body.parts = nil
  M.get_buf()
  local entry = ensure_message(body)
  entry.msg = vim.tbl_extend("force", entry.msg, body)
  for _, part in ipairs(msg.parts or {}) do
    M.apply_part(msg.id, part)
  end
  M.apply_message(body)
end

function M.notice(lines, kind)
  M.get_buf()
  drop_placeholder()
  if type(lines) == "string" then
    lines = util.split_lines(lines)
  end
  return M.view:insert(nil, lines, { kind = kind or "notice" })
end

---------------------------------------------------------------------------
-- Status

function M.current_id()
  return M.session and M.session.id or nil
end

local status_listeners = {}
function M.on_status(fn)
  status_listeners[#status_listeners + 1] = fn
end

function M.status_changed()
  for _, fn in ipairs(status_listeners) do
    pcall(fn)
  end
  pcall(api.nvim_exec_autocmds, "User", { pattern = "AgentdStatus", modeline = false })
  pcall(vim.cmd, "redrawstatus!")
end

function M.set_status(session_id, st)
  M.statuses[session_id] = st
  if session_id == M.current_id() then
    if M.session then
      M.session.status = st.status
    end
    M.status_changed()
  end
end

--- "idle" | "busy" | "retrying" | "starting" | "off"
function M.status()
  local id = M.current_id()
  local st = id and M.statuses[id]
  if st then
    if st.status == "busy" then
      return "busy"
    elseif st.status == "retry" then
      return "retrying"
    end
  end
  if client.state == "starting" then
    return "starting"
  elseif client.state ~= "ready" then
    return "off"
  end
  return "idle"
end

function M.status_detail()
  local id = M.current_id()
  return id and M.statuses[id] or nil
end

---------------------------------------------------------------------------
-- Notifications from the daemon

function M.on_notification(method, params)
  local sid = params.sessionId or (params.session and params.session.id)
  local current = sid ~= nil and sid == M.current_id()
  if method == "session/status" then
    M.set_status(sid, {
      status = params.status,
      attempt = params.attempt,
      nextRetryAt = params.nextRetryAt,
      message = params.message,
      runId = params.runId,
    })
  elseif method == "session/updated" then
    local s = params.session
    if s and current then
      M.session = vim.tbl_extend("force", M.session, s)
      M.status_changed()
    end
    require("agentd.sessions").on_updated(s)
  elseif not current then
    return
  elseif method == "message/updated" then
    M.apply_message(params.message)
  elseif method == "part/updated" then
    M.apply_part(params.messageId, params.part)
  elseif method == "part/delta" then
    M.apply_delta(params)
  elseif method == "session/error" then
    local e = params.error or {}
    local key = tostring(params.runId) .. "|" .. tostring(e.name) .. "|" .. tostring(e.message)
    if reported[key] then
      return -- already shown with its message
    end
    reported[key] = true
    local text = tostring(e.name or "Error") .. ": " .. tostring(e.message or "")
    error_notices[key] = M.notice("✗ " .. text, "error")
    util.notify("agentd: " .. text, vim.log.levels.ERROR)
  end
end

function M.on_exit(_, _, expected)
  for id, st in pairs(M.statuses) do
    if st.status ~= "idle" then
      M.statuses[id] = { status = "idle" }
    end
  end
  if not expected and M.buf and api.nvim_buf_is_valid(M.buf) then
    M.notice("✗ agentd stopped; it restarts with the next prompt.", "error")
  end
  M.status_changed()
end

---------------------------------------------------------------------------
-- Requests

local function with_session(cb)
  if M.session then
    return cb(nil, M.session)
  end
  if creating then
    table.insert(creating, cb)
    return
  end
  creating = { cb }
  local o = config.get()
  local params = { workspaceRoot = client.workspace_root() }
  if o.model then
    params.model = o.model
  end
  client.request("session/create", params, function(err, res)
    local cbs = creating
    creating = nil
    if not err and res and res.session then
      M.session = res.session
      M.statuses[res.session.id] = { status = res.session.status or "idle" }
      M.status_changed()
    end
    for _, c in ipairs(cbs) do
      c(err, M.session)
    end
  end)
end

local function chat_error(err)
  local code = err.code
  if code == -32800 then
    return -- cancelled: the aborted message is already shown
  end
  if code == -32099 and client.state == "off" then
    return -- the daemon is gone: on_exit says so
  end
  local text
  if code == 1002 then
    text = "The session is busy (another turn runs). <C-c> aborts it."
  elseif code == 1003 then
    text = tostring(err.message or "no model configured")
    if not text:lower():find("model") then
      text = "no model configured or model unknown: " .. text
    end
    text = text .. ' (the plugin\'s `model` option sets AGENTD_MODEL)'
  elseif code == 1001 then
    text = "Session not found (deleted?). :AgentdNew starts a new one."
  else
    text = util.err_text(err)
  end
  M.notice("✗ " .. text, "error")
  if code ~= -32099 then
    util.notify("agentd: " .. text, vim.log.levels.ERROR)
  end
end

--- Send a prompt. context: optional list of extra text parts.
function M.send(text, context)
  if (text == nil or text:match("^%s*$")) and not context then
    return
  end
  M.get_buf()
  with_session(function(err, session)
    if err or not session then
      local t = "could not create a session: " .. util.err_text(err)
      M.notice("✗ " .. t, "error")
      if not (err and err.code == -32099) then -- (daemon failures are notified already)
        util.notify("agentd: " .. t, vim.log.levels.ERROR)
      end
      return
    end
    local o = config.get()
    local input = {}
    if text and text ~= "" then
      input[#input + 1] = { type = "text", text = text }
    end
    for _, c in ipairs(context or {}) do
      input[#input + 1] = { type = "text", text = c }
    end
    local params = {
      sessionId = session.id,
      parts = input,
      onBusy = o.on_busy,
      clientTools = require("agentd.tools").definitions(),
      tools = o.tools,
      system = o.system,
      maxSteps = o.max_steps,
    }
    if #params.clientTools == 0 then
      params.clientTools = nil
    end
    local sid = session.id
    local st = M.statuses[sid]
    if (inflight[sid] or 0) > 0 and st and st.status ~= "idle" and o.on_busy == "queue" then
      util.notify("agentd: queued; it runs when the current answer ends.", vim.log.levels.INFO)
    end
    inflight[sid] = (inflight[sid] or 0) + 1
    client.request("session/chat", params, function(e, res)
      inflight[sid] = math.max(0, (inflight[sid] or 1) - 1)
      if e then
        if sid == M.current_id() then
          chat_error(e)
        end
        return
      end
      if res then
        if res.message and sid == M.current_id() then
          -- Reconcile with the authoritative answer (a no-op when every
          -- notification arrived).
          M.apply_full(res.message)
        end
      end
    end)
  end)
end

function M.abort(cb)
  local id = M.current_id()
  if not id then
    util.notify("agentd: nothing to abort", vim.log.levels.INFO)
    return cb and cb(nil, { aborted = false })
  end
  client.request("session/abort", { sessionId = id }, function(err, res)
    if err then
      util.notify("agentd: abort failed: " .. util.err_text(err), vim.log.levels.ERROR)
    elseif res and res.aborted == false then
      util.notify("agentd: nothing is running", vim.log.levels.INFO)
    end
    if cb then
      cb(err, res)
    end
  end)
end

--- Make `session` current and show its history.
function M.load(session, cb)
  M.session = session
  M.statuses[session.id] = M.statuses[session.id] or { status = session.status or "idle" }
  reset_view()
  M.status_changed()
  local limit = config.get().history_limit
  local pages = {}
  local total = 0
  local function fetch(before)
    local params = { sessionId = session.id, limit = math.min(100, limit) }
    params.before = before
    client.request("session/messages", params, function(err, res)
      if session ~= M.session then
        return
      end
      if err then
        M.notice("✗ could not load the session: " .. util.err_text(err), "error")
        return cb and cb(err)
      end
      local msgs = res and res.messages or {}
      table.insert(pages, 1, msgs)
      total = total + #msgs
      if res.nextBefore and total < limit and #msgs > 0 then
        return fetch(res.nextBefore)
      end
      if res.nextBefore then
        M.notice({ "  (older messages not shown)" }, "notice")
      end
      M.replaying = true -- (old errors are shown, not notified)
      for _, page in ipairs(pages) do
        for _, msg in ipairs(page) do
          pcall(M.apply_full, msg)
        end
      end
      M.replaying = false
      if #order == 0 then
        M.show_placeholder()
      end
      if cb then
        cb(nil)
      end
    end)
  end
  fetch(nil)
end

--- Start a new chat (the session is created with the first prompt).
function M.new()
  M.session = nil
  reset_view()
  M.show_placeholder()
  M.status_changed()
end

function M.forget(session_id)
  if M.current_id() == session_id then
    M.new()
  end
  M.statuses[session_id] = nil
end

--- Test and debugging helpers.
function M._state()
  return { messages = messages, parts = parts, order = order }
end

return M
