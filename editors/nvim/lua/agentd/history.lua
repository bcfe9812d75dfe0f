-- What the current session's history offers besides chatting: fork at a message
-- (session/fork), revert to a message and undo that (session/revert, session/unrevert,
-- each previewed with dryRun and confirmed), and export (session/export) into a scratch
-- buffer. The message is the one under the cursor in the chat buffer.
local api = vim.api
local chat_buffer = require("agentd.chat_buffer")
local client = require("agentd.client")
local util = require("agentd.util")

local M = {}

-- data.reason of -32603 from session/revert and session/unrevert, in plain words.
local REASONS = {
  ["too-large"] = "a snapshot of the workspace was over agentd's size limit ([snapshots] max_files / max_bytes), so those files were never recorded",
  ["no-git"] = "git is not installed where agentd runs; agentd keeps its snapshots with git",
  ["snapshots-off"] = "snapshots are turned off in agentd's configuration ([snapshots] enabled = false)",
  ["not-a-directory"] = "the session's workspace is no longer a directory",
  ["workspace-changed"] = "the session's workspace root changed since those steps ran",
  ["missing"] = "a snapshot is missing (the message changed files before agentd kept snapshots, or the store lost it)",
}

--- A daemon error of a history request, in plain words (what: "revert", "fork"...).
function M.error_text(what, err)
  if type(err) ~= "table" then
    return ("agentd: %s failed: %s"):format(what, tostring(err))
  end
  local data = type(err.data) == "table" and err.data or {}
  local text
  if err.code == 1002 then
    text = "the session is busy (an answer is running, or a revert): wait for it or abort it (:AgentdAbort)"
  elseif err.code == 1001 then
    text = "the session no longer exists"
  elseif err.code == -32603 and REASONS[data.reason] then
    text = REASONS[data.reason] .. " (" .. tostring(err.message or data.reason) .. ")"
  elseif err.code == -32602 and data.reason == "nothing-to-unrevert" then
    text = "there is nothing to unrevert: " .. tostring(err.message or "")
  else
    text = util.err_text(err)
  end
  return ("agentd: %s failed: %s"):format(what, text)
end

local function report(what, err)
  if err.code == -32099 and client.state == "off" then
    return -- the daemon is gone: its exit is reported already
  end
  util.notify(M.error_text(what, err), vim.log.levels.ERROR)
end

---------------------------------------------------------------------------
-- The message under the cursor

--- The message under the cursor of the chat window (or of window `win`), or nil with
--- a reason.
function M.message_under_cursor()
  local buf = chat_buffer.buf
  if not buf or api.nvim_get_current_buf() ~= buf then
    return nil, "put the cursor on a message in the chat panel"
  end
  local id = chat_buffer.message_at(api.nvim_win_get_cursor(0)[1])
  if not id then
    return nil, "the cursor is not on a message"
  end
  return id
end

-- "You · 14:02: why does add() fail?"
local function label(id)
  local state = require("agentd.chat").state
  local m = state.messages[id]
  if not m then
    return id
  end
  local who = m.info.role == "user" and "You" or "Assistant"
  local t = m.info.time and m.info.time.created
  if type(t) == "number" then
    who = who .. " · " .. os.date("%H:%M", math.floor(t / 1000))
  end
  for _, p in ipairs(m.parts) do
    if p.type == "text" and type(p.text) == "string" and p.text:match("%S") then
      return who .. ": " .. util.shorten(p.text:gsub("^%s+", ""), 50)
    end
  end
  return who
end

---------------------------------------------------------------------------
-- Fork

--- Fork the current session at the message under the cursor (elsewhere than in the chat
--- panel: the whole session) and open the fork in the panel.
function M.fork(cb)
  local chat = require("agentd.chat")
  local sid = chat.current_id()
  if not sid then
    util.notify("agentd: nothing to fork (send a prompt first)", vim.log.levels.WARN)
    return
  end
  local params = { sessionId = sid }
  if chat_buffer.buf and api.nvim_get_current_buf() == chat_buffer.buf then
    local id, why = M.message_under_cursor()
    if not id then
      util.notify("agentd: fork: " .. why, vim.log.levels.WARN)
      return
    end
    params.messageId = id
  end
  client.request("session/fork", params, function(err, res)
    if err then
      return report("fork", err)
    end
    local session = res.session
    require("agentd.sessions").on_updated(session)
    util.notify(("agentd: forked into %q"):format(session.title or session.id), vim.log.levels.INFO)
    require("agentd.sessions").open(session, cb)
  end)
end

---------------------------------------------------------------------------
-- Revert and unrevert

