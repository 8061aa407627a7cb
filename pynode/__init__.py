"""pynode: a Python node in an Erlang/Elixir cluster."""
