-- Editor-side tools, offered to the model as `clientTools` with every
-- session/chat and run here when agentd sends `tool/execute`.
local api = vim.api
local config = require("agentd.config")
local util = require("agentd.util")

local M = {}

M.last_win = nil -- the last window the user was in that is not the panel

local function is_panel_buf(buf)
  local ok, ft = pcall(function()
    return vim.bo[buf].filetype
  end)
  return ok and (ft == "agentd" or ft == "agentd_input")
end

local function is_normal_win(win)
  if not api.nvim_win_is_valid(win) then
    return false
  end
  if api.nvim_win_get_config(win).relative ~= "" then
    return false
  end
  local buf = api.nvim_win_get_buf(win)
  return not is_panel_buf(buf) and vim.bo[buf].buftype ~= "terminal" and vim.bo[buf].buftype ~= "prompt"
end

function M.track()
  local win = api.nvim_get_current_win()
  if is_normal_win(win) then
    M.last_win = win
  end
end

--- The window editor_selection and friends look at.
function M.source_window()
  if M.last_win and is_normal_win(M.last_win) then
    return M.last_win
  end
  local cur = api.nvim_get_current_win()
  if is_normal_win(cur) then
    return cur
  end
  for _, win in ipairs(api.nvim_tabpage_list_wins(0)) do
    if is_normal_win(win) then
      return win
    end
  end
  return nil
end

local function display_name(buf)
  local name = api.nvim_buf_get_name(buf)
  if name == "" then
    return "[No Name " .. buf .. "]"
  end
  return vim.fn.fnamemodify(name, ":~:.")
end

local function lines_text(s, e)
  if e <= s then
    return ("line %d"):format(s)
  end
  return ("lines %d-%d"):format(s, e)
end

local function fence_for(text)
  local fence = "```"
  while text:find(fence, 1, true) do
    fence = fence .. "`"
  end
  return fence
end

local function fenced(text, ft)
  local f = fence_for(text)
  return f .. (ft or "") .. "\n" .. text .. "\n" .. f
end

---------------------------------------------------------------------------
-- Selections

