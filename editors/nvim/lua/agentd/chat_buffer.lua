-- The chat buffer: draws a ChatState (chat_state.lua) as the changes it reports come
-- in. Each message is a header region, a region per part that has lines and, once the
-- answer ended, a footer; streamed text is appended and a tool line rewritten in place
-- (render.lua keeps the regions). Errors are shown here too: in the buffer and with
-- vim.notify, once each.
local api = vim.api
local chat_state = require("agentd.chat_state")
local config = require("agentd.config")
local render = require("agentd.render")
local util = require("agentd.util")

local M = {}

M.REASONING_PREFIX = "┆ "
local TOOL_STATE = {
  pending = "pending",
  running = "running",
  completed = "done",
  error = "failed",
}

M.buf = nil
M.view = nil
M.placeholder = nil
-- message id -> { header, tail (its last part's region), footer, first (no blank line
-- above: the first region of the buffer) }
local shown = {}
-- part id -> its region, or false for a part without lines (step-start...)
local part_regions = {}
-- part id -> bytes of its text the region shows (deltas only ever append)
local text_len = {}
local reported = {} -- "runId|name|message" of errors already notified (in any session)
local error_notices = {} -- same key -> the notice region shown for a session/error

local function forget_regions()
  shown, part_regions, text_len, error_notices = {}, {}, {}, {}
  M.placeholder = nil
end

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
  forget_regions()
  M.show_placeholder()
  return buf
end

function M.is_valid()
  return M.buf ~= nil and api.nvim_buf_is_valid(M.buf)
end

--- Empty the buffer (a session opened, or a new chat).
function M.reset()
  M.get_buf()
  M.view:clear()
  forget_regions()
end

--- What an empty chat shows: `title` (default "(new chat)") and the keys.
function M.show_placeholder(title)
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
    "  " .. (title or "(new chat)"),
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

function M.notice(lines, kind)
  M.get_buf()
  drop_placeholder()
  if type(lines) == "string" then
    lines = util.split_lines(lines)
  end
  return M.view:insert(nil, lines, { kind = kind or "notice" })
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
local function sandbox_label(sb)
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

local function tool_line(part)
  local st = part.state or {}
  local status = TOOL_STATE[st.status] or tostring(st.status or "pending")
  local tool = tostring(part.tool or "tool")
  local label = sandbox_label(st.sandbox)
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

-- A file size as people read it: "300 B", "1.2 kB", "3.4 MB".
function M.size_text(n)
  n = tonumber(n) or 0
  if n < 1000 then
    return ("%d B"):format(n)
  elseif n < 1e6 then
    return ("%.1f kB"):format(n / 1e3)
  end
  return ("%.1f MB"):format(n / 1e6)
end

