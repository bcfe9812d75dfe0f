-- The current session's conversation as data: agentd's notifications and answers go
-- in, the state comes out, with a list of what changed for the renderer
-- (chat_buffer.lua). The contract says applying the notifications in order reproduces
-- exactly the message of the session/chat answer; tests/chat_state_spec.lua checks it
-- on recorded notifications.
--
-- Pure Lua 5.1: no `vim`, no requests, no buffer, so it runs (and is tested) under
-- plain LuaJIT, Lua 5.1 or `nvim -l`. A method changes the state it is called on and
-- nothing else: the tables it is given (notification params, answers, sessions) are
-- never written to (parts, which deltas append to, are copied before they are kept;
-- an updated session or message is a new table), and a snapshot is a copy, so a
-- delta never reaches a table the caller holds. The VS Code extension's
-- shared/chatState.ts is its twin, with two differences the buffer needs: messages
-- keep their arrival order (the buffer only appends), and a message/updated is merged
-- into what is known of the message.
--
-- Changes (what `apply` and `apply_full` return, in order):
--   { kind = "message", id, created }             a message's fields changed
--   { kind = "part", id, message_id, created, old } a part was added or replaced (old: the
--                                                    part it replaced, as it was)
--   { kind = "delta", id, message_id, field, delta } text appended to a part's field
--   { kind = "status", session_id, current }      a session's status changed
--   { kind = "session" }                           the current session's fields changed
--   { kind = "error", error, run_id }              session/error for the current session
local M = {}

local State = {}
State.__index = State

function M.new()
  return setmetatable({
    session = nil, -- the current Session (nil: a new chat, created on first send)
    statuses = {}, -- sessionId -> { status, attempt, nextRetryAt, message, runId }
    messages = {}, -- message id -> { info = the Message without parts, parts = { Part... } }
    order = {}, -- message ids in arrival order
    where = {}, -- part id -> { message_id, index } (parts are replaced in place, never removed)
  }, State)
end

-- A shallow copy of `base` with the fields of `over` on top (vim.tbl_extend("force")),
-- without `parts`: a message's parts live in the state's own list.
local function merged(base, over)
  local out = {}
  for k, v in pairs(base or {}) do
    out[k] = v
  end
  for k, v in pairs(over or {}) do
    out[k] = v
  end
  out.parts = nil
  return out
end

