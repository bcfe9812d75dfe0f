"""`agentd chat`: a terminal client. It spawns a daemon, speaks the wire protocol to it
like any editor would, and prints answers as they stream.

With no model configured (or `--offline`), it starts the bundled scripted model on
loopback and points the daemon at it, so a newcomer sees a streamed answer with no key
and no network.

It behaves like the command-line tools its users know: the answer on stdout; notices,
errors and configuration problems on stderr; no traceback for an expected failure (a
daemon that cannot start or dies is one line naming the cause). Keys: Ctrl-C stops the
answer being written (one-shot mode then exits 130); at the prompt it clears the line,
and a second Ctrl-C in a row, or Ctrl-D, leaves. A closed stdout (`| head -1`) stops the
answer and the daemon and exits quietly (141, as a process killed by SIGPIPE).

The pieces: `daemon` (the spawned agentd and JSON-RPC over its stdio), `line_input`
(stdin lines that Ctrl-C can interrupt), `renderer` (what the terminal shows of a run),
`client` (the conversation, and what Ctrl-C means at each moment).
"""
