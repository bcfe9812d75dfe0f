-- The user commands (defined by plugin/agentd.lua, and again by setup() for
-- installs that add editors/nvim to 'runtimepath' after start-up).
local M = {}

function M.register()
  local cmd = vim.api.nvim_create_user_command

  cmd("AgentdChat", function(o)
    require("agentd").chat_command(o)
  end, { nargs = "*", range = true, desc = "agentd: open the chat panel, or send [text] (with a range: the selection too)" })

  cmd("AgentdSessions", function()
    require("agentd").sessions()
  end, { desc = "agentd: pick a session" })

  cmd("AgentdNew", function()
    require("agentd").new()
  end, { desc = "agentd: start a new chat" })

  cmd("AgentdAbort", function()
    require("agentd").abort()
  end, { desc = "agentd: abort the running answer" })

  cmd("AgentdRename", function(o)
    require("agentd").rename(o.args)
  end, { nargs = "?", desc = "agentd: rename the current session" })

  cmd("AgentdDelete", function(o)
    require("agentd").delete(o.bang)
  end, { bang = true, desc = "agentd: delete the current session" })

  cmd("AgentdFork", function()
    require("agentd").fork()
  end, { desc = "agentd: fork the session at the message under the cursor (elsewhere: all of it)" })

  cmd("AgentdRevert", function()
    require("agentd").revert()
  end, { desc = "agentd: revert to the message under the cursor (preview, then confirm)" })

  cmd("AgentdUnrevert", function()
    require("agentd").unrevert()
  end, { desc = "agentd: undo the latest revert (preview, then confirm)" })

  cmd("AgentdExport", function(o)
    require("agentd").export(o.args)
  end, {
    nargs = "?",
    complete = function()
      return { "markdown", "json" }
    end,
    desc = "agentd: export the session into a new buffer (markdown or json)",
  })

  cmd("AgentdMcp", function()
    require("agentd").mcp()
  end, { desc = "agentd: MCP servers and their tools" })

  cmd("AgentdInfo", function()
    require("agentd").info()
  end, { desc = "agentd: the daemon serving this Neovim (shared or not, its pid, editors connected)" })

  cmd("AgentdStop", function()
    require("agentd").stop()
  end, { desc = "agentd: stop the daemon" })
end

return M
