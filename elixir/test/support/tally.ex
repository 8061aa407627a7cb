defmodule Pynode.Test.Tally do
  @moduledoc false
  # A job kind of the library's tests (the library has no kinds of its own): the state is an
  # integer, 0 at start; `{:add, n}` adds n and answers the sum, `:get` reads it, `:finish`
  # answers it and ends the job. The tests provide it with Pynode.Jobs.Kinds.

  @behaviour Pynode.Jobs.Kind

  @impl true
  def kind, do: :"Pynode.Test.Tally"

  @impl true
  def init(_id, _args), do: 0

  @impl true
  def restore(_id, n) when is_integer(n), do: n
  def restore(_id, other), do: {:error, {:bad_state, other}}

  @impl true
  def handle_op({:add, n}, _id, sum) when is_integer(n), do: {:changed, sum + n, sum + n}
  def handle_op(:get, _id, sum), do: {:read, sum}
  def handle_op(:finish, _id, sum), do: {:stop, sum}
  def handle_op(request, _id, _sum), do: {:error, {:unknown_request, request}}
end