-- An instruction file's path as short as it stays clear: relative to the session's
-- workspace when inside it, else with ~ for the home directory.
local function instruction_path(path, root)
  path = tostring(path)
  if type(root) == "string" and root ~= "" then
    local prefix = root:sub(-1) == "/" and root or (root .. "/")
    if path:sub(1, #prefix) == prefix then
      return path:sub(#prefix + 1)
    end
  end
  local home = vim.env.HOME
  if type(home) == "string" and home ~= "" and home ~= "/" then
    local prefix = home:sub(-1) == "/" and home or (home .. "/")
    if path:sub(1, #prefix) == prefix then
      return "~/" .. path:sub(#prefix + 1)
    end
  end
  return path
end

--- The one line naming the instruction files a run sent the model (the message's
--- `instructions`), or nil: "  § instructions: AGENTS.md (1.2 kB), ~/.config/agentd/AGENTS.md (300 B)".
function M.instructions_line(msg, root)
  local list = msg.instructions
  if type(list) ~= "table" or #list == 0 then
    return nil
  end
  local names = {}
  for _, f in ipairs(list) do
    if type(f) == "table" and f.path then
      local size = M.size_text(f.size)
      if tonumber(f.sent) and tonumber(f.size) and f.sent < f.size then
        size = size .. ", " .. M.size_text(f.sent) .. " sent"
      end
      names[#names + 1] = ("%s (%s)"):format(instruction_path(f.path, root), size)
    end
  end
  if #names == 0 then
    return nil
  end
  return "  § instructions: " .. table.concat(names, ", ")
end

local function header_lines(msg, first, root)
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
  local lines = first and { title } or { "", title }
  local instructions = M.instructions_line(msg, root)
  if instructions then
    lines[#lines + 1] = instructions
  end
  return lines
end

--- The id of the message whose lines hold row `row` (1-based) of the chat buffer: the
--- last message whose header starts at or above it. nil above the first message.
function M.message_at(row)
  if not M.view or not M.view:valid() then
    return nil
  end
  local best, best_row = nil, -1
  for id, s in pairs(shown) do
    local r = M.view:row(s.header)
    if r < row and r > best_row then
      best, best_row = id, r
    end
  end
  return best
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

local function error_text(e)
  return tostring(e.name or "Error") .. ": " .. tostring(e.message or "")
end

local function footer_lines(msg)
  local lines = {}
  if type(msg.error) == "table" then
    local first = util.split_lines(tostring(msg.error.message or ""))
    lines[#lines + 1] = "✗ " .. tostring(msg.error.name or "Error") .. ": " .. (first[1] or "")
    for i = 2, #first do
      lines[#lines + 1] = "  " .. first[i]
    end
  end
  lines[#lines + 1] = usage_line(msg)
  return lines
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
    return { tool_line(part) }, ""
  elseif t == "file" then
    return { "  [file] " .. tostring(part.path or "") }, ""
  elseif t == "compaction" then
    return { "  ─ earlier conversation summarized ─" }, ""
  end
  return nil
end

---------------------------------------------------------------------------
-- Errors

local function error_key(run_id, e)
  return tostring(run_id) .. "|" .. tostring(e.name) .. "|" .. tostring(e.message)
end

-- session/error: shown as a notice, unless its message already showed it.
local function show_session_error(run_id, e)
  local key = error_key(run_id, e)
  if reported[key] then
    return
  end
  reported[key] = true
  error_notices[key] = M.notice("✗ " .. error_text(e), "error")
  util.notify("agentd: " .. error_text(e), vim.log.levels.ERROR)
end

-- An ended message's error: its footer shows it, so a notice made for the same error
-- goes; notified once, and not at all when it comes with the history.
local function report_message_error(info, replaying)
  local e = info.error
  local key = error_key(info.runId, e)
  if error_notices[key] then
    M.view:remove(error_notices[key])
    error_notices[key] = nil
  end
  if not reported[key] and not replaying then
    reported[key] = true
    util.notify(("agentd: %s"):format(error_text(e)), vim.log.levels.ERROR)
  end
end

---------------------------------------------------------------------------
-- Drawing the state's changes

local function workspace_of(state)
  return state.session and state.session.workspaceRoot or nil
end

-- The message's header, made at the end of the buffer when it is new: messages show
-- in arrival order.
local function ensure_message(state, id)
  local s = shown[id]
  if s then
    return s
  end
  drop_placeholder()
  local first = #M.view.regions == 0
  s = { first = first }
  s.header = M.view:insert(nil, header_lines(state.messages[id].info, first, workspace_of(state)), { kind = "header" })
  shown[id] = s
  return s
end

local function draw_message(state, id, replaying)
  local info = state.messages[id].info
  local s = ensure_message(state, id)
  -- The model or time may come with a later update (a no-op when unchanged).
  M.view:replace(s.header, header_lines(info, s.first, workspace_of(state)))
  if not chat_state.is_done(info) then
    return
  end
  if type(info.error) == "table" then
    report_message_error(info, replaying)
  end
  local lines = footer_lines(info)
  if s.footer then
    M.view:replace(s.footer, lines)
  else
    s.footer = M.view:insert(s.tail or s.header, lines, { kind = "footer" })
  end
end

-- A part's region, made after its message's last part when the part is new here.
local function ensure_part(state, id)
  local r = part_regions[id]
  if r ~= nil then
    return r
  end
  local part = state:part(id)
  local s = ensure_message(state, state.where[id].message_id)
  local lines, prefix = part_lines(part)
  r = false
  if lines then
    r = M.view:insert(s.tail or s.header, lines, { prefix = prefix, kind = part.type })
    s.tail = r
  end
  part_regions[id] = r
  text_len[id] = #(part.text or "")
  return r
end

local function draw_part(state, change)
  if change.created or part_regions[change.id] == nil then
    ensure_part(state, change.id)
    return
  end
  local r = part_regions[change.id]
  if not r then
    return
  end
  local part, old = state:part(change.id), change.old
  if (part.type == "text" or part.type == "reasoning") and old.text ~= part.text then
    local ot, nt = old.text or "", part.text or ""
    if #nt > #ot and nt:sub(1, #ot) == ot then
      M.view:append(r, nt:sub(#ot + 1))
    else
      M.view:replace(r, (part_lines(part)))
    end
    text_len[change.id] = #nt
  elseif part.type == "tool" then
    M.view:replace(r, { tool_line(part) })
  end
end

local function draw_delta(state, change)
  if change.field ~= "text" then
    return
  end
  local r = ensure_part(state, change.id)
  local text = state:part(change.id).text
  -- A region made for this very delta shows it already.
  if r and text_len[change.id] < #text then
    M.view:append(r, text:sub(text_len[change.id] + 1))
    text_len[change.id] = #text
  end
end

--- Show what `changes` (from the state's apply or apply_full) changed in `state`.
--- opts.replaying: the history of a session (its errors are shown, not notified).
function M.draw(state, changes, opts)
  local replaying = opts and opts.replaying
  for _, c in ipairs(changes) do
    if c.kind ~= "status" and c.kind ~= "session" then
      M.get_buf()
    end
    if c.kind == "message" then
      draw_message(state, c.id, replaying)
    elseif c.kind == "part" then
      draw_part(state, c)
    elseif c.kind == "delta" then
      draw_delta(state, c)
    elseif c.kind == "error" then
      show_session_error(c.run_id, c.error)
    end
  end
end

return M
