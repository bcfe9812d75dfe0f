-- Options of agentd.nvim. Every option is documented in doc/agentd.txt.
local M = {}

M.defaults = {
  -- The daemon command (a list: program and arguments). The program is looked
  -- up on $PATH unless it is a path.
  cmd = { "agentd" },
  -- Working directory of the daemon (nil: Neovim's current directory).
  cwd = nil,
  -- Default model (sets AGENTD_MODEL for the daemon and `model` of new sessions).
  model = nil,
  -- Where agentd stores sessions (sets AGENTD_DATA_DIR) and its state
  -- (AGENTD_STATE_DIR). nil: agentd's own defaults.
  data_dir = nil,
  state_dir = nil,
  -- Extra environment for the daemon. The daemon inherits Neovim's environment
  -- (OPENAI_BASE_URL, OPENAI_API_KEY, ... pass through); these are added on top.
  env = {},
  -- Workspace root sent to agentd: a string, or a function returning one.
  -- nil: Neovim's current directory when the session is created.
  workspace_root = nil,
  -- Built-in agentd tools the model may use (nil: agentd's default, the
  -- read-only ones). Example: { "read_file", "grep", "edit_file", "bash" }.
  tools = nil,
  -- Extra system prompt lines sent with every turn (list of strings) or nil.
  system = nil,
  -- What to do when you send while the session is still answering:
  -- "queue" (run after it), "preempt" (abort it and run) or "reject".
  on_busy = "queue",
  -- Maximum model steps per turn (nil: agentd's default, 25).
  max_steps = nil,
  -- Editor-side tools offered to the model: true (all), false (none) or a list
  -- of names among editor_selection, open_buffers, read_buffer, apply_edit.
  client_tools = true,
  -- Ask before apply_edit changes a buffer.
  confirm_edits = true,
  -- Lines of context around the cursor that editor_selection returns when
  -- nothing is selected.
  context_lines = 20,
  -- Maximum number of messages loaded when a session is reopened.
  history_limit = 500,
  -- Remember the chat the panel shows, per project (the workspace root): the first
  -- :AgentdChat after Neovim starts reopens it. false: every Neovim starts a new chat.
  remember_chat = true,
  -- Sessions fetched per page in :AgentdSessions.
  sessions_page_size = 50,
  -- Milliseconds to wait for the daemon at Neovim exit (shutdown, then exit).
  shutdown_timeout = 3000,
  panel = {
    -- "right" or "left".
    position = "right",
    -- Width of the panel: columns (> 1) or a fraction of 'columns' (<= 1).
    width = 0.4,
    -- Never narrower than this many columns.
    min_width = 30,
    -- Height of the input area in lines.
    input_height = 4,
    -- Start Insert mode in the input area when the panel opens empty-handed.
    start_insert = true,
    -- Keep the chat window scrolled to the end while an answer streams in
    -- (only while the cursor is on the last line).
    follow = true,
    -- Highlight message text as Markdown.
    markdown = true,
    -- Fold reasoning ("thinking") parts.
    fold_reasoning = true,
  },
  keymaps = {
    -- Panel keys (normal mode in the chat and input windows).
    send = "<CR>",         -- input window: send the prompt
    send_insert = "<C-s>", -- input window, insert mode: send the prompt
    abort = "<C-c>",       -- abort the running turn
    close = "q",           -- close the panel
    sessions = "gs",       -- :AgentdSessions
    new = "gn",            -- :AgentdNew
    -- Chat window only: the message under the cursor.
    fork = "gF",           -- :AgentdFork
    revert = "gR",         -- :AgentdRevert
    unrevert = "gU",       -- :AgentdUnrevert
    export = "gX",         -- :AgentdExport (markdown)
    -- Global keys (nil or false: not mapped).
    global = {
      chat = nil,     -- e.g. "<leader>ac": :AgentdChat (visual: with the selection)
      sessions = nil, -- e.g. "<leader>as"
      new = nil,      -- e.g. "<leader>an"
      abort = nil,    -- e.g. "<leader>ax"
    },
  },
  -- vim.notify levels below this are not shown.
  notify_level = vim.log.levels.INFO,
}

M.options = vim.deepcopy(M.defaults)

local function check(opts)
  local function bad(what)
    error("agentd.setup: " .. what, 0)
  end
  if type(opts.cmd) ~= "table" or type(opts.cmd[1]) ~= "string" then
    bad("cmd must be a list like { \"agentd\" }")
  end
  if opts.on_busy ~= "queue" and opts.on_busy ~= "preempt" and opts.on_busy ~= "reject" then
    bad('on_busy must be "queue", "preempt" or "reject"')
  end
  if type(opts.remember_chat) ~= "boolean" then
    bad("remember_chat must be true or false")
  end
  for _, k in ipairs({ "env", "panel", "keymaps" }) do
    if type(opts[k]) ~= "table" then
      bad(k .. " must be a table")
    end
  end
end

function M.set(user)
  local opts = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), user or {})
  -- Lists replace, they are not merged index by index.
  if user then
    for _, k in ipairs({ "cmd", "tools", "system", "client_tools" }) do
      if user[k] ~= nil then
        opts[k] = user[k]
      end
    end
  end
  if type(opts.cmd) == "string" then
    opts.cmd = { opts.cmd }
  end
  check(opts)
  M.options = opts
  return opts
end

function M.get()
  return M.options
end

return M