-- Byte index of the last byte of the character starting at byte `col` (1-based).
local function char_end(line, col)
  if col > #line then
    return #line
  end
  local b = line:byte(col)
  local len = 1
  if b and b >= 0xF0 then
    len = 4
  elseif b and b >= 0xE0 then
    len = 3
  elseif b and b >= 0xC0 then
    len = 2
  end
  return math.min(#line, col + len - 1)
end

--- Text of a selection in buf between (l1, c1) and (l2, c2) (1-based, bytes),
--- for mode "v", "V" or "\22".
function M.region_text(buf, l1, c1, l2, c2, mode)
  if l1 > l2 or (l1 == l2 and c1 > c2) then
    l1, c1, l2, c2 = l2, c2, l1, c1
  end
  local lines = api.nvim_buf_get_lines(buf, l1 - 1, l2, false)
  if #lines == 0 then
    return ""
  end
  if mode == "V" then
    return table.concat(lines, "\n")
  elseif mode == "\22" then
    local a, b = math.min(c1, c2), math.max(c1, c2)
    local out = {}
    for i, l in ipairs(lines) do
      out[i] = l:sub(a, char_end(l, b))
    end
    return table.concat(out, "\n")
  end
  if #lines == 1 then
    return lines[1]:sub(c1, char_end(lines[1], c2))
  end
  lines[1] = lines[1]:sub(c1)
  lines[#lines] = lines[#lines]:sub(1, char_end(lines[#lines], c2))
  return table.concat(lines, "\n")
end

--- The selection of window win: live if it is in Visual mode, else its
--- buffer's last Visual selection if the cursor is still on it. Returns
--- {buf, l1, c1, l2, c2, mode, text} or nil.
function M.selection(win)
  local buf = api.nvim_win_get_buf(win)
  local mode = api.nvim_get_mode().mode
  local l1, c1, l2, c2, vmode
  if win == api.nvim_get_current_win() and (mode == "v" or mode == "V" or mode == "\22") then
    local v = vim.fn.getpos("v")
    local cur = vim.fn.getpos(".")
    l1, c1, l2, c2, vmode = v[2], v[3], cur[2], cur[3], mode
  else
    local s = api.nvim_buf_get_mark(buf, "<")
    local e = api.nvim_buf_get_mark(buf, ">")
    if s[1] == 0 or e[1] == 0 then
      return nil
    end
    local cur = api.nvim_win_get_cursor(win)
    if cur[1] < s[1] or cur[1] > e[1] then
      return nil -- the cursor left it: it is no longer the selection
    end
    l1, c1, l2, c2 = s[1], s[2] + 1, e[1], e[2] + 1
    vmode = vim.fn.visualmode()
    if vmode == "" then
      vmode = "v"
    end
  end
  if l1 > l2 or (l1 == l2 and c1 > c2) then
    l1, c1, l2, c2 = l2, c2, l1, c1
  end
  local text = M.region_text(buf, l1, c1, l2, c2, vmode)
  return { buf = buf, l1 = l1, c1 = c1, l2 = l2, c2 = c2, mode = vmode, text = text }
end

local MODE_NAME = { v = "characterwise", V = "linewise", ["\22"] = "blockwise" }

--- Text that describes a selection, used for tool output and prompt context.
function M.describe_selection(sel)
  local ft = vim.bo[sel.buf].filetype
  local where = lines_text(sel.l1, sel.l2)
  return ("Selection from %s, %s (%s):\n%s"):format(
    display_name(sel.buf),
    where,
    MODE_NAME[sel.mode] or "characterwise",
    fenced(sel.text, ft)
  )
end

---------------------------------------------------------------------------
-- The tools

local function find_buffer(input)
  if type(input.bufnr) == "number" then
    if api.nvim_buf_is_valid(input.bufnr) then
      return input.bufnr
    end
    return nil, ("no buffer %d"):format(input.bufnr)
  end
  local path = input.path or input.buffer or input.file
  if type(path) == "number" then
    return find_buffer({ bufnr = path })
  end
  if type(path) ~= "string" or path == "" then
    local win = M.source_window()
    if win then
      return api.nvim_win_get_buf(win)
    end
    return nil, "no editor window"
  end
  local want = vim.fn.fnamemodify(vim.fn.expand(path), ":p")
  for _, b in ipairs(api.nvim_list_bufs()) do
    local name = api.nvim_buf_get_name(b)
    if name ~= "" and (name == want or vim.fn.fnamemodify(name, ":p") == want) then
      return b
    end
  end
  -- A name as open_buffers shows it ("[No Name 3]") or a tail match.
  local n = path:match("^%[No Name (%d+)%]$")
  if n and api.nvim_buf_is_valid(tonumber(n)) then
    return tonumber(n)
  end
  return nil, ("no buffer named %s"):format(path)
end

local T = {}

T.editor_selection = {
  description = "The user's current selection in the editor (file, line range and text), "
    .. "or, when nothing is selected, the lines around the cursor of the window the user "
    .. "was last working in.",
  parameters = { type = "object", properties = vim.empty_dict() },
  run = function()
    local win = M.source_window()
    if not win then
      return { output = "No editor window is open.", isError = true }
    end
    local buf = api.nvim_win_get_buf(win)
    local sel = M.selection(win)
    local ft = vim.bo[buf].filetype
    if sel and sel.text ~= "" then
      return {
        title = ("%s:%d-%d"):format(display_name(buf), sel.l1, sel.l2),
        output = M.describe_selection(sel),
        metadata = {
          path = api.nvim_buf_get_name(buf),
          startLine = sel.l1,
          startCol = sel.c1,
          endLine = sel.l2,
          endCol = sel.c2,
          mode = MODE_NAME[sel.mode],
          filetype = ft,
          selection = true,
        },
      }
    end
    local cur = api.nvim_win_get_cursor(win)
    local n = config.get().context_lines
    local count = api.nvim_buf_line_count(buf)
    local first = math.max(1, cur[1] - math.floor(n / 2))
    local last = math.min(count, first + n - 1)
    local lines = api.nvim_buf_get_lines(buf, first - 1, last, false)
    local text = table.concat(lines, "\n")
    return {
      title = ("%s:%d (cursor)"):format(display_name(buf), cur[1]),
      output = ("No selection. Cursor in %s at line %d, column %d; lines %d-%d:\n%s"):format(
        display_name(buf),
        cur[1],
        cur[2] + 1,
        first,
        last,
        fenced(text, ft)
      ),
      metadata = {
        path = api.nvim_buf_get_name(buf),
        cursorLine = cur[1],
        cursorCol = cur[2] + 1,
        startLine = first,
        endLine = last,
        filetype = ft,
        selection = false,
      },
    }
  end,
}

T.open_buffers = {
  description = "The buffers open in the editor: name, whether they have unsaved changes, "
    .. "file type and line count.",
  parameters = { type = "object", properties = vim.empty_dict() },
  run = function()
    local out, meta = {}, {}
    local src = M.source_window()
    local cur = src and api.nvim_win_get_buf(src)
    for _, b in ipairs(api.nvim_list_bufs()) do
      if vim.bo[b].buflisted and not is_panel_buf(b) then
        local item = {
          bufnr = b,
          name = display_name(b),
          path = api.nvim_buf_get_name(b),
          modified = vim.bo[b].modified,
          filetype = vim.bo[b].filetype,
          lines = api.nvim_buf_is_loaded(b) and api.nvim_buf_line_count(b) or nil,
          current = b == cur,
        }
        meta[#meta + 1] = item
        local flags = {}
        if item.modified then
          flags[#flags + 1] = "modified"
        end
        if item.current then
          flags[#flags + 1] = "current"
        end
        out[#out + 1] = ("%d %s%s%s"):format(
          b,
          item.name,
          item.filetype ~= "" and (" (" .. item.filetype .. ")") or "",
          #flags > 0 and (" [" .. table.concat(flags, ", ") .. "]") or ""
        )
      end
    end
    if #out == 0 then
      return { output = "No buffers are open.", metadata = { buffers = {} } }
    end
    return { output = table.concat(out, "\n"), title = #out .. " buffers", metadata = { buffers = meta } }
  end,
}

T.read_buffer = {
  description = "The current text of an open buffer, unsaved changes included. "
    .. "Without path or bufnr: the buffer the user was last working in.",
  parameters = {
    type = "object",
    properties = {
      path = { type = "string", description = "File path or buffer name (as open_buffers lists it)." },
      bufnr = { type = "integer", description = "Buffer number (as open_buffers lists it)." },
      startLine = { type = "integer", description = "First line, 1-based (default 1)." },
      endLine = { type = "integer", description = "Last line, inclusive (default: the last line)." },
    },
  },
  run = function(input)
    local buf, err = find_buffer(input)
    if not buf then
      return { output = err, isError = true }
    end
    if not api.nvim_buf_is_loaded(buf) then
      vim.fn.bufload(buf)
    end
    local count = api.nvim_buf_line_count(buf)
    local s = math.max(1, tonumber(input.startLine) or 1)
    local e = math.min(count, tonumber(input.endLine) or count)
    local lines = api.nvim_buf_get_lines(buf, s - 1, e, false)
    return {
      title = ("%s:%d-%d"):format(display_name(buf), s, e),
      output = table.concat(lines, "\n"),
      metadata = {
        path = api.nvim_buf_get_name(buf),
        bufnr = buf,
        modified = vim.bo[buf].modified,
        startLine = s,
        endLine = e,
        lineCount = count,
      },
    }
  end,
}

-- A floating preview of an edit, shown while the user decides.
local function preview(buf, s, e, new_lines)
  local old = table.concat(api.nvim_buf_get_lines(buf, s - 1, e, false), "\n") .. "\n"
  local new = table.concat(new_lines, "\n") .. "\n"
  local ok, diff = pcall(vim.diff, old, new, { result_type = "unified", ctxlen = 3 })
  if not ok or type(diff) ~= "string" then
    return nil
  end
  local lines = { ("%s, %s:"):format(display_name(buf), e < s and ("before line " .. s) or lines_text(s, e)) }
  for _, l in ipairs(util.split_lines(diff)) do
    if l ~= "" and not l:match("^@@") then
      lines[#lines + 1] = l
    end
  end
  local pbuf = api.nvim_create_buf(false, true)
  api.nvim_buf_set_lines(pbuf, 0, -1, false, lines)
  vim.bo[pbuf].filetype = "diff"
  vim.bo[pbuf].bufhidden = "wipe"
  local width = util.float_width(lines)
  local height = math.min(#lines, math.max(3, vim.o.lines - 8))
  local wok, win = pcall(api.nvim_open_win, pbuf, false, {
    relative = "editor",
    row = 1,
    col = math.max(0, vim.o.columns - width - 2),
    width = width,
    height = height,
    style = "minimal",
    border = "single",
    focusable = false,
  })
  if not wok then
    return nil
  end
  vim.cmd("redraw")
  return win
end

T.apply_edit = {
  description = "Replace lines startLine..endLine (1-based, inclusive) of an open buffer "
    .. "with newText, after the user confirms. endLine = startLine - 1 inserts before "
    .. "startLine. The buffer is changed, not saved. Give oldText (the lines being "
    .. "replaced) to refuse the edit if the buffer changed meanwhile.",
  parameters = {
    type = "object",
    properties = {
      path = { type = "string", description = "File path or buffer name." },
      bufnr = { type = "integer", description = "Buffer number (alternative to path)." },
      startLine = { type = "integer", description = "First line to replace, 1-based." },
      endLine = { type = "integer", description = "Last line to replace, inclusive." },
      newText = { type = "string", description = "The replacement text (lines separated by \\n)." },
      oldText = { type = "string", description = "Optional: the current text of those lines." },
    },
    required = { "startLine", "endLine", "newText" },
  },
  run = function(input)
    local buf, err = find_buffer(input)
    if not buf and type(input.path) == "string" and input.path ~= "" then
      buf = vim.fn.bufadd(vim.fn.expand(input.path))
      err = nil
    end
    if not buf then
      return { output = err, isError = true }
    end
    if not api.nvim_buf_is_loaded(buf) then
      vim.fn.bufload(buf)
    end
    local s, e = tonumber(input.startLine), tonumber(input.endLine)
    local count = api.nvim_buf_line_count(buf)
    if not s or not e or s < 1 or e < s - 1 or e > count or s > count + 1 then
      return {
        output = ("invalid range %s-%s: the buffer has %d lines"):format(
          tostring(input.startLine),
          tostring(input.endLine),
          count
        ),
        isError = true,
      }
    end
    if type(input.newText) ~= "string" then
      return { output = "newText must be a string", isError = true }
    end
    if not vim.bo[buf].modifiable then
      return { output = display_name(buf) .. " is not modifiable", isError = true }
    end
    if type(input.oldText) == "string" then
      local cur = table.concat(api.nvim_buf_get_lines(buf, s - 1, e, false), "\n")
      if cur:gsub("\n$", "") ~= input.oldText:gsub("\n$", "") then
        return {
          output = ("lines %d-%d of %s no longer match oldText; read_buffer again"):format(s, e, display_name(buf)),
          isError = true,
        }
      end
    end
    local text = input.newText
    if text:sub(-1) == "\n" then
      text = text:sub(1, -2)
    end
    local new_lines = util.split_lines(text)
    if input.newText == "" then
      new_lines = {}
    end
    local what = ("%s %s (-%d +%d)"):format(
      display_name(buf),
      e < s and ("before line " .. s) or lines_text(s, e),
      e - s + 1,
      #new_lines
    )
    if config.get().confirm_edits then
      local pwin = preview(buf, s, e, new_lines)
      local choice = util.select({ "Apply", "Reject" }, { prompt = "agentd: apply edit to " .. what .. "?" })
      if pwin and api.nvim_win_is_valid(pwin) then
        pcall(api.nvim_win_close, pwin, true)
      end
      if choice ~= "Apply" then
        return { output = "The user rejected the edit to " .. what .. ".", isError = true }
      end
      -- The buffer may have changed while the user was deciding.
      if api.nvim_buf_line_count(buf) < e then
        return { output = "the buffer changed while waiting; read it again", isError = true }
      end
    end
    api.nvim_buf_set_lines(buf, s - 1, e, false, new_lines)
    return {
      title = what,
      output = ("Applied to %s: %d line%s replaced with %d line%s%s. The buffer is modified, not saved."):format(
        display_name(buf),
        e - s + 1,
        e - s + 1 == 1 and "" or "s",
        #new_lines,
        #new_lines == 1 and "" or "s",
        #new_lines > 0 and (" (now " .. lines_text(s, s + #new_lines - 1) .. ")") or ""
      ),
      metadata = { path = api.nvim_buf_get_name(buf), bufnr = buf, startLine = s, endLine = s + #new_lines - 1 },
    }
  end,
}

M.tools = T
M.ORDER = { "editor_selection", "open_buffers", "read_buffer", "apply_edit" }

local function enabled(name)
  local ct = config.get().client_tools
  if ct == true then
    return true
  elseif type(ct) == "table" then
    for _, n in ipairs(ct) do
      if n == name then
        return true
      end
    end
  end
  return false
end

--- The clientTools list for session/chat.
function M.definitions()
  local out = {}
  for _, name in ipairs(M.ORDER) do
    if enabled(name) then
      local t = T[name]
      out[#out + 1] = { name = name, description = t.description, parameters = t.parameters }
    end
  end
  return out
end

--- Handle tool/execute.
function M.execute(params)
  local name = params.name
  local t = T[name]
  if not t or not enabled(name) then
    return { output = ("unknown editor tool %q"):format(tostring(name)), isError = true }
  end
  local input = params.input
  if type(input) ~= "table" or input == vim.NIL then
    input = {}
  end
  local ok, res = pcall(t.run, input, params)
  if not ok then
    util.log("tool " .. name .. " failed: " .. tostring(res))
    return { output = ("%s failed: %s"):format(name, tostring(res)), isError = true }
  end
  if res.isError == nil then
    res.isError = false
  end
  return res
end

---------------------------------------------------------------------------
-- permission/request

function M.permission(params)
  local tool = tostring(params.tool or "tool")
  local title = params.title
  if type(title) ~= "string" or title == "" then
    local okj, s = pcall(vim.json.encode, params.input or vim.empty_dict())
    title = okj and s or ""
  end
  title = (title:gsub("^rerun in [%w-]+: ", "")) -- a rerun's title; the prompt says it
  local what = tool
  if type(params.mcpServer) == "string" then
    -- An MCP tool: the prompt names its server and shows the arguments.
    what = ("%s (MCP server %s)"):format(tool, params.mcpServer)
    local okj, s = pcall(vim.json.encode, params.input or vim.empty_dict())
    title = (okj and s ~= "{}" and s ~= "[]") and s or ""
  elseif title:sub(1, #tool + 1) == tool .. " " then
    title = title:sub(#tool + 2)
  end
  local prompt = ("agentd wants to run %s"):format(what)
  local sb = params.sandbox
  if type(sb) == "table" and type(sb.mode) == "string" then
    -- A command: say how it would run.
    local where = sb.mode == "full-access" and "with full access (no sandbox)" or ("in the %s sandbox"):format(sb.mode)
    if type(sb.rerunOf) == "string" then
      prompt = ("The %s sandbox blocked %s. Rerun %s %s"):format(
        sb.rerunOf, tostring(sb.blocked or "it"), what, where)
    elseif type(sb.fallback) == "string" then
      prompt = ("agentd wants to run %s UNCONFINED (no sandbox here: %s)"):format(what, util.shorten(sb.fallback, 80))
    else
      prompt = ("agentd wants to run %s %s%s"):format(
        what, where, (sb.mode ~= "full-access" and sb.network ~= true) and ", no network" or "")
    end
  end
  if title ~= "" then
    prompt = prompt .. ": " .. util.shorten(title, 120)
  end
  local items = { "Allow once", "Allow always", "Reject", "Reject always" }
  local outcome_of = {
    ["Allow once"] = "allow_once",
    ["Allow always"] = "allow_always",
    ["Reject"] = "reject_once",
    ["Reject always"] = "reject_always",
  }
  local choice = util.select(items, {
    prompt = prompt,
    kind = "agentd_permission",
  })
  return { outcome = outcome_of[choice] or "reject_once" }
end

return M
