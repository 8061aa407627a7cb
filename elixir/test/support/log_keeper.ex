defmodule Pynode.Test.LogKeeper do
  @moduledoc false
  # Keeps the log messages of a peer node so that a test can read them (the peer's own
  # output only goes to the terminal). Started on the peer by MFA (:peer.call/5), so it
  # lives in test/support:
  #
  #   :peer.call(peer, Pynode.Test.LogKeeper, :start, [:warning])
  #   :peer.call(peer, Pynode.Test.LogKeeper, :messages, [])   # [{level, text}], oldest first
  #
  # It is a :logger handler (log/2) plus a registered process that holds the messages.

  @name :pynode_test_log_keeper

  def start(level \\ :warning) do
    case Process.whereis(@name) do
      nil ->
        pid = spawn(fn -> keep([]) end)
        Process.register(pid, @name)

      _ ->
        :ok
    end

    case :logger.add_handler(@name, __MODULE__, %{level: level}) do
      :ok -> :ok
      {:error, {:already_exist, _}} -> :ok
    end
  end

  def messages do
    ref = make_ref()
    send(@name, {:messages, self(), ref})

    receive do
      {^ref, msgs} -> Enum.reverse(msgs)
    after
      5_000 -> exit(:log_keeper_timeout)
    end
  end

  # :logger handler callback
  def log(%{level: level, msg: msg}, _config) do
    send(@name, {:log, level, text(msg)})
  end

  defp text({:string, s}), do: IO.chardata_to_string(s)
  defp text({:report, report}), do: inspect(report)

  defp text({format, args}) do
    IO.chardata_to_string(:io_lib.format(format, args))
  rescue
    _ -> inspect({format, args})
  end

  defp keep(msgs) do
    receive do
      {:log, level, text} ->
        keep([{level, text} | msgs])

      {:messages, from, ref} ->
        send(from, {ref, msgs})
        keep(msgs)
    end
  end
end
