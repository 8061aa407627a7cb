defmodule Mix.Tasks.RunJob do
  @shortdoc "Starts, updates and finishes N jobs on the cluster and checks their results"
  @moduledoc """
  A smoke test of the job cluster, run from a client node that hosts no jobs:

      cd mix_compat
      elixir --sname c1@localhost --cookie test -S mix run_job 10

  It compiles the project and loads its code but does **not** start the
  `:available_processes` application or the `:pynode` library's application under it (no
  registry, no job host on this node), so every
  operation goes through a connected host node (`{client, Op, Args}`, see `Pynode.Jobs`).

  Steps: connect to the cluster nodes (`--connect NODE`, repeatable; else the `connect`
  list of the `:pynode` application env, e.g. from `--erl "-config ../sys.config"`; else
  `n1@localhost`, `n2@localhost`, `n3@localhost`) and wait (up to `--wait` seconds,
  default 30) until at least one answers; then, for the integer ids `1..N`, start a `Job`
  each, update each with the atom `:update`, finish each and check that the result is
  `[:update, id]`. Prints one line per job, `job <id>: ok` or `job <id>: FAILED <reason>`,
  then `run_job: <ok> ok, <failed> failed`.

  Exit status: 0 when every job passed, 1 when any failed, 2 when no cluster node could be
  reached (the same as `python -m pynode run_job N`). A node started without a name
  (`mix run_job 3`) becomes `run_job_<n>@localhost` with the default cookie.
  """

  use Mix.Task

  @default_nodes [:n1@localhost, :n2@localhost, :n3@localhost]

  @impl true
  def run(argv) do
    {opts, rest, invalid} = OptionParser.parse(argv, strict: [connect: :keep, wait: :integer])

    count =
      case {rest, invalid} do
        {[n], []} ->
          case Integer.parse(n) do
            {count, ""} when count >= 0 -> count
            _ -> usage()
          end

        _ ->
          usage()
      end

    Mix.Task.run("compile")
    Mix.Task.run("loadpaths")
    # the :pynode env (mix.exs defaults, overridden by sys.config): its `connect` list
    _ = Application.load(:pynode)
    ensure_distributed()

    nodes =
      case Keyword.get_values(opts, :connect) do
        [] ->
          case Application.get_env(:pynode, :connect, []) do
            [] -> @default_nodes
            configured -> Enum.map(List.wrap(configured), &to_node/1)
          end

        given ->
          Enum.map(given, &to_node/1)
      end

    unless wait_for_cluster(
             nodes,
             System.monotonic_time(:millisecond) + Keyword.get(opts, :wait, 30) * 1_000
           ) do
      IO.puts(
        :stderr,
        "run_job: none of #{Enum.map_join(nodes, ", ", &to_string/1)} is reachable"
      )

      System.halt(2)
    end

    failed = run_jobs(count)
    IO.puts("run_job: #{count - map_size(failed)} ok, #{map_size(failed)} failed")
    if map_size(failed) > 0, do: System.halt(1)
  end

  defp usage do
    Mix.raise("usage: mix run_job N [--connect NODE ...] [--wait SECONDS]")
  end

  defp run_jobs(count) do
    ids = if count > 0, do: Enum.to_list(1..count), else: []

    failed =
      Enum.reduce(ids, %{}, fn id, failed ->
        case Job.start(id) do
          {:ok, pid} when is_pid(pid) -> failed
          other -> Map.put(failed, id, "start: #{inspect(other)}")
        end
      end)

    failed =
      Enum.reduce(ids, failed, fn id, failed ->
        if Map.has_key?(failed, id) do
          failed
        else
          case Job.update(id, :update) do
            :ok -> failed
            other -> Map.put(failed, id, "update: #{inspect(other)}")
          end
        end
      end)

    failed =
      Enum.reduce(ids, failed, fn id, failed ->
        if Map.has_key?(failed, id) do
          failed
        else
          case Job.finish(id) do
            [:update, ^id] ->
              failed

            other ->
              Map.put(failed, id, "finish: expected [:update, #{id}], got #{inspect(other)}")
          end
        end
      end)

    for id <- ids do
      case failed do
        %{^id => reason} -> IO.puts("job #{id}: FAILED #{reason}")
        _ -> IO.puts("job #{id}: ok")
      end
    end

    failed
  end

  defp ensure_distributed do
    unless Node.alive?() do
      name = :"run_job_#{System.unique_integer([:positive])}@localhost"
      {:ok, _} = :net_kernel.start([name, :shortnames])
    end
  end

  # Connects to every listed node; true once at least one is connected.
  defp wait_for_cluster(nodes, deadline) do
    connected = Enum.filter(nodes, &(Node.connect(&1) == true))

    cond do
      connected != [] -> true
      System.monotonic_time(:millisecond) > deadline -> false
      true -> Process.sleep(200) && wait_for_cluster(nodes, deadline)
    end
  end

  defp to_node(node) when is_atom(node), do: node
  defp to_node(node), do: node |> IO.chardata_to_string() |> String.to_atom()
end
