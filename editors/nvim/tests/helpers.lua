-- Test helpers loaded into each Neovim the pytest suite drives (as _G.T).
local T = {}
_G.T = T

-- vim.notify is captured.
T.notes = {}
vim.notify = function(msg, level)
  table.insert(T.notes, { msg = tostring(msg), level = level or vim.log.levels.INFO })
end

function T.notes_text()
  local out = {}
  for _, n in ipairs(T.notes) do
    out[#out + 1] = n.msg
  end
  return table.concat(out, "\n")
end

-- vim.ui.select answers from a queue of substrings: the first item whose
-- displayed text contains the next answer is chosen (no answer: cancel).
-- Answers come asynchronously where Neovim can wait for them inside a server
-- request (>= 0.10), synchronously otherwise, as the built-in select does.
T.selects = {}
T.answers = {}
T.async = vim.fn.has("nvim-0.10") == 1
vim.ui.select = function(items, opts, on_choice)
  opts = opts or {}
  local fmt = opts.format_item or tostring
  local shown = {}
  for i, it in ipairs(items) do
    shown[i] = fmt(it)
  end
  -- What floating windows showed while the question was asked (a preview beside it).
  local floats = {}
  for _, win in ipairs(vim.api.nvim_list_wins()) do
    if vim.api.nvim_win_get_config(win).relative ~= "" then
      floats[#floats + 1] = vim.api.nvim_buf_get_lines(vim.api.nvim_win_get_buf(win), 0, -1, false)
    end
  end
  table.insert(T.selects, { prompt = opts.prompt or "", items = shown, floats = floats })
  local ans = table.remove(T.answers, 1)
  local choice, idx = nil, nil
  if ans then
    for i, s in ipairs(shown) do
      if s:find(ans, 1, true) then
        choice, idx = items[i], i
        break
      end
    end
  end
  if T.async then
    vim.schedule(function()
      on_choice(choice, idx)
    end)
  else
    on_choice(choice, idx)
  end
end

T.inputs = {}
vim.ui.input = function(opts, on_confirm)
  local ans = table.remove(T.inputs, 1)
  vim.schedule(function()
    on_confirm(ans)
  end)
end

-- Every status change, with the panel's status line at that moment.
T.statuses = {}
vim.api.nvim_create_autocmd("User", {
  pattern = "AgentdStatus",
  callback = function()
    local ok, stl = pcall(function()
      return require("agentd.panel").chat_statusline()
    end)
    local input_ok, input = pcall(function()
      return require("agentd.panel").input_statusline()
    end)
    table.insert(T.statuses, {
      status = require("agentd").status(),
      statusline = ok and stl or "",
      input = input_ok and input or "",
      session = require("agentd.chat").current_id(),
    })
  end,
})

-- The methods of the plugin's requests to agentd, in order.
T.requests = {}
do
  local client = require("agentd.client")
  local request = client.request
  client.request = function(method, ...)
    table.insert(T.requests, method)
    return request(method, ...)
  end
end

function T.requested(method)
  for _, m in ipairs(T.requests) do
    if m == method then
      return true
    end
  end
  return false
end

function T.chat()
  return require("agentd.chat")
end

function T.lines()
  local buf = require("agentd.chat_buffer").buf
  if not buf or not vim.api.nvim_buf_is_valid(buf) then
    return {}
  end
  return vim.api.nvim_buf_get_lines(buf, 0, -1, false)
end

function T.has_line(s)
  for _, l in ipairs(T.lines()) do
    if l == s then
      return true
    end
  end
  return false
end

function T.find_line(pat)
  for i, l in ipairs(T.lines()) do
    if l:find(pat) then
      return i, l
    end
  end
  return nil
end

-- Completed assistant messages.
function T.done_count()
  local st = T.chat().state
  local n = 0
  for _, id in ipairs(st.order) do
    local m = st.messages[id].info
    if m.role == "assistant" and m.time and m.time.completed then
      n = n + 1
    end
  end
  return n
end

function T.idle_after(n)
  return T.done_count() >= n and require("agentd").status() == "idle"
end

-- Record every change of the chat buffer: {first, last, new_last, lines}.
T.changes = {}
function T.track()
  T.changes = {}
  local buf = require("agentd.chat_buffer").get_buf()
  vim.api.nvim_buf_attach(buf, false, {
    on_lines = function(_, b, _, first, last, new_last)
      table.insert(T.changes, {
        first = first,
        last = last,
        new_last = new_last,
        lines = vim.api.nvim_buf_get_lines(b, first, new_last, false),
      })
    end,
  })
end

-- The daemon's own record of the current session (or of session `id`).
function T.stored_messages(id)
  id = id or T.chat().current_id()
  local err, res = require("agentd.client").request_sync("session/messages", { sessionId = id }, 10000)
  if err then
    error(vim.inspect(err))
  end
  return res.messages
end

function T.stored_text(role, nth)
  local seen = 0
  local msgs = T.stored_messages()
  for _, m in ipairs(msgs) do
    if m.role == role then
      seen = seen + 1
      if seen == nth then
        local texts = {}
        for _, p in ipairs(m.parts) do
          if p.type == "text" then
            texts[#texts + 1] = p.text
          end
        end
        return texts, m
      end
    end
  end
  return nil
end

-- Put the cursor of the chat window on the first line matching `pat` and make it the
-- current window.
function T.cursor_to(pat)
  local i = T.find_line(pat)
  assert(i, "no line matches " .. pat)
  local win = require("agentd.panel").chat_win
  vim.api.nvim_set_current_win(win)
  vim.api.nvim_win_set_cursor(win, { i, 0 })
end

-- The lines of the first listed buffer whose name starts with `prefix`, with its filetype.
function T.buffer_named(prefix)
  for _, b in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_get_name(b):sub(1, #prefix) == prefix then
      return { lines = vim.api.nvim_buf_get_lines(b, 0, -1, false), filetype = vim.bo[b].filetype, name = vim.api.nvim_buf_get_name(b) }
    end
  end
  return nil
end

-- The chat's lines that begin with `prefix`, in order.
function T.lines_starting(prefix)
  local out = {}
  for _, l in ipairs(T.lines()) do
    if l:sub(1, #prefix) == prefix then
      out[#out + 1] = l
    end
  end
  return out
end

-- Open session `id` as :AgentdSessions does, with the session as agentd has it now.
function T.open(id)
  local err, res = require("agentd.client").request_sync("session/get", { sessionId = id })
  if err then
    error(vim.inspect(err))
  end
  require("agentd.chat").load(res.session)
end

-- Switch chats `count` times, one switch per event-loop turn, as fast as Neovim goes:
-- odd switches open `session`, even ones start a new chat. T.switched counts them.
function T.switch_chats(session, count)
  T.switched = 0
  local timer = vim.loop.new_timer()
  timer:start(0, 1, vim.schedule_wrap(function()
    if T.switched >= count then
      if not timer:is_closing() then
        timer:stop()
        timer:close()
      end
      return
    end
    T.switched = T.switched + 1
    if T.switched % 2 == 1 then
      require("agentd.chat").load(session)
    else
      require("agentd.chat").new()
    end
  end))
end

function T.debug()
  return table.concat(T.lines(), "\n") .. "\n--- notes:\n" .. T.notes_text() .. "\n--- log:\n" .. require("agentd.util").log_text()
end

return T
