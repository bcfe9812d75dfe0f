-- The current session: the requests that drive it (session/create, session/chat,
-- session/abort, session/messages) and the daemon's notifications, applied to the
-- conversation's state (chat_state.lua) and drawn into the chat buffer
-- (chat_buffer.lua).
local api = vim.api
local chat_buffer = require("agentd.chat_buffer")
local chat_state = require("agentd.chat_state")
local client = require("agentd.client")
local config = require("agentd.config")
local current_chat = require("agentd.current_chat")
local util = require("agentd.util")

local state = chat_state.new()
-- chat.session (the current Session, nil for a new chat) and chat.statuses (sessionId ->
-- status) read the state; they change through it only.
local M = setmetatable({ state = state }, {
  __index = function(_, k)
    if k == "session" or k == "statuses" then
      return state[k]
    end
  end,
  __newindex = function(t, k, v)
    if k == "session" or k == "statuses" then
      error("agentd.chat: " .. k .. " changes through chat.state", 2)
    end
    rawset(t, k, v)
  end,
})

local creating = nil -- callbacks waiting for session/create
local loading = 0 -- bumps with each load: the answers of an earlier one are dropped
-- The session being opened, while its history is fetched: { id, answered, queue }.
-- session/messages makes this Neovim follow the session when it answers, and the answer
-- holds everything streamed until then: what a run of it (this Neovim's, another editor's,
-- one that went on after a restart) streams before the newest page's answer is in that
-- page, and what comes after it is applied once the history is drawn.
local opening = nil
-- What a run streams into its session's messages (session/status and session/updated are
-- not: they are statuses, kept whatever the messages are).
local STREAMED = { ["message/updated"] = true, ["part/updated"] = true, ["part/delta"] = true, ["session/error"] = true }
local inflight = {} -- sessionId -> number of our session/chat requests not answered yet
-- Which chat this Neovim shows was chosen (a session opened, created, or a new chat):
-- the project's remembered chat is reopened only before that.
local chosen = false
-- The remembered chat being reopened: { waiting = callbacks of with_session }. A prompt
-- sent meanwhile goes to it once it is open, not to a session of its own.
local restoring = nil

---------------------------------------------------------------------------
-- Status

function M.current_id()
  return state:current_id()
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

--- "idle" | "busy" | "retrying" | "starting" | "off"
function M.status()
  local st = M.status_detail()
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
  local id = state:current_id()
  return id and state.statuses[id] or nil
end

---------------------------------------------------------------------------
-- The chat the project remembers (current_chat.lua)

-- The user switched chats (to session `id`, nil: a new chat): remembered for the project.
local function switched(id)
  chosen = true
  if config.get().remember_chat then
    current_chat.set(client.workspace_root(), id)
  end
end

-- The remembered chat is open, or will not be (`err`: agentd could not be reached, and
-- the prompts waiting for it fail as they would have without it).
local function restored(err)
  local r = restoring
  restoring = nil
  for _, cb in ipairs(r and r.waiting or {}) do
    cb(err)
  end
end

--- Reopen the chat the project remembers, as :AgentdSessions opening it would, unless
--- this Neovim has shown another already (or tried). A session that no longer exists is
--- forgotten, and the chat stays new. cb(opened: boolean) once known. Returns whether
--- agentd was asked (it is started for that).
function M.restore(cb)
  cb = cb or function() end
  if chosen or restoring or not config.get().remember_chat then
    cb(false)
    return false
  end
  chosen = true -- (once per Neovim, whatever comes of it)
  local root = client.workspace_root()
  local id = current_chat.get(root)
  if not id then
    cb(false)
    return false
  end
  local this = { waiting = {} }
  restoring = this
  chat_buffer.reset()
  chat_buffer.show_placeholder("(reopening this project's last chat…)")
  local function answered(err, res)
    if restoring ~= this then
      return cb(false) -- another chat was chosen meanwhile
    end
    if err or not (res and res.session) then
      if err and err.code == 1001 then
        current_chat.drop(root, id) -- deleted, or another data directory
      end
      util.log(("current chat: not reopened %s: %s"):format(id, util.err_text(err)))
      chat_buffer.reset()
      chat_buffer.show_placeholder()
      restored(err and err.code == -32099 and err or nil) -- (agentd failing is notified already)
      return cb(false)
    end
    -- Now, in the answer's callback: notifications of the session come after it and
    -- load's session/messages answer holds what they would have said.
    M.load(res.session, function()
      require("agentd.panel").scroll_to_end()
    end, { restoring = true })
    cb(true)
  end
  -- Asked on the next turn of the loop, so that a prompt given with the same command
  -- waits for the answer even when it comes at once (agentd cannot start: said once).
  vim.schedule(function()
    if restoring ~= this then
      return cb(false)
    end
    client.request("session/get", { sessionId = id }, answered)
  end)
  return true
end

---------------------------------------------------------------------------
-- Notifications from the daemon