-- A part as the state keeps it: a shallow copy, since deltas append to its fields
-- (the nested tables, a tool's state, are only ever replaced whole).
local function own(part)
  local out = {}
  for k, v in pairs(part) do
    out[k] = v
  end
  return out
end

function State:current_id()
  return self.session and self.session.id or nil
end

--- An assistant message that has ended (it gets its usage footer).
function M.is_done(info)
  return info.role == "assistant" and type(info.time) == "table" and info.time.completed ~= nil
end

function State:part(id)
  local w = self.where[id]
  return w and self.messages[w.message_id].parts[w.index] or nil
end

--- A message as the daemon sends it in full: its fields plus `parts` (a copy: later
--- deltas do not change it).
function State:snapshot(id)
  local m = self.messages[id]
  if not m then
    return nil
  end
  local out = merged(m.info)
  out.parts = {}
  for i, p in ipairs(m.parts) do
    out.parts[i] = own(p)
  end
  return out
end

---------------------------------------------------------------------------
-- What the requests do to the state

local function clear_messages(self)
  self.messages, self.order, self.where = {}, {}, {}
end

--- Make `session` current (nil: a new chat) with no messages yet: the history of a
--- session being opened comes next, through apply_full.
function State:open(session)
  self.session = session
  clear_messages(self)
  if session then
    self.statuses[session.id] = self.statuses[session.id] or { status = session.status or "idle" }
  end
end

--- The session session/create made for the first prompt of a new chat.
function State:created(session)
  self.session = session
  self.statuses[session.id] = { status = session.status or "idle" }
end

--- New fields of the current session (session/updated, or session/update's answer).
--- Returns whether it was the current session.
function State:update_session(s)
  if type(s) ~= "table" or s.id == nil or s.id ~= self:current_id() then
    return false
  end
  self.session = merged(self.session, s)
  return true
end

function State:forget(session_id)
  self.statuses[session_id] = nil
end

--- The connection to the daemon ended. Its own agentd ended with it and nothing runs any
--- more; a shared daemon goes on with the runs (`on_disconnect = "continue"`), which this
--- Neovim hears of no more: every status is unknown until a session is listed or opened.
function State:daemon_exited()
  self.statuses = {}
end

---------------------------------------------------------------------------
-- Applying messages and parts

local function add_message(self, info)
  self.messages[info.id] = { info = info, parts = {} }
  self.order[#self.order + 1] = info.id
end

local function apply_message(self, msg)
  if type(msg) ~= "table" or msg.id == nil then
    return {}
  end
  local m = self.messages[msg.id]
  if m then
    m.info = merged(m.info, msg)
    return { { kind = "message", id = msg.id, created = false } }
  end
  add_message(self, merged(msg))
  return { { kind = "message", id = msg.id, created = true } }
end

local function apply_part(self, message_id, part)
  if type(part) ~= "table" or part.id == nil then
    return {}
  end
  local w = self.where[part.id]
  if w then
    -- Replaced where it is, in the message it first came with.
    local list = self.messages[w.message_id].parts
    local old = list[w.index]
    list[w.index] = own(part)
    return { { kind = "part", id = part.id, message_id = w.message_id, created = false, old = old } }
  end
  if message_id == nil then
    return {}
  end
  local changes = {}
  local m = self.messages[message_id]
  if not m then
    -- A part of a message not announced (should not happen): keep it anyway.
    add_message(self, { id = message_id, role = "assistant" })
    m = self.messages[message_id]
    changes[1] = { kind = "message", id = message_id, created = true }
  end
  m.parts[#m.parts + 1] = own(part)
  self.where[part.id] = { message_id = message_id, index = #m.parts }
  changes[#changes + 1] = { kind = "part", id = part.id, message_id = message_id, created = true }
  return changes
end

local function apply_delta(self, params)
  local id = params.partId
  if id == nil then
    return {}
  end
  local changes = {}
  if not self.where[id] then
    -- A delta before its part/updated: make the part.
    changes = apply_part(self, params.messageId, { id = id, type = "text", text = "" })
  end
  local part = self:part(id)
  if not part then
    return changes
  end
  local field = params.field or "text"
  local delta = params.delta or ""
  part[field] = (part[field] or "") .. delta
  changes[#changes + 1] = {
    kind = "delta",
    id = id,
    message_id = self.where[id].message_id,
    field = field,
    delta = delta,
  }
  return changes
end

--- A whole message with its parts: a session/chat answer (a no-op when every
--- notification arrived) or a message of the history.
function State:apply_full(msg)
  if type(msg) ~= "table" or msg.id == nil then
    return {}
  end
  local created = self.messages[msg.id] == nil
  apply_message(self, msg)
  local changes = {}
  for _, part in ipairs(msg.parts or {}) do
    for _, c in ipairs(apply_part(self, msg.id, part)) do
      changes[#changes + 1] = c
    end
  end
  -- One message change, after the parts: the renderer shows a message's header with
  -- its first part and its footer after the last.
  changes[#changes + 1] = { kind = "message", id = msg.id, created = created }
  return changes
end

--- Apply one notification. Only the current session's messages are kept; statuses are
--- kept for every session (the sessions list shows them).
function State:apply(method, params)
  if type(params) ~= "table" then
    return {}
  end
  local session = type(params.session) == "table" and params.session or nil
  local sid = params.sessionId
  if sid == nil and session then
    sid = session.id
  end
  local current = sid ~= nil and sid == self:current_id()
  if method == "session/status" then
    if sid == nil then
      return {}
    end
    local st = {
      status = params.status,
      attempt = params.attempt,
      nextRetryAt = params.nextRetryAt,
      message = params.message,
      runId = params.runId,
    }
    self.statuses[sid] = st
    if current then
      local updated = merged(self.session)
      updated.status = st.status
      self.session = updated
    end
    return { { kind = "status", session_id = sid, current = current } }
  elseif method == "session/updated" then
    -- Every connection hears session/updated (session/status only those that follow the
    -- session), with the status as it is when sent: a run that started or ended elsewhere,
    -- or while a session was being opened, is known from it. (A retry's details stay: the
    -- status it has in session/updated is the same.)
    local changes = {}
    if session and type(session.status) == "string" then
      local known = self.statuses[sid]
      if not known or known.status ~= session.status then
        self.statuses[sid] = { status = session.status }
        changes[#changes + 1] = { kind = "status", session_id = sid, current = current }
      end
    end
    if current and self:update_session(session) then
      changes[#changes + 1] = { kind = "session" }
    end
    return changes
  elseif not current then
    return {}
  elseif method == "message/updated" then
    return apply_message(self, params.message)
  elseif method == "part/updated" then
    return apply_part(self, params.messageId, params.part)
  elseif method == "part/delta" then
    return apply_delta(self, params)
  elseif method == "session/error" then
    return { { kind = "error", error = type(params.error) == "table" and params.error or {}, run_id = params.runId } }
  end
  return {}
end

return M
