-- The chat buffer as an ordered list of regions (a message header, a part,
-- a footer...). Each region is a run of whole lines whose first line carries
-- an extmark, so regions can grow (streamed text) or be rewritten (a tool
-- line's state) in place, without redrawing the rest of the buffer.
local api = vim.api
local util = require("agentd.util")

local M = {}

M.ns = api.nvim_create_namespace("agentd_regions")
M.ns_hl = api.nvim_create_namespace("agentd_highlights")

local View = {}
View.__index = View

function M.new(buf)
  return setmetatable({ buf = buf, regions = {} }, View)
end

function View:valid()
  return self.buf and api.nvim_buf_is_valid(self.buf)
end

function View:row(r)
  local pos = api.nvim_buf_get_extmark_by_id(self.buf, M.ns, r.mark, {})
  return pos[1]
end

local function index_of(list, r)
  for i = #list, 1, -1 do
    if list[i] == r then
      return i
    end
  end
  return nil
end

-- Windows showing the buffer whose cursor sits on the last line: they follow
-- the end of the buffer as it grows.
function View:followers()
  if not require("agentd.config").get().panel.follow then
    return nil
  end
  local last = api.nvim_buf_line_count(self.buf)
  local out = nil
  for _, win in ipairs(vim.fn.win_findbuf(self.buf)) do
    if api.nvim_win_get_cursor(win)[1] >= last then
      out = out or {}
      out[#out + 1] = win
    end
  end
  return out
end

function View:follow(wins)
  if not wins then
    return
  end
  local last = api.nvim_buf_line_count(self.buf)
  for _, win in ipairs(wins) do
    if api.nvim_win_is_valid(win) then
      pcall(api.nvim_win_set_cursor, win, { last, 0 })
    end
  end
end

function View:edit(fn)
  if not self:valid() then
    return
  end
  local wins = self:followers()
  local bo = vim.bo[self.buf]
  bo.modifiable = true
  local ok, err = pcall(fn)
  bo.modifiable = false
  bo.modified = false
  if not ok then
    util.log("render error: " .. tostring(err))
  end
  self:follow(wins)
end

-- Put the next region's mark back where it belongs after r changed size
-- (a mark exactly at an edit boundary may or may not have moved).
function View:fix_next(r)
  local i = index_of(self.regions, r)
  if not i then
    return
  end
  local nxt = self.regions[i + 1]
  if nxt then
    local want = self:row(r) + r.n
    if self:row(nxt) ~= want then
      api.nvim_buf_set_extmark(self.buf, M.ns, want, 0, { id = nxt.mark, right_gravity = false })
    end
  end
end

--- Insert a region of `lines` after region `after` (nil: at the end).
function View:insert(after, lines, opts)
  opts = opts or {}
  local r = { n = #lines, prefix = opts.prefix or "", kind = opts.kind }
  self:edit(function()
    local row, idx
    local count = api.nvim_buf_line_count(self.buf)
    if after then
      row = self:row(after) + after.n
      idx = index_of(self.regions, after) + 1
    else
      row = count
      idx = #self.regions + 1
    end
    if #self.regions == 0 then
      -- Fresh buffer: replace its one empty line.
      api.nvim_buf_set_lines(self.buf, 0, -1, false, lines)
      row = 0
    else
      api.nvim_buf_set_lines(self.buf, row, row, false, lines)
    end
    r.mark = api.nvim_buf_set_extmark(self.buf, M.ns, row, 0, { right_gravity = false })
    table.insert(self.regions, idx, r)
    self:fix_next(r)
  end)
  return r
end

--- Append text to the end of region r (new lines get r.prefix).
function View:append(r, text)
  if text == nil or text == "" then
    return
  end
  self:edit(function()
    local segs = util.split_lines(text)
    if r.prefix ~= "" then
      for i = 2, #segs do
        segs[i] = r.prefix .. segs[i]
      end
    end
    local last = self:row(r) + r.n - 1
    local line = api.nvim_buf_get_lines(self.buf, last, last + 1, false)[1] or ""
    local col = #line
    api.nvim_buf_set_text(self.buf, last, col, last, col, segs)
    r.n = r.n + #segs - 1
    if #segs > 1 then
      self:fix_next(r)
    end
  end)
end

--- Replace the lines of region r.
function View:replace(r, lines)
  self:edit(function()
    local row = self:row(r)
    local old = api.nvim_buf_get_lines(self.buf, row, row + r.n, false)
    if #old == #lines then
      -- Rewrite only the lines that differ (a tool's state change touches one line).
      for i = 1, #lines do
        if old[i] ~= lines[i] then
          api.nvim_buf_set_text(self.buf, row + i - 1, 0, row + i - 1, #old[i], { lines[i] })
        end
      end
    else
      api.nvim_buf_set_lines(self.buf, row, row + r.n, false, lines)
      r.n = #lines
      api.nvim_buf_set_extmark(self.buf, M.ns, row, 0, { id = r.mark, right_gravity = false })
      self:fix_next(r)
    end
  end)
end

function View:remove(r)
  local i = index_of(self.regions, r)
  if not i then
    return
  end
  self:edit(function()
    local row = self:row(r)
    if #self.regions == 1 then
      api.nvim_buf_set_lines(self.buf, 0, -1, false, {})
    else
      api.nvim_buf_set_lines(self.buf, row, row + r.n, false, {})
    end
    api.nvim_buf_del_extmark(self.buf, M.ns, r.mark)
    table.remove(self.regions, i)
    local nxt = self.regions[i]
    if nxt and self:row(nxt) ~= row then
      api.nvim_buf_set_extmark(self.buf, M.ns, row, 0, { id = nxt.mark, right_gravity = false })
    end
  end)
end

function View:clear()
  self:edit(function()
    api.nvim_buf_clear_namespace(self.buf, M.ns, 0, -1)
    api.nvim_buf_clear_namespace(self.buf, M.ns_hl, 0, -1)
    api.nvim_buf_set_lines(self.buf, 0, -1, false, {})
  end)
  self.regions = {}
end

return M