-- The lines of the preview: what a revert (or unrevert) would do.
function M.preview_lines(heading, res)
  local lines = { heading }
  local n = #(res.messages or {})
  lines[#lines + 1] = n == 1 and "  1 message" or ("  %d messages"):format(n)
  if #(res.files or {}) == 0 and #(res.conflicts or {}) == 0 then
    lines[#lines + 1] = "  no file changes"
  end
  for _, f in ipairs(res.files or {}) do
    lines[#lines + 1] = ("  %-8s %s"):format(f.action == "delete" and "delete" or "restore", f.path)
  end
  for _, c in ipairs(res.conflicts or {}) do
    lines[#lines + 1] = ("  conflict %s: %s"):format(c.path, c.reason)
  end
  return lines
end

local function open_preview(lines)
  local buf = api.nvim_create_buf(false, true)
  api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].modifiable = false
  vim.bo[buf].bufhidden = "wipe"
  local width = util.float_width(lines)
  local height = math.max(1, math.min(#lines, vim.o.lines - 8))
  local win = api.nvim_open_win(buf, false, {
    relative = "editor",
    row = math.max(0, math.floor((vim.o.lines - height) / 2) - 2),
    col = math.max(0, math.floor((vim.o.columns - width) / 2)),
    width = width,
    height = height,
    style = "minimal",
    border = "single",
    focusable = false,
  })
  vim.wo[win].wrap = false
  return win
end

-- Show what `method` would do (its dryRun answer) and ask; on yes, do it, then reload
-- the session. verb: "Revert" | "Unrevert".
local function previewed(method, verb, params, heading, cb)
  local chat = require("agentd.chat")
  local sid = params.sessionId
  local what = verb:lower()
  local dry = vim.tbl_extend("force", params, { dryRun = true })
  client.request(method, dry, function(err, res)
    if err then
      report(what, err)
      return cb and cb(err)
    end
    local lines = M.preview_lines(heading, res)
    local win = open_preview(lines)
    local items = { verb }
    local conflicts = #(res.conflicts or {})
    if conflicts > 0 then
      items[1] = verb .. (conflicts == 1 and " (leave the changed file as it is)" or " (leave the changed files as they are)")
      items[2] = verb .. " and overwrite " .. (conflicts == 1 and "the changed file" or ("the %d changed files"):format(conflicts))
    end
    items[#items + 1] = "Cancel"
    local prompt = ("%s %d message%s and %d file%s?"):format(
      verb,
      #(res.messages or {}),
      #(res.messages or {}) == 1 and "" or "s",
      #(res.files or {}),
      #(res.files or {}) == 1 and "" or "s"
    )
    vim.ui.select(items, { prompt = prompt, kind = "agentd_confirm" }, function(choice)
      pcall(api.nvim_win_close, win, true)
      if choice == nil or choice == "Cancel" then
        return cb and cb(nil, nil)
      end
      local real = vim.tbl_extend("force", params, { force = choice == items[2] and conflicts > 0 or nil })
      client.request(method, real, function(e, done)
        if e then
          report(what, e)
          return cb and cb(e)
        end
        local bits = { ("agentd: %sed %d message%s"):format(what, #done.messages, #done.messages == 1 and "" or "s") }
        for _, f in ipairs(done.files or {}) do
          bits[#bits + 1] = (f.action == "delete" and "deleted " or "restored ") .. f.path
        end
        for _, c in ipairs(done.conflicts or {}) do
          bits[#bits + 1] = ("left %s as it is (%s)"):format(c.path, c.reason)
        end
        util.notify(table.concat(bits, "; "), vim.log.levels.INFO)
        if chat.current_id() == sid then
          -- The daemon's word on what is shown now: the reverted messages are gone.
          chat.load(chat.state.session, function()
            require("agentd.panel").scroll_to_end()
            if cb then
              cb(nil, done)
            end
          end)
        elseif cb then
          cb(nil, done)
        end
      end)
    end)
  end)
end

--- Revert the current session to the message under the cursor (it stays; everything
--- after it is undone: messages hidden, files restored), after a preview and a yes.
function M.revert(cb)
  local chat = require("agentd.chat")
  local sid = chat.current_id()
  if not sid then
    util.notify("agentd: nothing to revert (no session yet)", vim.log.levels.WARN)
    return
  end
  local id, why = M.message_under_cursor()
  if not id then
    util.notify("agentd: revert: " .. why, vim.log.levels.WARN)
    return
  end
  previewed(
    "session/revert",
    "Revert",
    { sessionId = sid, messageId = id },
    "Revert to " .. label(id) .. ": undoes what came after it",
    cb
  )
end

--- Undo the latest revert of the current session, after a preview and a yes.
function M.unrevert(cb)
  local sid = require("agentd.chat").current_id()
  if not sid then
    util.notify("agentd: nothing to unrevert (no session yet)", vim.log.levels.WARN)
    return
  end
  previewed("session/unrevert", "Unrevert", { sessionId = sid }, "Unrevert: brings back the latest revert", cb)
end

---------------------------------------------------------------------------
-- Export

--- session/export of the current session into a new scratch buffer, in a split of the
--- last editor window. format: "markdown" (default) or "json".
function M.export(format, cb)
  format = (format == nil or format == "") and "markdown" or format
  if format ~= "markdown" and format ~= "json" then
    util.notify('agentd: export: the format is "markdown" or "json", not ' .. vim.inspect(format), vim.log.levels.ERROR)
    return
  end
  local sid = require("agentd.chat").current_id()
  if not sid then
    util.notify("agentd: nothing to export (no session yet)", vim.log.levels.WARN)
    return
  end
  client.request("session/export", { sessionId = sid, format = format }, function(err, res)
    if err then
      report("export", err)
      return cb and cb(err)
    end
    local buf = api.nvim_create_buf(true, true)
    local ext = format == "json" and "json" or "md"
    pcall(api.nvim_buf_set_name, buf, ("agentd://export/%s.%s"):format(sid, ext))
    local lines = util.split_lines(res.content or "")
    if #lines > 1 and lines[#lines] == "" then
      lines[#lines] = nil
    end
    api.nvim_buf_set_lines(buf, 0, -1, false, lines)
    vim.bo[buf].modified = false
    local win = require("agentd.tools").source_window()
    if win and api.nvim_win_is_valid(win) then
      api.nvim_set_current_win(win)
    end
    vim.cmd("belowright split")
    api.nvim_win_set_buf(0, buf)
    vim.bo[buf].filetype = format == "json" and "json" or "markdown"
    if cb then
      cb(nil, buf)
    end
  end)
end

return M
