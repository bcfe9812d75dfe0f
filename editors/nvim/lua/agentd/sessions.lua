-- :AgentdSessions, :AgentdRename, :AgentdDelete.
local client = require("agentd.client")
local config = require("agentd.config")
local util = require("agentd.util")

local M = {}

M.known = {} -- id -> Session, as last seen

function M.on_updated(session)
  if type(session) == "table" and session.id then
    M.known[session.id] = session
  end
end

local MORE = { more = true }

function M.format(s)
  if s == MORE then
    return "… more sessions"
  end
  local title = s.title
  if type(title) ~= "string" or title == "" then
    title = "(untitled)"
  end
  local bits = { util.shorten(title, 50), util.reltime(s.time and s.time.updated) }
  local chat = require("agentd.chat")
  local st = (chat.state.statuses[s.id] or {}).status or s.status
  if st == "busy" then
    bits[#bits + 1] = "● busy"
  elseif st == "retry" then
    bits[#bits + 1] = "● retrying"
  end
  if s.id == chat.current_id() then
    bits[#bits + 1] = "(current)"
  end
  return table.concat(bits, " · ")
end

--- Fetch one page of sessions. cb(err, sessions, next_cursor)
function M.list(cursor, cb)
  local params = { limit = config.get().sessions_page_size, rootsOnly = true }
  params.cursor = cursor
  client.request("session/list", params, function(err, res)
    if err then
      return cb(err)
    end
    local list = res and res.sessions or {}
    for _, s in ipairs(list) do
      M.known[s.id] = s
    end
    cb(nil, list, res and res.nextCursor)
  end)
end

--- Pick a session with vim.ui.select and open it in the panel.
function M.pick(on_done)
  local all = {}
  local seen = {}
  local function show(cursor)
    M.list(cursor, function(err, list, next_cursor)
      if err then
        util.notify("agentd: could not list sessions: " .. util.err_text(err), vim.log.levels.ERROR)
        return
      end
      for _, s in ipairs(list) do
        if not seen[s.id] then
          seen[s.id] = true
          all[#all + 1] = s
        end
      end
      if #all == 0 then
        util.notify("agentd: no sessions yet", vim.log.levels.INFO)
        return
      end
      local items = vim.list_extend({}, all)
      if next_cursor then
        items[#items + 1] = MORE
      end
      vim.ui.select(items, {
        prompt = "agentd sessions",
        kind = "agentd_session",
        format_item = M.format,
      }, function(choice)
        if choice == nil then
          return
        end
        if choice == MORE then
          return show(next_cursor)
        end
        M.open(choice, on_done)
      end)
    end)
  end
  show(nil)
end

--- Make a session current, show its history and open the panel.
function M.open(session, cb)
  local chat = require("agentd.chat")
  local panel = require("agentd.panel")
  panel.open({ focus = "input" })
  chat.load(session, function(err)
    panel.scroll_to_end()
    if cb then
      cb(err)
    end
  end)
end

function M.rename(title)
  local chat = require("agentd.chat")
  local s = chat.state.session
  if not s then
    util.notify("agentd: no session yet (send a prompt first)", vim.log.levels.WARN)
    return
  end
  local function go(t)
    if t == nil or t:match("^%s*$") then
      return
    end
    client.request("session/update", { sessionId = s.id, title = t }, function(err, res)
      if err then
        util.notify("agentd: rename failed: " .. util.err_text(err), vim.log.levels.ERROR)
        return
      end
      if res and res.session and chat.state:update_session(res.session) then
        M.known[res.session.id] = res.session
        require("agentd.panel").redraw_status()
      end
    end)
  end
  if title and title ~= "" then
    return go(title)
  end
  vim.ui.input({ prompt = "Rename session: ", default = s.title or "" }, go)
end

function M.delete(force)
  local chat = require("agentd.chat")
  local s = chat.state.session
  if not s then
    util.notify("agentd: no session to delete", vim.log.levels.WARN)
    return
  end
  local function go()
    client.request("session/delete", { sessionId = s.id }, function(err, res)
      if err then
        util.notify("agentd: delete failed: " .. util.err_text(err), vim.log.levels.ERROR)
        return
      end
      M.known[s.id] = nil
      chat.forget(s.id)
      if res and res.deleted then
        util.notify(("agentd: deleted %q"):format(s.title or s.id), vim.log.levels.INFO)
      end
    end)
  end
  if force then
    return go()
  end
  vim.ui.select({ "Delete", "Cancel" }, {
    prompt = ("Delete session %q and its history?"):format(s.title or s.id),
    kind = "agentd_confirm",
  }, function(choice)
    if choice == "Delete" then
      go()
    end
  end)
end

return M
