-- Tests of the chat state (lua/agentd/chat_state.lua) without a UI: recorded agentd
-- notifications in (fixtures/agentd-notifications.json, from record_fixture.py), the
-- state out. Runs under any Lua 5.1 (LuaJIT, lua5.1: with dkjson for the fixture) and
-- under Neovim:
--
--   luajit editors/nvim/tests/chat_state_spec.lua
--   nvim -l editors/nvim/tests/chat_state_spec.lua                  (0.9+)
--   nvim --headless -u NONE -i NONE -n -c 'luafile editors/nvim/tests/chat_state_spec.lua'
--
-- Prints one line per test and exits non-zero when one fails.
local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]*$") or "."
local LUA_DIR = here .. "/../lua/"
local FIXTURE = here .. "/fixtures/agentd-notifications.json"

local out = io.stdout

---------------------------------------------------------------------------
-- The module, loaded where nothing but Lua's own library exists: a use of `vim` (or of
-- `require`, through which it could reach Neovim) is an error even under Neovim.

local LUA51 = {}
for name in ([[assert error getmetatable ipairs next pairs pcall rawequal rawget rawset select
  setmetatable tonumber tostring type unpack xpcall math string table]]):gmatch("%S+") do
  LUA51[name] = true
end

local function load_pure(path)
  local chunk = assert(loadfile(path))
  setfenv(
    chunk,
    setmetatable({}, {
      __index = function(_, k)
        if not LUA51[k] then
          error(("%s uses the global %q"):format(path, tostring(k)), 2)
        end
        return _G[k]
      end,
      __newindex = function(_, k)
        error(("%s sets the global %q"):format(path, tostring(k)), 2)
      end,
    })
  )
  return chunk()
end

local chat_state = load_pure(LUA_DIR .. "agentd/chat_state.lua")

---------------------------------------------------------------------------
-- A small harness

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local decode
if vim and vim.json then
  decode = vim.json.decode
else
  decode = require("dkjson").decode -- (Debian: lua-dkjson)
