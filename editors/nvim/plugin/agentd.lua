if vim.g.loaded_agentd then
  return
end
vim.g.loaded_agentd = true

if vim.fn.has("nvim-0.7") ~= 1 then
  vim.api.nvim_err_writeln("agentd.nvim needs Neovim 0.7 or newer")
  return
end

require("agentd.commands").register()
