-- The agentd daemon process, driven by Neovim's own LSP RPC client
-- (vim.lsp.rpc.start): this plugin never writes JSON-RPC framing itself.
--
-- Started on first use, shut down with `shutdown` then `exit` when Neovim exits. `agentd`
-- attaches to the user's shared daemon (one for every editor) unless configured not to:
-- then the runs this Neovim started go on when it quits (initialize's `daemon` says which).
local config = require("agentd.config")
local util = require("agentd.util")

local M = {}

M.VERSION = "0.1.0"

-- "off" | "starting" | "ready" | "stopping"
M.state = "off"
-- initialize's result while connected (serverInfo, daemon = { shared, pid, onDisconnect,
-- connections }), else nil.
M.info = nil
-- Called (on the main loop) whenever M.state changes.
M.on_state = nil

local function set_state(st)
  if M.state == st then
    return
  end
  M.state = st
  if M.on_state then
    vim.schedule(M.on_state)
  end
end
-- Set by init.lua: { notification = fn(method, params),
--                    request = fn(method, params) -> result, err,
--                    exit = fn(code, signal, expected) }
M.handlers = {}

local rpc = nil -- the vim.lsp.rpc client object
local generation = 0 -- bumps on each start, so late callbacks of an old daemon are dropped
local waiters = {} -- callbacks waiting for initialize
local pending = {} -- our request key -> callback (failed on exit)
local pending_key = 0
local exited = true
local expected_exit = false

local NOT_RUNNING = { code = -32099, message = "agentd is not running" }

local function fail_all(err)
  local ws = waiters
  waiters = {}
  for _, w in ipairs(ws) do
    pcall(w, err)
  end
  local ps = pending
  pending = {}
  for _, cb in pairs(ps) do
    pcall(cb, err, nil)
  end
end

--- Environment added to Neovim's own for the daemon.
function M.spawn_env()
  local o = config.get()
  local env = {}
  if o.model then
    env.AGENTD_MODEL = o.model
  end
  if o.data_dir then
    env.AGENTD_DATA_DIR = vim.fn.expand(o.data_dir)
  end
  if o.state_dir then
    env.AGENTD_STATE_DIR = vim.fn.expand(o.state_dir)
  end
  for k, v in pairs(o.env or {}) do
    env[k] = tostring(v)
  end
  return env
end

-- The clone of the agentd repository this plugin was loaded from (plugin managers clone
-- the whole repository; the plugin is its editors/nvim), or nil.
local function repository_root()
  local source = debug.getinfo(1, "S").source
  if source:sub(1, 1) ~= "@" then
    return nil
  end
  -- <root>/editors/nvim/lua/agentd/client.lua
  local root = vim.fn.fnamemodify(source:sub(2), ":p:h:h:h:h:h")
  if vim.fn.filereadable(root .. "/pyproject.toml") == 1 then
    return root
  end
  return nil
end

-- agentd is not on PyPI yet, and `agentd` there is another project: it is installed from
-- a clone of its repository.
local function not_found_message(exe)
  local root = repository_root()
  local install = "Install it from a clone of the agentd repository: `pip install .` in the clone"
  if root then
    install = ("Install it from this plugin's clone of the agentd repository: `cd %s && pip install .`"):format(
      vim.fn.shellescape(root)
    )
  end
  return table.concat({
    ("agentd not found: `%s` is not an executable on $PATH."):format(exe),
    install .. " (it is not on PyPI: `agentd` there is another project),",
    'or point the plugin at it: require("agentd").setup({ cmd = { "/path/to/agentd" } })',
  }, "\n")
end

