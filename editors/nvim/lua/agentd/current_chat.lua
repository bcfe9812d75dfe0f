-- Which chat the panel showed last in each project, kept across Neovim restarts (the
-- `remember_chat` option): the first :AgentdChat of a Neovim reopens it.
--
-- One small file per project, <stdpath("state")>/agentd/current-chat/<sha256 of the
-- project's root>.json (stdpath("data") on Neovim 0.7, which has no "state"), holding
-- {"workspaceRoot": root, "sessionId": id | null} (null: a new chat, not sent yet).
-- A file per project, not one file for all: two Neovims in two projects switching
-- chats at once would otherwise each rewrite the other's entry from a stale copy.
-- It is written only when the user switches chats, never per token, as a temporary
-- file renamed into place: a reader (another Neovim in the same project) sees the old
-- file or the new one, never half of one; the last writer wins.
--
-- Reading never fails: a file that is missing, not JSON, not ours, too big, or a
-- directory is "nothing remembered" (logged, not notified). The file is the editor's
-- memory of a preference, not data: losing it costs a blank chat.
local uv = vim.loop
local util = require("agentd.util")

local M = {}

-- Far above what the file ever holds (a root path and an id); a file bigger than this
-- is not ours, and is not read into memory.
M.MAX_BYTES = 64 * 1024

local function base_dir()
  local ok, dir = pcall(vim.fn.stdpath, "state")
  if not ok or type(dir) ~= "string" or dir == "" then
    dir = vim.fn.stdpath("data")
  end
  return dir .. "/agentd/current-chat"
end

--- The project a root names, as a canonical path (symlinks resolved when it exists).
function M.project(root)
  root = vim.fn.fnamemodify(root, ":p")
  root = uv.fs_realpath(root) or root
  if #root > 1 then
    root = root:gsub("/+$", "")
  end
  return root
end

--- The file that remembers the chat of the project at `root`.
function M.path(root)
  return ("%s/%s.json"):format(base_dir(), vim.fn.sha256(M.project(root)))
end

-- The file's bytes, or nil and why not.
local function read_bytes(path)
  local st = uv.fs_stat(path)
  if not st then
    return nil, "none"
  end
  if st.type ~= "file" then
    return nil, "not a file (" .. tostring(st.type) .. ")"
  end
  if st.size > M.MAX_BYTES then
    return nil, ("too big (%d bytes)"):format(st.size)
  end
  local fd, err = uv.fs_open(path, "r", 438)
  if not fd then
    return nil, tostring(err)
  end
  local data, rerr = uv.fs_read(fd, M.MAX_BYTES + 1, 0)
  uv.fs_close(fd)
  if not data then
    return nil, tostring(rerr)
  end
  return data
end

--- What the project at `root` remembers: the session id (a string), or nil (a new chat,
--- or nothing remembered, or a file that could not be read: logged).
function M.get(root)
  local path = M.path(root)
  local data, why = read_bytes(path)
  if not data then
    if why ~= "none" then
      util.log(("current chat: ignored %s: %s"):format(path, why))
    end
    return nil
  end
  local ok, saved = pcall(vim.json.decode, data)
  if not ok or type(saved) ~= "table" then
    util.log(("current chat: ignored %s: not a JSON object"):format(path))
    return nil
  end
  local id = saved.sessionId
  if type(id) == "string" and id ~= "" and saved.workspaceRoot == M.project(root) then
    return id
  end
  return nil
end

-- Make room for the file where a directory stands in its place: only an empty one is
-- removed (what a user put in a non-empty one is theirs).
local function clear_directory(path)
  local st = uv.fs_stat(path)
  if st and st.type == "directory" then
    uv.fs_rmdir(path)
  end
end

--- Remember `id` (nil: a new chat, not sent yet) for the project at `root`. Returns
--- true, or false and why (also logged: a chat not remembered is not worth a message).
function M.set(root, id)
  local path = M.path(root)
  local text = vim.fn.json_encode({ workspaceRoot = M.project(root), sessionId = id or vim.NIL })
  local tmp = ("%s.%d.tmp"):format(path, vim.fn.getpid())
  local ok, err = pcall(function()
    if vim.fn.isdirectory(base_dir()) == 0 then
      vim.fn.mkdir(base_dir(), "p")
    end
    local fd = assert(uv.fs_open(tmp, "w", 384)) -- 0600
    local wrote, werr = uv.fs_write(fd, text, 0)
    uv.fs_close(fd)
    assert(wrote == #text, werr or "short write")
    clear_directory(path)
    local renamed, rerr = uv.fs_rename(tmp, path)
    assert(renamed, rerr)
  end)
  if not ok then
    pcall(uv.fs_unlink, tmp)
    util.log(("current chat: could not save it to %s: %s"):format(path, tostring(err)))
    return false, tostring(err)
  end
  return true
end

--- Forget the project's chat if it is still `id` (a session that no longer exists): a
--- choice another Neovim made since is left alone (unless made between the two calls).
function M.drop(root, id)
  if M.get(root) == id then
    pcall(uv.fs_unlink, M.path(root))
  end
end

return M
