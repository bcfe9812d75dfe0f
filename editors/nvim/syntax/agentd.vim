" Syntax of the agentd.nvim chat buffer.
if exists('b:current_syntax')
  finish
endif

if get(g:, 'agentd_markdown', luaeval('require("agentd.config").get().panel.markdown'))
  runtime! syntax/markdown.vim
  unlet! b:current_syntax
endif

syntax match agentdUser       /^▍ You\>.*$/
syntax match agentdAssistant  /^▍ Assistant\>.*$/
syntax match agentdReasoning  /^┆ .*$/ contains=NONE
syntax match agentdTool       /^  ⚙ .*$/ contains=agentdToolPending,agentdToolRunning,agentdToolDone,agentdToolFailed
syntax match agentdToolPending /\[pending\]$/ contained
syntax match agentdToolRunning /\[running\%( [^]]*\)\=\]$/ contained
syntax match agentdToolDone    /\[done\]$/ contained
syntax match agentdToolFailed  /\[failed: .*\]$/ contained
syntax match agentdFooter     /^  └ .*$/
syntax match agentdInstructions /^  § instructions: .*$/
syntax match agentdError      /^✗ .*$/
syntax match agentdNotice     /^  (.*)$/
syntax match agentdNotice     /^  ─ .* ─$/

highlight default link agentdUser Title
highlight default link agentdAssistant Function
highlight default link agentdReasoning Comment
highlight default link agentdTool Special
highlight default link agentdToolPending Comment
highlight default link agentdToolRunning WarningMsg
highlight default link agentdToolDone String
highlight default link agentdToolFailed ErrorMsg
highlight default link agentdFooter Comment
highlight default link agentdInstructions Comment
highlight default link agentdError ErrorMsg
highlight default link agentdNotice Comment

let b:current_syntax = 'agentd'