end
local FIX = decode(read(FIXTURE))
assert(type(FIX.turns) == "table" and #FIX.turns > 0, "no turns in " .. FIXTURE)

local function show(v)
  if type(v) == "string" then
    return ("%q"):format(v)
  end
  return tostring(v)
end

-- Deep equality; returns nil or the path and values where a and b differ.
local function diff(a, b, path)
  path = path or "value"
  if type(a) ~= "table" or type(b) ~= "table" then
    if a ~= b then
      return ("%s: %s ~= %s"):format(path, show(a), show(b))
    end
    return nil
  end
  for k, v in pairs(a) do
    local d = diff(v, b[k], path .. "." .. tostring(k))
    if d then
      return d
    end
  end
  for k, v in pairs(b) do
    if a[k] == nil then
      return ("%s.%s: missing, expected %s"):format(path, tostring(k), show(v))
    end
  end
  return nil
end

local function eq(got, want, what)
  local d = diff(got, want, what)
  if d then
    error(d, 2)
  end
end

local function truthy(v, what)
  if not v then
    error((what or "expected a true value") .. ": got " .. show(v), 2)
  end
end

local function copy(v)
  if type(v) ~= "table" then
    return v
  end
  local t = {}
  for k, x in pairs(v) do
    t[k] = copy(x)
  end
  return t
end

local passed, failed = 0, 0
local function test(name, fn)
  local ok, err = pcall(fn)
  if ok then
    passed = passed + 1
    out:write("ok    ", name, "\n")
  else
    failed = failed + 1
    out:write("FAIL  ", name, "\n      ", tostring(err), "\n")
  end
end

---------------------------------------------------------------------------
-- Fixture helpers

local SID = FIX.session.id

local function turn(name)
  for _, t in ipairs(FIX.turns) do
    if t.name == name then
      return t
    end
  end
  error("no turn " .. name .. " in the fixture")
end

-- A state on the recorded session. (The tests give it copies of the fixture, so a
-- state that wrote to what it is given fails one test, "never writes", not all.)
local function new_state()
  local s = chat_state.new()
  s:open(copy(FIX.session))
  return s
end

-- Apply the events of a turn (all of them, or while keep(event, i) is true) and return
-- the changes, one list per event.
local function play(s, t, each)
  local all = {}
  for i, ev in ipairs(t.events) do
    all[i] = s:apply(ev.method, copy(ev.params))
    if each then
      each(ev, i, all[i])
    end
  end
  return all
end

local function assistant(t)
  return t.result.message
end

local function parts_of(s, message_id, type_)
  local out = {}
  for _, p in ipairs(s.messages[message_id].parts) do
    if type_ == nil or p.type == type_ then
      out[#out + 1] = p
    end
  end
  return out
end

local function kinds(changes)
  local out = {}
  for i, c in ipairs(changes) do
    out[i] = c.kind .. (c.created and "+" or "")
  end
  return table.concat(out, " ")
end

-- The id of a turn's tool part (its only one).
local function tool_id(t)
  for _, p in ipairs(assistant(t).parts) do
    if p.type == "tool" then
      return p.id
    end
  end
  error("no tool part in " .. t.name)
end

---------------------------------------------------------------------------
-- What the recorded turns rebuild

test("every turn: the notifications rebuild exactly the message of the session/chat answer", function()
  local s = new_state()
  for _, t in ipairs(FIX.turns) do
    play(s, t)
    local msg = assistant(t)
    eq(s:snapshot(msg.id), msg, t.name)
  end
  -- One user and one assistant message per turn, in the order they came.
  truthy(#s.order == 2 * #FIX.turns, "messages: " .. #s.order)
  for i, t in ipairs(FIX.turns) do
    local user = s.messages[s.order[2 * i - 1]]
    eq(user.info.role, "user", t.name .. " user role")
    eq(user.parts[1].text, t.userText, t.name .. " prompt")
    eq(s.order[2 * i], assistant(t).id, t.name .. " answer position")
  end
end)

test("text deltas are applied in order: each state of the part is the deltas so far", function()
  for _, name in ipairs({ "stream", "abort", "editor-tool", "reasoning" }) do
    local s = new_state()
    local sofar = {}
    play(s, turn(name), function(ev, _, changes)
      if ev.method == "part/delta" then
        local id = ev.params.partId
        sofar[id] = (sofar[id] or "") .. ev.params.delta
        eq(s:part(id).text, sofar[id], name .. " text after a delta")
        eq(changes, {
          { kind = "delta", id = id, message_id = ev.params.messageId, field = "text", delta = ev.params.delta },
        }, name .. " changes")
      end
    end)
    truthy(next(sofar) ~= nil, name .. " has deltas")
    for id, text in pairs(sofar) do
      -- The part/updated that ends the part says the same.
      eq(s:part(id).text, text, name .. " final text")
    end
  end
  local s = new_state()
  play(s, turn("stream"))
  eq(parts_of(s, assistant(turn("stream")).id, "text")[1].text, "# Plan\n\nFirst **read** the file,\nthen `edit` it:\n\n- one\n- two\n")
end)

test("deltas before their part/updated make a text part of their message", function()
  local t = turn("stream")
  local s = new_state()
  -- Only the message and the deltas, no part/updated of the text part.
  local text_id
  for _, ev in ipairs(t.events) do
    if ev.method == "part/delta" then
      text_id = ev.params.partId
    end
  end
  local changes = {}
  for _, ev in ipairs(t.events) do
    local p = ev.params
    if not (ev.method == "part/updated" and p.part.id == text_id) then
      changes[#changes + 1] = { ev.method, s:apply(ev.method, copy(p)) }
    end
  end
  local first_delta
  for _, c in ipairs(changes) do
    if c[1] == "part/delta" then
      first_delta = first_delta or c[2]
    end
  end
  eq(kinds(first_delta), "part+ delta", "the first delta's changes")
  local msg = assistant(t)
  local text = parts_of(s, msg.id, "text")
  eq(#text, 1, "text parts")
  eq(text[1].id, text_id)
  eq(text[1].text, msg.parts[2].text, "text from the deltas alone")

  -- A delta for a message nobody announced: an assistant message is made for it.
  local s2 = new_state()
  local c = s2:apply("part/delta", { sessionId = SID, messageId = "msg_x", partId = "prt_x", delta = "hi" })
  eq(kinds(c), "message+ part+ delta")
  eq(s2.messages.msg_x.info, { id = "msg_x", role = "assistant" })
  eq(s2:part("prt_x"), { id = "prt_x", type = "text", text = "hi" })

  -- A field other than text is appended to that field, the text untouched.
  s2:apply("part/delta", { sessionId = SID, messageId = "msg_x", partId = "prt_x", field = "note", delta = "a" })
  s2:apply("part/delta", { sessionId = SID, messageId = "msg_x", partId = "prt_x", field = "note", delta = "b" })
  eq(s2:part("prt_x"), { id = "prt_x", type = "text", text = "hi", note = "ab" })

  -- Without a part id or a message to put a new part in: nothing.
  eq(s2:apply("part/delta", { sessionId = SID, messageId = "msg_x", delta = "zz" }), {})
  eq(s2:apply("part/delta", { sessionId = SID, partId = "prt_y", delta = "zz" }), {})
  eq(s2:part("prt_y"), nil)
end)

test("parts are inserted in arrival order and replaced by id where they are", function()
  local t = turn("editor-tool")
  local s = new_state()
  local msg = assistant(t)
  local tid = tool_id(t)
  local seen = {}
  play(s, t, function(ev, _, changes)
    if ev.method == "part/updated" and ev.params.part.id == tid then
      seen[#seen + 1] = changes[1]
    end
  end)
  -- The tool part came four times: made once, then replaced in place, the part it
  -- replaced handed to the renderer.
  eq(#seen, 4)
  eq(seen[1].created, true)
  eq(seen[1].old, nil)
  local olds = {}
  for i = 2, 4 do
    eq(seen[i].created, false)
    olds[#olds + 1] = seen[i].old.state.status
  end
  eq(olds, { "pending", "pending", "running" }, "the states replaced")
  local types = {}
  for i, p in ipairs(s.messages[msg.id].parts) do
    types[i] = p.type
  end
  eq(types, { "step-start", "tool", "step-finish", "step-start", "text", "step-finish" })

  -- A replacement that names another message still replaces the part where it is.
  local moved = copy(s:part(tid))
  moved.state.status = "error"
  moved.state.error = "moved"
  local c = s:apply("part/updated", { sessionId = SID, messageId = "msg_other", part = moved })
  eq(kinds(c), "part")
  eq(c[1].message_id, msg.id)
  eq(s.messages[msg.id].parts[2].state.error, "moved")
  eq(s.messages.msg_other, nil)

  -- A part without an id, or not a table, changes nothing.
  eq(s:apply("part/updated", { sessionId = SID, messageId = msg.id, part = { type = "text", text = "x" } }), {})
  eq(s:apply("part/updated", { sessionId = SID, messageId = msg.id, part = "text" }), {})
  eq(#s.messages[msg.id].parts, 6)
end)

test("tool parts move pending -> running -> completed | error", function()
  local function statuses(name)
    local t = turn(name)
    local s = new_state()
    local tid = tool_id(t)
    local out = {}
    play(s, t, function(ev)
      if ev.method == "part/updated" and ev.params.part.id == tid then
        out[#out + 1] = s:part(tid).state.status
      end
    end)
    return out, s:part(tid).state
  end
  local st, final = statuses("editor-tool")
  eq(st, { "pending", "pending", "running", "completed" }, "editor-tool")
  eq(final.title, "app.py:2-3")
  eq(final.metadata, { path = "app.py", startLine = 2, endLine = 3 })
  st, final = statuses("editor-tool-error")
  eq(st, { "pending", "pending", "running", "error" }, "editor-tool-error")
  eq(final.error, "no buffer named nope.py")
  st, final = statuses("bash-refused")
  eq(st, { "pending", "pending", "error" }, "bash-refused: never ran")
  eq(final.error, "the user refused bash")
  st = statuses("bash-rerun")
  eq(st, { "pending", "pending", "running", "running", "completed" }, "bash-rerun: ran twice")
end)

test("a command's tool state carries its sandbox: mode, network, blocked, rerunOf", function()
  local function sandboxes(name)
    local t = turn(name)
    local s = new_state()
    local tid = tool_id(t)
    local out = {}
    play(s, t, function(ev)
      if ev.method == "part/updated" and ev.params.part.id == tid then
        local st = s:part(tid).state
        out[#out + 1] = { st.status, st.sandbox or false }
      end
    end)
    return out
  end
  local ww = { mode = "workspace-write", network = false }
  local blocked = { mode = "workspace-write", network = false, blocked = "writing outside the workspace" }
  eq(sandboxes("bash"), { { "pending", false }, { "pending", false }, { "running", ww }, { "completed", ww } })
  eq(sandboxes("bash-refused"), { { "pending", false }, { "pending", false }, { "error", ww } })
  eq(sandboxes("bash-blocked"), { { "pending", false }, { "pending", false }, { "running", ww }, { "completed", blocked } })
  local rerun = {
    mode = "full-access",
    network = true,
    blocked = "writing outside the workspace",
    rerunOf = "workspace-write",
  }
  eq(sandboxes("bash-rerun"), {
    { "pending", false },
    { "pending", false },
    { "running", ww },
    { "running", rerun },
    { "completed", rerun },
  })
  -- An editor tool has none.
  for _, st in ipairs(sandboxes("editor-tool")) do
    eq(st[2], false, "editor-tool sandbox")
  end
end)

test("reasoning is a part of its own, before the answer's text", function()
  local t = turn("reasoning")
  local s = new_state()
  play(s, t)
  local msg = assistant(t)
  local r = parts_of(s, msg.id, "reasoning")
  eq(#r, 1)
  eq(r[1].text, "Thinking about: why is the sky blue")
  local types = {}
  for _, p in ipairs(s.messages[msg.id].parts) do
    if p.type == "reasoning" or p.type == "text" then
      types[#types + 1] = p.type
    end
  end
  eq(types, { "reasoning", "text" })
  eq(parts_of(s, msg.id, "text")[1].text, "why is the sky blue")
end)

test("an aborted message ends with what arrived, finishReason aborted", function()
  local t = turn("abort")
  local s = new_state()
  local done_at
  local id = assistant(t).id
  play(s, t, function(_, i)
    if not done_at and s.messages[id] and chat_state.is_done(s.messages[id].info) then
      done_at = i
    end
  end)
  local info = s.messages[assistant(t).id].info
  eq(info.finishReason, "aborted")
  truthy(done_at == #t.events - 1, "ended by the last message/updated")
  eq(parts_of(s, info.id, "text")[1].text, "w1 w2 w3 w4 w5 w6 w7 w8 ")
  eq(s.statuses[SID].status, "idle")
end)

test("a provider error: the message carries it and session/error is reported once per run", function()
  local t = turn("error")
  local s = new_state()
  local errors = {}
  play(s, t, function(_, _, changes)
    for _, c in ipairs(changes) do
      if c.kind == "error" then
        errors[#errors + 1] = c
      end
    end
  end)
  local info = s.messages[assistant(t).id].info
  eq(info.finishReason, "error")
  eq(info.error.name, "ProviderAuthError")
  truthy(chat_state.is_done(info), "done")
  eq(#errors, 1)
  eq(errors[1].run_id, t.runId)
  eq(errors[1].error, info.error)
  -- Another session's error is not this chat's.
  eq(s:apply("session/error", { sessionId = "ses_other", runId = "r", error = { name = "X" } }), {})
  -- A malformed error is still an error.
  eq(s:apply("session/error", { sessionId = SID, runId = "r", error = "boom" }), {
    { kind = "error", error = {}, run_id = "r" },
  })
end)

test("usage and cost: per message, per step, and the session's totals", function()
  local t = turn("stream")
  local s = new_state()
  play(s, t)
  local info = s.messages[assistant(t).id].info
  eq(info.usage, { inputTokens = 1200, outputTokens = 160, reasoningTokens = 20, cacheReadTokens = 400, cacheWriteTokens = 0 })
  truthy(math.abs(info.cost - 0.006) < 1e-12, "cost " .. tostring(info.cost))
  local finish = parts_of(s, info.id, "step-finish")[1]
  eq(finish.usage, info.usage, "the step's usage")
  -- The next run's session/updated brings the session's totals.
  play(s, turn("editor-tool"))
  eq(s.session.usage, info.usage, "session totals after the first run")
  eq(s.session.title, "Recorded session")
  -- The final session has every run's usage: sum over the answers.
  local sum = 0
  for _, tt in ipairs(FIX.turns) do
    sum = sum + (assistant(tt).usage.inputTokens or 0)
  end
  eq(FIX.finalSession.usage.inputTokens, sum, "the recorded totals add up")
end)

---------------------------------------------------------------------------
-- Sessions and statuses

test("statuses: busy then idle, for the current session and others", function()
  local t = turn("stream")
  local s = new_state()
  local status_changes = {}
  play(s, t, function(ev, _, changes)
    if ev.method == "session/status" then
      status_changes[#status_changes + 1] = changes
      eq(s.session.status, ev.params.status, "the session's own status follows")
    end
  end)
  eq(status_changes, {
    { { kind = "status", session_id = SID, current = true } },
    { { kind = "status", session_id = SID, current = true } },
  })
  eq(s.statuses[SID], { status = "idle", runId = t.runId })
  -- Another session's status is kept (the sessions list shows it), not the current one's.
  local c = s:apply("session/status", { sessionId = "ses_b", status = "retry", attempt = 2, nextRetryAt = 5, message = "503" })
  eq(c, { { kind = "status", session_id = "ses_b", current = false } })
  eq(s.statuses.ses_b, { status = "retry", attempt = 2, nextRetryAt = 5, message = "503" })
  eq(s.session.status, "idle")
  -- Without a session id: nothing (it would be nobody's).
  eq(s:apply("session/status", { status = "busy" }), {})
  -- The connection ends: whether anything runs is unknown (a shared daemon goes on with
  -- the runs), not "idle" (which would hide a run that went on when the session is opened).
  s:apply("session/status", { sessionId = SID, status = "busy" })
  s:daemon_exited()
  eq(s.statuses[SID], nil)
  eq(s.statuses.ses_b, nil)
  s:open({ id = "ses_b", status = "busy" })
  eq(s.statuses.ses_b, { status = "busy" }, "the status the session was listed with")
end)

test("session/updated tells every session's status, the current one's and others'", function()
  local s = new_state()
  -- Another session's run starts and ends (another editor's): known without following it.
  eq(s:apply("session/updated", { session = { id = "ses_b", status = "busy" } }), {
    { kind = "status", session_id = "ses_b", current = false },
  })
  eq(s.statuses.ses_b, { status = "busy" })
  eq(s:apply("session/updated", { session = { id = "ses_b", status = "busy", title = "t" } }), {}, "no change")
  s:apply("session/updated", { session = { id = "ses_b", status = "idle" } })
  eq(s.statuses.ses_b, { status = "idle" })
  -- Opened after its run ended: the list said busy, the update that came since says idle.
  s:open({ id = "ses_b", status = "busy" })
  eq(s.statuses.ses_b, { status = "idle" })
  -- The current session's run ends while this editor does not follow it yet: the status
  -- changes, and the session's fields with it.
  s:apply("session/updated", { session = { id = "ses_b", status = "busy" } })
  eq(s:apply("session/updated", { session = { id = "ses_b", status = "idle" } }), {
    { kind = "status", session_id = "ses_b", current = true },
    { kind = "session" },
  })
  eq(s.session.status, "idle")
  -- A retry's details (from session/status) stay while session/updated says the same.
  s:apply("session/status", { sessionId = "ses_b", status = "retry", attempt = 3 })
  eq(s:apply("session/updated", { session = { id = "ses_b", status = "retry" } }), { { kind = "session" } })
  eq(s.statuses.ses_b, { status = "retry", attempt = 3 })
  -- Nonsense statuses change nothing.
  eq(s:apply("session/updated", { session = { id = "ses_c", status = 5 } }), {})
  eq(s.statuses.ses_c, nil)
end)

test("session/updated merges into the current session only", function()
  local s = new_state()
  eq(s:apply("session/updated", { session = { id = SID, title = "New title" } }), { { kind = "session" } })
  eq(s.session.title, "New title")
  eq(s.session.workspaceRoot, FIX.session.workspaceRoot, "fields not sent are kept")
  eq(s:apply("session/updated", { session = { id = "ses_other", title = "Other" } }), {})
  eq(s.session.title, "New title")
  eq(s:apply("session/updated", { session = "nonsense" }), {})
  eq(s:apply("session/updated", { sessionId = SID }), {})
  truthy(s:update_session({ id = SID, title = "Renamed" }), "rename's answer")
  eq(s.session.title, "Renamed")
  truthy(not s:update_session({ id = "ses_other", title = "x" }), "another session")
end)

test("another session's notifications, or any before a session exists, are ignored", function()
  for _, t in ipairs(FIX.turns) do
    local s = new_state()
    local other = copy(t)
    for _, ev in ipairs(other.events) do
      if ev.params.sessionId then
        ev.params.sessionId = "ses_other"
      end
      if type(ev.params.session) == "table" then
        ev.params.session.id = "ses_other"
      end
    end
    play(s, other)
    eq(s.order, {}, t.name .. ": messages")
    eq(s.where, {}, t.name .. ": parts")
    eq(s.statuses.ses_other.status, "idle", t.name .. ": its status is kept")
    -- And with no session (a new chat, before session/create answered).
    local fresh = chat_state.new()
    play(fresh, t)
    eq(fresh.order, {}, t.name .. ": messages of a new chat")
    eq(fresh.statuses[SID].status, "idle")
  end
  -- Notifications without a session id, or with nonsense params, change nothing.
  local s = new_state()
  for _, m in ipairs({ "message/updated", "part/updated", "part/delta", "session/error", "no/such" }) do
    eq(s:apply(m, { message = { id = "m" }, messageId = "m", part = { id = "p" }, partId = "p", delta = "x" }), {}, m)
    eq(s:apply(m, nil), {}, m .. " nil")
    eq(s:apply(m, "params"), {}, m .. " string")
  end
  eq(s.order, {})
end)

test("messages: merged as they are updated, kept in arrival order, parts arriving first", function()
  local s = new_state()
  -- A part before its message: an assistant message stands in, then the real one merges.
  local c = s:apply("part/updated", { sessionId = SID, messageId = "msg_2", part = { id = "p1", type = "text", text = "a" } })
  eq(kinds(c), "message+ part+")
  s:apply("message/updated", { sessionId = SID, message = { id = "msg_1", role = "user", time = { created = 1, completed = 1 } } })
  s:apply("message/updated", { sessionId = SID, message = { id = "msg_2", role = "assistant", model = "m", time = { created = 2 } } })
  -- (Arrival order, not id order: the buffer only appends.)
  eq(s.order, { "msg_2", "msg_1" })
  eq(s.messages.msg_2.info, { id = "msg_2", role = "assistant", model = "m", time = { created = 2 } })
  -- A later update with fewer fields keeps the others; parts never go into the info.
  c = s:apply("message/updated", {
    sessionId = SID,
    message = { id = "msg_2", finishReason = "stop", time = { created = 2, completed = 3 }, parts = { { id = "zz" } } },
  })
  eq(c, { { kind = "message", id = "msg_2", created = false } })
  eq(s.messages.msg_2.info, { id = "msg_2", role = "assistant", model = "m", finishReason = "stop", time = { created = 2, completed = 3 } })
  eq(#s.messages.msg_2.parts, 1)
  truthy(chat_state.is_done(s.messages.msg_2.info), "done")
  truthy(not chat_state.is_done(s.messages.msg_1.info), "a user message is never 'done'")
  eq(s:apply("message/updated", { sessionId = SID, message = { role = "user" } }), {})
  eq(s:apply("message/updated", { sessionId = SID }), {})
end)

test("the state never writes to the tables it is given, and its snapshots stay as taken", function()
  local pristine = copy(FIX)
  -- The fixture itself, not copies: every notification, then every answer again.
  local session = FIX.session
  local s = chat_state.new()
  s:open(session)
  local snaps = {}
  for _, t in ipairs(FIX.turns) do
    for i, ev in ipairs(t.events) do
      s:apply(ev.method, ev.params)
      -- A snapshot taken halfway: later deltas do not reach it.
      if ev.method == "part/delta" and not snaps[t.name] then
        local id = ev.params.messageId
        snaps[t.name] = { id = id, snap = s:snapshot(id), want = copy(s:snapshot(id)), at = i }
      end
    end
    s:apply_full(t.result.message)
  end
  eq(FIX, pristine, "the fixture after the notifications and answers")
  for name, sn in pairs(snaps) do
    eq(sn.snap, sn.want, name .. ": the snapshot taken at event " .. sn.at)
  end
  truthy(snaps.stream and #snaps.stream.snap.parts < #s.messages[snaps.stream.id].parts, "the stream grew after its snapshot")
  -- The history, from snapshots of that state, into another one.
  local history = chat_state.new()
  history:open(session)
  local given = {}
  for i, id in ipairs(s.order) do
    given[i] = s:snapshot(id)
  end
  local given_copy = copy(given)
  for _, msg in ipairs(given) do
    history:apply_full(msg)
  end
  -- Deltas to a part the history has: neither the given message nor the first state sees them.
  local last = s.order[#s.order]
  local text = parts_of(history, last, "text")[1]
  history:apply("part/delta", { sessionId = SID, messageId = last, partId = text.id, delta = " more" })
  eq(given, given_copy, "the messages given to apply_full")
  eq(s:part(text.id).text .. " more", history:part(text.id).text)
  -- The session given to open and created is not the one the statuses and updates change.
  local mine = { id = "ses_mine", status = "idle", title = "Mine" }
  local st = chat_state.new()
  st:created(mine)
  st:apply("session/status", { sessionId = "ses_mine", status = "busy" })
  st:apply("session/updated", { session = { id = "ses_mine", title = "Theirs" } })
  st:open(mine)
  st:apply("session/status", { sessionId = "ses_mine", status = "retry" })
  eq(mine, { id = "ses_mine", status = "idle", title = "Mine" })
  eq(st.session.status, "retry")
end)

---------------------------------------------------------------------------
-- Whole messages: the session/chat answer and the history

test("the session/chat answer after its notifications changes nothing", function()
  local s = new_state()
  for _, t in ipairs(FIX.turns) do
    play(s, t)
  end
  local before = copy(s.messages)
  local order = copy(s.order)
  for _, t in ipairs(FIX.turns) do
    local c = s:apply_full(copy(assistant(t)))
    eq(c[#c], { kind = "message", id = assistant(t).id, created = false }, t.name)
    for i = 1, #c - 1 do
      eq(c[i].kind, "part", t.name)
      eq(c[i].created, false, t.name)
    end
  end
  eq(s.messages, before)
  eq(s.order, order)
end)

test("the history rebuilds the same state; the message change comes after its parts", function()
  local live = new_state()
  for _, t in ipairs(FIX.turns) do
    play(live, t)
  end
  local history = new_state()
  for _, id in ipairs(live.order) do
    local c = history:apply_full(copy(live:snapshot(id)))
    eq(c[#c], { kind = "message", id = id, created = true })
    for i = 1, #c - 1 do
      eq(c[i].kind, "part")
      eq(c[i].created, true)
    end
  end
  eq(history.messages, live.messages)
  eq(history.order, live.order)
  eq(history:apply_full({ role = "user" }), {})
  eq(history:apply_full("x"), {})
end)

test("open, created and forget: what the requests do to the state", function()
  local s = new_state()
  play(s, turn("stream"))
  s:apply("session/status", { sessionId = "ses_b", status = "busy" })
  -- Opening a session empties the conversation, keeps what is known of statuses.
  s:open({ id = "ses_b", status = "idle" })
  eq(s.order, {})
  eq(s.where, {})
  eq(s:current_id(), "ses_b")
  eq(s.statuses.ses_b.status, "busy")
  s:open({ id = "ses_c" })
  eq(s.statuses.ses_c, { status = "idle" })
  -- A new chat: no session until session/create answers.
  s:open(nil)
  eq(s:current_id(), nil)
  s:created({ id = "ses_d", status = "idle" })
  eq(s:current_id(), "ses_d")
  eq(s.statuses.ses_d, { status = "idle" })
  s:forget("ses_b")
  eq(s.statuses.ses_b, nil)
end)

out:write(("%d passed, %d failed (%s)\n"):format(passed, failed, jit and jit.version or _VERSION))
if vim then
  -- (Neovim: flush and leave with the status, in -l and in luafile mode alike.)
  io.stdout:flush()
end
os.exit(failed == 0 and 0 or 1)