function M.on_notification(method, params)
  if opening and STREAMED[method] and type(params) == "table" and params.sessionId == opening.id then
    if opening.answered then
      opening.queue[#opening.queue + 1] = { method, params }
    end
    return
  end
  local changes = state:apply(method, params)
  chat_buffer.draw(state, changes)
  for _, c in ipairs(changes) do
    if (c.kind == "status" and c.current) or c.kind == "session" then
      M.status_changed()
    end
  end
  if method == "session/updated" then
    require("agentd.sessions").on_updated(params.session)
  end
end

function M.on_exit(_, _, expected)
  state:daemon_exited()
  if not expected and chat_buffer.is_valid() then
    chat_buffer.notice("✗ agentd stopped; it restarts with the next prompt.", "error")
  end
  M.status_changed()
end

---------------------------------------------------------------------------
-- Requests

local function with_session(cb)
  if restoring then
    table.insert(restoring.waiting, function(err)
      if err then
        return cb(err, nil)
      end
      with_session(cb)
    end)
    return
  end
  if state.session then
    return cb(nil, state.session)
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
      state:created(res.session)
      switched(res.session.id)
      M.status_changed()
    end
    for _, c in ipairs(cbs) do
      c(err, state.session)
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
  chat_buffer.notice("✗ " .. text, "error")
  if code ~= -32099 then
    util.notify("agentd: " .. text, vim.log.levels.ERROR)
  end
end

--- Send a prompt. context: optional list of extra text parts.
function M.send(text, context)
  if (text == nil or text:match("^%s*$")) and not context then
    return
  end
  chat_buffer.get_buf()
  with_session(function(err, session)
    if err or not session then
      local t = "could not create a session: " .. util.err_text(err)
      chat_buffer.notice("✗ " .. t, "error")
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
    local st = state.statuses[sid]
    if (inflight[sid] or 0) > 0 and st and st.status ~= "idle" and o.on_busy == "queue" then
      util.notify("agentd: queued; it runs when the current answer ends.", vim.log.levels.INFO)
    end
    inflight[sid] = (inflight[sid] or 0) + 1
    local sent_during = loading
    client.request("session/chat", params, function(e, res)
      inflight[sid] = math.max(0, (inflight[sid] or 1) - 1)
      if e then
        if sid == M.current_id() then
          chat_error(e)
        end
        return
      end
      -- Reconcile with the authoritative answer (a no-op when every notification
      -- arrived). Not when the session was opened again since and its history does not
      -- hold the message (yet): drawn now, it would come before the history.
      local known = res and res.message and state.messages[res.message.id] ~= nil
      if res and res.message and sid == M.current_id() and (known or sent_during == loading) then
        chat_buffer.draw(state, state:apply_full(res.message))
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
function M.load(session, cb, opts)
  if not (opts and opts.restoring) then
    switched(session.id)
  end
  state:open(session)
  chat_buffer.reset()
  M.status_changed()
  loading = loading + 1
  local gen = loading
  local this = { id = session.id, answered = false, queue = {} }
  opening = this
  local function done()
    if opening == this then
      opening = nil
    end
  end
  local limit = config.get().history_limit
  local pages = {}
  local total = 0
  local function fetch(before)
    local params = { sessionId = session.id, limit = math.min(100, limit) }
    params.before = before
    client.request("session/messages", params, function(err, res)
      -- (Not the session table itself: a session/updated meanwhile replaces it.)
      if gen ~= loading or state:current_id() ~= session.id then
        return
      end
      if err then
        done()
        chat_buffer.notice("✗ could not load the session: " .. util.err_text(err), "error")
        return cb and cb(err)
      end
      this.answered = true
      local msgs = res and res.messages or {}
      table.insert(pages, 1, msgs)
      total = total + #msgs
      if res.nextBefore and total < limit and #msgs > 0 then
        return fetch(res.nextBefore)
      end
      if res.nextBefore then
        chat_buffer.notice({ "  (older messages not shown)" }, "notice")
      end
      for _, page in ipairs(pages) do
        for _, msg in ipairs(page) do
          pcall(function()
            -- (Old errors are shown, not notified.)
            chat_buffer.draw(state, state:apply_full(msg), { replaying = true })
          end)
        end
      end
      done()
      for _, n in ipairs(this.queue) do
        M.on_notification(n[1], n[2])
      end
      if #state.order == 0 then
        chat_buffer.show_placeholder()
      end
      if cb then
        cb(nil)
      end
    end)
  end
  fetch(nil)
  -- Prompts sent while the remembered chat was being reopened go to this session, as
  -- prompts sent while it loads do.
  restored()
end

--- Start a new chat (the session is created with the first prompt).
function M.new()
  loading = loading + 1 -- a session still loading does not replace the new chat
  opening = nil
  state:open(nil)
  switched(nil)
  chat_buffer.reset()
  chat_buffer.show_placeholder()
  M.status_changed()
  restored()
end

function M.forget(session_id)
  if M.current_id() == session_id then
    M.new()
  end
  state:forget(session_id)
end

return M
