defmodule JobVectorsTest do
  # The vectors of docs/vectors/jobs.terms that name the seed's kinds (Job, Job.Otp,
  # Job.Steps): their time and merge rules, and what job_kinds makes of them. The library's
  # own rules are checked in elixir/test/pynode/jobs_vectors_test.exs, which also checks
  # that every tag of the file is checked somewhere.
  use ExUnit.Case, async: true

  alias Pynode.Jobs
  alias Pynode.Jobs.Host

  import Pynode.Test.Vectors, only: [of: 1]
  defp vectors(tag), do: of(tag)

  defp kind_module!(kind) do
    mod = Jobs.kind_module(kind)
    assert mod, "no kind module for #{inspect(kind)}"
    mod
  end

  test "elapse" do
    for {:elapse, kind, state, ms, expected} = v <- vectors(:elapse) do
      assert Host.elapse(kind_module!(kind), state, ms) == expected, inspect(v)
    end
  end

  test "merge" do
    for {:merge, %{kind: kind} = winner, %{kind: kind} = loser, expected} = v <- vectors(:merge) do
      mod = kind_module!(kind)
      assert function_exported?(mod, :merge, 2), "#{inspect(mod)} has no merge/2"
      assert mod.merge(winner, loser) == expected, inspect(v)
      assert is_binary(mod.describe_merge(winner, loser, expected))
    end
  end

  test "run_elapse" do
    for {:run_elapse, state, ms, expected} = v <- vectors(:run_elapse),
        do: assert(Job.Steps.elapse(state, ms) == expected, inspect(v))
  end

  test "run_merge" do
    for {:run_merge, winner, loser, expected} = v <- vectors(:run_merge),
        do: assert(Job.Steps.merge(winner, loser) == expected, inspect(v))
  end

  test "job_kinds: :all is the kinds the running applications provide; kind atoms and modules" do
    all = %{:Job => Job, :"Job.Otp" => Job.Otp, :"Job.Steps" => Job.Steps}
    # the :available_processes application runs: it provides its three kinds
    assert Jobs.kinds() == [Job, Job.Otp, Job.Steps]
    assert Jobs.host_kinds(:all) == all
    assert Jobs.host_kinds(Jobs.kinds()) == all
    assert Jobs.host_kinds([:Job, :"Job.Otp", Job.Steps]) == all
    assert Jobs.host_kinds([:"Job.Otp"]) == %{:"Job.Otp" => Job.Otp}
    assert Jobs.host_kinds([Job]) == %{:Job => Job}
    assert Jobs.host_kinds([]) == %{}
    assert Jobs.host_kinds([:Job, :no_such_kind]) == %{:Job => Job}
  end
end
