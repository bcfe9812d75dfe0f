-- The chat panel: a vertical split with the chat buffer on top and a small
-- input buffer below it.
local api = vim.api
local chat = require("agentd.chat")
local chat_buffer = require("agentd.chat_buffer")
local config = require("agentd.config")
local util = require("agentd.util")

local M = {}

M.chat_win = nil
M.input_win = nil
M.input_buf = nil
M.context = nil -- { label, text }: sent with the next prompt

local ns_input = api.nvim_create_namespace("agentd_input")

-- A valid window of the current tab page.
local function valid_win(win)
  return win ~= nil and api.nvim_win_is_valid(win) and api.nvim_win_get_tabpage(win) == api.nvim_get_current_tabpage()
end

function M.is_open()
  return valid_win(M.chat_win) and api.nvim_win_get_buf(M.chat_win) == chat_buffer.buf
end

---------------------------------------------------------------------------
-- Status lines

function M.chat_statusline()
  local session = chat.state.session
  local title = session and session.title
  if type(title) ~= "string" or title == "" then
    title = session and "untitled" or "new chat"
  end
  local st = chat.status()
  local detail = chat.status_detail()
  local status = st
  if st == "retrying" and detail then
    status = "retrying"
    if detail.attempt then
      status = status .. " #" .. tostring(detail.attempt)
    end
    if type(detail.nextRetryAt) == "number" then
      local secs = math.max(0, math.floor((detail.nextRetryAt - util.now_ms()) / 1000 + 0.5))
      status = status .. (" in %ds"):format(secs)
    end
    if type(detail.message) == "string" and detail.message ~= "" then
      status = status .. ": " .. detail.message
    end
  end
  local win = vim.g.statusline_winid
  local width = (win and api.nvim_win_is_valid(win)) and api.nvim_win_get_width(win) or 40
  title = util.shorten(title, math.max(8, width - vim.fn.strdisplaywidth(status) - 4))
  local esc_title = title:gsub("%%", "%%%%")
  local esc_status = status:gsub("%%", "%%%%")
  -- %< truncates the title, never the status.
  return (" %%<%s%%= %s "):format(esc_title, esc_status)
end