-- vim.lsp.rpc.start changed its signature in Neovim 0.10:
--   <= 0.9: start(cmd: string, cmd_args: string[], dispatchers, extra_spawn_params)
--   >= 0.10: start(cmd: string[], dispatchers, extra_spawn_params)
local function rpc_start(cmd, dispatchers, extra)
  local lsp_rpc = require("vim.lsp.rpc")
  if vim.fn.has("nvim-0.10") == 1 then
    return lsp_rpc.start(cmd, dispatchers, extra)
  end
  local args = {}
  for i = 2, #cmd do
    args[#args + 1] = cmd[i]
  end
  return lsp_rpc.start(cmd[1], args, dispatchers, extra)
end

local function is_alive()
  if not rpc or exited then
    return false
  end
  if rpc.is_closing then
    return not rpc.is_closing()
  end
  return rpc.handle ~= nil and not rpc.handle:is_closing()
end

local function workspace_root()
  local root = config.get().workspace_root
  if type(root) == "function" then
    root = root()
  end
  return root or vim.fn.getcwd()
end
M.workspace_root = workspace_root

local function initialize_params()
  local root = workspace_root()
  local caps = { clientTools = true, permissionRequests = true }
  return {
    processId = vim.fn.getpid(),
    clientInfo = { name = "agentd.nvim", version = M.VERSION },
    protocolVersion = 1,
    capabilities = caps,
    workspaceRoot = root,
    rootUri = vim.uri_from_fname(root),
    -- The same flags again, for servers that read them from initializationOptions
    -- (as LSP clients that force their own capabilities structure need).
    initializationOptions = { clientTools = true, permissionRequests = true, capabilities = caps },
  }
end

--- Start the daemon if it is not running. cb(err) once it is initialized.
function M.ensure(cb)
  cb = cb or function() end
  if M.state == "ready" and is_alive() then
    return cb(nil)
  end
  table.insert(waiters, cb)
  if M.state == "starting" then
    return
  end
  M.start()
end

function M.start()
  local o = config.get()
  local cmd = vim.deepcopy(o.cmd)
  cmd[1] = vim.fn.expand(cmd[1])
  if vim.fn.executable(cmd[1]) ~= 1 then
    set_state("off")
    util.notify(not_found_message(cmd[1]), vim.log.levels.ERROR)
    fail_all({ code = -32099, message = "agentd not found: " .. cmd[1] })
    return
  end

  generation = generation + 1
  local gen = generation
  set_state("starting")
  exited = false
  expected_exit = false

  local dispatchers = {
    notification = function(method, params)
      if gen ~= generation then
        return
      end
      local h = M.handlers.notification
      if h then
        h(method, params or {})
      end
    end,
    server_request = function(method, params)
      if gen ~= generation then
        return nil, require("vim.lsp.rpc").rpc_response_error(-32603, "stale daemon")
      end
      local h = M.handlers.request
      if not h then
        return nil, require("vim.lsp.rpc").rpc_response_error(-32601, "no handler")
      end
      return h(method, params or {})
    end,
    on_error = function(code, err)
      if gen ~= generation then
        return
      end
      local lsp_rpc = require("vim.lsp.rpc")
      local name = lsp_rpc.client_errors and lsp_rpc.client_errors[code] or tostring(code)
      util.log("rpc error " .. tostring(name) .. ": " .. vim.inspect(err))
    end,
    on_exit = function(code, signal)
      -- Runs in a libuv callback: record, then do the work on the main loop.
      if gen == generation then
        exited = true
      end
      vim.schedule(function()
        if gen ~= generation then
          return
        end
        M.last_exit = { code = code, signal = signal }
        M.info = nil
        local was_expected = expected_exit
        local was_starting = M.state == "starting"
        set_state("off")
        rpc = nil
        fail_all({ code = -32099, message = ("agentd exited (code %s)"):format(tostring(code)) })
        if not was_expected then
          local msg
          if was_starting then
            msg = ("agentd exited during start-up (code %s, signal %s). Its stderr is in the LSP log: %s"):format(
              tostring(code),
              tostring(signal),
              vim.lsp.get_log_path()
            )
          else
            msg = ("agentd exited unexpectedly (code %s, signal %s); it restarts on next use. Log: %s"):format(
              tostring(code),
              tostring(signal),
              vim.lsp.get_log_path()
            )
          end
          util.notify(msg, vim.log.levels.ERROR)
        end
        if M.handlers.exit then
          M.handlers.exit(code, signal, was_expected or was_starting)
        end
      end)
    end,
  }

  local extra = { env = M.spawn_env() }
  if o.cwd then
    extra.cwd = vim.fn.expand(o.cwd)
  end
  local before = {}
  for _, pid in ipairs(vim.api.nvim_get_proc_children(vim.fn.getpid())) do
    before[pid] = true
  end
  local ok, client = pcall(rpc_start, cmd, dispatchers, extra)
  if not ok or not client then
    set_state("off")
    exited = true
    local msg = not ok and tostring(client) or "spawn failed"
    if msg:match("ENOENT") or msg:match("not installed") then
      msg = not_found_message(cmd[1])
    else
      msg = "agentd failed to start: " .. msg
    end
    util.notify(msg, vim.log.levels.ERROR)
    fail_all({ code = -32099, message = msg })
    return
  end
  rpc = client
  -- The rpc object has the pid on Neovim 0.7-0.9 only; otherwise find the new child.
  M.daemon_pid = client.pid
  if not M.daemon_pid then
    for _, pid in ipairs(vim.api.nvim_get_proc_children(vim.fn.getpid())) do
      if not before[pid] then
        M.daemon_pid = pid
        break
      end
    end
  end

  local sent = rpc.request("initialize", initialize_params(), function(err, result)
    if gen ~= generation then
      return
    end
    M.info = not err and result or nil
    if err then
      util.notify("agentd initialize failed: " .. util.err_text(err), vim.log.levels.ERROR)
      M.stop({ sync = false })
      fail_all(err)
      return
    end
    set_state("ready")
    rpc.notify("initialized", vim.empty_dict())
    local ws = waiters
    waiters = {}
    for _, w in ipairs(ws) do
      local okw, e = pcall(w, nil)
      if not okw then
        util.notify("agentd: " .. tostring(e), vim.log.levels.ERROR)
      end
    end
  end)
  if not sent then
    set_state("off")
    fail_all(NOT_RUNNING)
  end
end

--- Send a request (starting the daemon if needed). cb(err, result).
function M.request(method, params, cb)
  cb = cb or function() end
  M.ensure(function(err)
    if err then
      return cb(err, nil)
    end
    pending_key = pending_key + 1
    local key = pending_key
    pending[key] = cb
    local ok = rpc.request(method, params, function(e, r)
      local c = pending[key]
      pending[key] = nil
      if c then
        c(e, r)
      end
    end)
    if not ok then
      pending[key] = nil
      cb(NOT_RUNNING, nil)
    end
  end)
end

--- Request and wait (processing events) for the answer.
function M.request_sync(method, params, timeout)
  local done, e, r = false, nil, nil
  M.request(method, params, function(err, result)
    done, e, r = true, err, result
  end)
  vim.wait(timeout or 10000, function()
    return done
  end, 10)
  if not done then
    return { code = -32099, message = "timed out waiting for agentd" }, nil
  end
  return e, r
end

function M.notify(method, params)
  if M.state == "ready" and rpc then
    return rpc.notify(method, params)
  end
  return false
end

--- The daemon's process id (nil when it is not running).
function M.pid()
  if rpc and not exited then
    return M.daemon_pid
  end
  return nil
end

local function kill()
  if not rpc then
    return
  end
  if rpc.terminate then
    pcall(rpc.terminate)
  elseif rpc.handle then
    pcall(rpc.handle.kill, rpc.handle, 15)
  end
end

--- Shut the daemon down: `shutdown` request, then `exit` notification.
--- opts.sync: wait (up to opts.timeout ms) for it to exit, then kill it.
function M.stop(opts)
  opts = opts or {}
  if not rpc or exited then
    set_state("off")
    return true
  end
  local timeout = opts.timeout or config.get().shutdown_timeout
  expected_exit = true
  local client = rpc
  local was_ready = M.state == "ready"
  set_state("stopping")
  local answered = false
  if was_ready then
    local ok = client.request("shutdown", nil, function()
      answered = true
      client.notify("exit", nil)
    end)
    if not ok then
      answered = true
    end
  else
    answered = true
    kill()
  end
  if not opts.sync then
    return true
  end
  vim.wait(timeout, function()
    return answered
  end, 10)
  if not answered then
    client.notify("exit", nil)
  end
  local gone = vim.wait(timeout, function()
    return exited
  end, 10)
  if not gone then
    kill()
    gone = vim.wait(1000, function()
      return exited
    end, 10)
  end
  return gone
end

return M
