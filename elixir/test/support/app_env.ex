defmodule Pynode.Test.AppEnv do
  @moduledoc false
  # The :pynode settings a test changes, put back when it ends.

  @doc """
  From a `setup`: sets the settings `puts` (a keyword list) and, when the test ends, puts
  each of `keys` back as it was before (deleted when it was not set). `keys` names every
  setting the test may change: those of `puts` and any a test sets itself.
  """
  def keep(keys, puts \\ []) do
    env = Application.get_all_env(:pynode)
    for {k, v} <- puts, do: Application.put_env(:pynode, k, v)

    ExUnit.Callbacks.on_exit(fn ->
      for k <- keys do
        case Keyword.fetch(env, k) do
          {:ok, v} -> Application.put_env(:pynode, k, v)
          :error -> Application.delete_env(:pynode, k)
        end
      end
    end)

    :ok
  end
end