function M.input_statusline()
  local keys = config.get().keymaps
  local parts = {}
  if M.context then
    parts[#parts + 1] = "+ " .. M.context.label
  end
  if keys.send then
    parts[#parts + 1] = keys.send .. " send"
  end
  if keys.abort and (chat.status() == "busy" or chat.status() == "retrying") then
    parts[#parts + 1] = keys.abort .. " abort"
  end
  local s = " " .. table.concat(parts, " · ")
  return (s:gsub("%%", "%%%%"))
end

function M.redraw_status()
  if M.is_open() then
    pcall(vim.cmd, "redrawstatus!")
  end
end

---------------------------------------------------------------------------
-- Input buffer

local function input_placeholder()
  local buf = M.input_buf
  if not buf or not api.nvim_buf_is_valid(buf) then
    return
  end
  api.nvim_buf_clear_namespace(buf, ns_input, 0, -1)
  local lines = api.nvim_buf_get_lines(buf, 0, -1, false)
  if #lines == 1 and lines[1] == "" then
    api.nvim_buf_set_extmark(buf, ns_input, 0, 0, {
      virt_text = { { "Ask agentd…", "Comment" } },
      virt_text_pos = "overlay",
    })
  end
end

local function map(buf, modes, lhs, rhs, desc)
  if not lhs or lhs == "" then
    return
  end
  vim.keymap.set(modes, lhs, rhs, { buffer = buf, nowait = true, silent = true, desc = desc })
end

-- The Normal-mode keys both panel buffers have.
local function map_panel_keys(buf)
  local keys = config.get().keymaps
  map(buf, "n", keys.abort, function()
    chat.abort()
  end, "agentd: abort")
  map(buf, "n", keys.close, M.close, "agentd: close the panel")
  map(buf, "n", keys.sessions, function()
    require("agentd.sessions").pick()
  end, "agentd: sessions")
  map(buf, "n", keys.new, function()
    require("agentd").new()
  end, "agentd: new chat")
end

local function get_input_buf()
  if M.input_buf and api.nvim_buf_is_valid(M.input_buf) then
    return M.input_buf
  end
  local buf = api.nvim_create_buf(false, true)
  pcall(api.nvim_buf_set_name, buf, "agentd://input")
  local bo = vim.bo[buf]
  bo.buftype = "nofile"
  bo.bufhidden = "hide"
  bo.swapfile = false
  bo.filetype = "agentd_input"
  M.input_buf = buf
  local keys = config.get().keymaps
  map(buf, "n", keys.send, M.submit, "agentd: send")
  map(buf, "i", keys.send_insert, function()
    vim.cmd("stopinsert")
    M.submit()
  end, "agentd: send")
  map(buf, "i", keys.abort, function()
    if chat.status() == "busy" or chat.status() == "retrying" then
      chat.abort()
    end
    vim.cmd("stopinsert")
  end, "agentd: abort")
  map_panel_keys(buf)
  local group = api.nvim_create_augroup("agentd_input_" .. buf, { clear = true })
  api.nvim_create_autocmd({ "TextChanged", "TextChangedI", "BufEnter" }, {
    group = group,
    buffer = buf,
    callback = input_placeholder,
  })
  input_placeholder()
  return buf
end

--- Send what is in the input buffer.
function M.submit()
  local buf = get_input_buf()
  local lines = api.nvim_buf_get_lines(buf, 0, -1, false)
  while #lines > 0 and lines[#lines]:match("^%s*$") do
    table.remove(lines)
  end
  while #lines > 0 and lines[1]:match("^%s*$") do
    table.remove(lines, 1)
  end
  local text = table.concat(lines, "\n")
  if text == "" then
    return
  end
  api.nvim_buf_set_lines(buf, 0, -1, false, {})
  input_placeholder()
  local ctx = M.context and { M.context.text } or nil
  M.context = nil
  M.scroll_to_end()
  chat.send(text, ctx)
  M.redraw_status()
end

---------------------------------------------------------------------------
-- Windows

local function panel_width()
  local o = config.get().panel
  local w = o.width
  if w <= 1 then
    w = math.floor(vim.o.columns * w)
  end
  w = math.max(w, o.min_width)
  return math.max(10, math.min(w, vim.o.columns - 12))
end

-- What both panel windows share: no gutters or editing decorations, soft wrap.
local function setup_plain_win(wo)
  wo.number = false
  wo.relativenumber = false
  wo.signcolumn = "no"
  wo.foldcolumn = "0"
  wo.colorcolumn = ""
  wo.cursorline = false
  wo.spell = false
  wo.wrap = true
  wo.linebreak = true
  wo.winfixwidth = true
end

local function setup_chat_win(win)
  local o = config.get().panel
  local wo = vim.wo[win]
  setup_plain_win(wo)
  wo.list = false
  wo.breakindent = true
  if o.fold_reasoning then
    wo.foldmethod = "expr"
    wo.foldexpr = "getline(v:lnum)=~#'^" .. chat_buffer.REASONING_PREFIX .. "'"
    wo.foldtext = "'"
      .. chat_buffer.REASONING_PREFIX
      .. "▸ reasoning, '.(v:foldend-v:foldstart).(v:foldend-v:foldstart==1?' line':' lines').' (zo)'"
    wo.foldlevel = 0
    wo.foldenable = true
    wo.foldminlines = 0
  else
    wo.foldenable = false
  end
  wo.statusline = "%!v:lua.require'agentd.panel'.chat_statusline()"
  pcall(function()
    wo.fillchars = "fold: ,eob: "
  end)
end

local function setup_input_win(win)
  local wo = vim.wo[win]
  setup_plain_win(wo)
  wo.winfixheight = true
  wo.statusline = "%!v:lua.require'agentd.panel'.input_statusline()"
  pcall(function()
    wo.fillchars = "eob: "
  end)
end

local function set_chat_keymaps(buf)
  if vim.b[buf].agentd_mapped then
    return
  end
  vim.b[buf].agentd_mapped = true
  map_panel_keys(buf)
  local keys = config.get().keymaps
  local history = require("agentd.history")
  map(buf, "n", keys.fork, function()
    history.fork()
  end, "agentd: fork at this message")
  map(buf, "n", keys.revert, function()
    history.revert()
  end, "agentd: revert to this message")
  map(buf, "n", keys.unrevert, function()
    history.unrevert()
  end, "agentd: undo the latest revert")
  map(buf, "n", keys.export, function()
    history.export("markdown")
  end, "agentd: export as Markdown")
  for _, k in ipairs({ "i", "a", "o", "I", "A", "O" }) do
    map(buf, "n", k, function()
      M.focus_input(true)
    end, "agentd: write a prompt")
  end
end

--- Open the panel (or find it). opts.focus: "input" | "chat" | false;
--- opts.insert: start Insert mode in the input.
function M.open(opts)
  opts = opts or {}
  local buf = chat_buffer.get_buf()
  set_chat_keymaps(buf)
  local ibuf = get_input_buf()
  local origin = api.nvim_get_current_win()
  local tools = require("agentd.tools")
  tools.track()
  -- The new split shows the current buffer for a moment: keep it from
  -- becoming "the last editor window".
  local last_editor_win = tools.last_win

  if not M.is_open() then
    if valid_win(M.input_win) and #api.nvim_tabpage_list_wins(0) > 1 then
      pcall(api.nvim_win_close, M.input_win, true)
    end
    local pos = config.get().panel.position == "left" and "topleft" or "botright"
    vim.cmd(pos .. " " .. panel_width() .. "vsplit")
    M.chat_win = api.nvim_get_current_win()
    api.nvim_win_set_buf(M.chat_win, buf)
    setup_chat_win(M.chat_win)
    M.input_win = nil
    -- Start at the end.
    pcall(api.nvim_win_set_cursor, M.chat_win, { api.nvim_buf_line_count(buf), 0 })
  end
  if not valid_win(M.input_win) or api.nvim_win_get_buf(M.input_win) ~= ibuf then
    api.nvim_set_current_win(M.chat_win)
    vim.cmd("belowright " .. config.get().panel.input_height .. "split")
    M.input_win = api.nvim_get_current_win()
    api.nvim_win_set_buf(M.input_win, ibuf)
    setup_input_win(M.input_win)
    -- Closing the conversation window closes the input area too.
    local chat_win, input_win = M.chat_win, M.input_win
    api.nvim_create_autocmd("WinClosed", {
      group = api.nvim_create_augroup("agentd_panel", { clear = true }),
      pattern = tostring(chat_win),
      once = true,
      callback = function()
        vim.schedule(function()
          if api.nvim_win_is_valid(input_win) and #api.nvim_tabpage_list_wins(api.nvim_win_get_tabpage(input_win)) > 1 then
            pcall(api.nvim_win_close, input_win, false)
          end
        end)
      end,
    })
  end

  tools.last_win = last_editor_win

  local focus = opts.focus
  if focus == nil then
    focus = "input"
  end
  if focus == "input" then
    api.nvim_set_current_win(M.input_win)
    if opts.insert then
      vim.cmd("startinsert!")
    end
  elseif focus == "chat" then
    api.nvim_set_current_win(M.chat_win)
  elseif valid_win(origin) then
    api.nvim_set_current_win(origin)
  end
  M.redraw_status()
end

function M.focus_input(insert)
  M.open({ focus = "input", insert = insert })
end

function M.close()
  for _, win in ipairs({ M.input_win, M.chat_win }) do
    if valid_win(win) then
      if #api.nvim_tabpage_list_wins(api.nvim_win_get_tabpage(win)) == 1 and #api.nvim_list_tabpages() == 1 then
        -- The last window: keep Neovim open on an empty buffer.
        api.nvim_win_call(win, function()
          vim.cmd("enew")
        end)
      else
        pcall(api.nvim_win_close, win, false)
      end
    end
  end
  M.chat_win, M.input_win = nil, nil
end

function M.scroll_to_end()
  if M.is_open() then
    pcall(api.nvim_win_set_cursor, M.chat_win, { api.nvim_buf_line_count(chat_buffer.buf), 0 })
  end
end

function M.set_context(ctx)
  M.context = ctx
  M.redraw_status()
end

return M
