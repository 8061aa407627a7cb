defmodule Pynode.JobsVectorsTest do
  # docs/JOBS_PROTOCOL.md: the pure rules of the job protocol against the shared vectors
  # (docs/vectors/jobs.terms, also read by the Python suite, tests/test_jobs_vectors.py).
  # The file is read when the tests run; a tag without vectors fails, and so does a tag
  # that no test checks (a vector nobody looks at is a rule nobody tests). The vectors of the
  # seed's kinds (Job, Job.Otp, Job.Steps) are checked with them, in mix_compat/test.
  use ExUnit.Case, async: true

  alias Pynode.Jobs
  alias Pynode.Jobs.{Client, Host, JobServer}

  import Pynode.Test.Vectors, only: [of: 1]
  defp vectors(tag), do: of(tag)

  @tags [:defaults, :replica_targets, :adopts, :retryable, :recent_merge] ++
          [:run_initial, :run_backoff, :run_done, :run_error, :run_retry, :run_cancel] ++
          [:run_status, :run_results] ++
          [:place, :run_queue, :run_admit]
  # checked by mix_compat/test/job_vectors_test.exs, against the seed's kinds
  @seed_tags [:elapse, :merge, :run_elapse, :run_merge]
  @seed_test Path.expand("../../../mix_compat/test/job_vectors_test.exs", __DIR__)

  test "every tag of the file is checked here or with the seed's kinds" do
    tags = Pynode.Test.Vectors.all() |> Enum.map(&elem(&1, 0)) |> Enum.uniq()
    left = tags -- (@tags ++ @seed_tags)
    assert left == [], "vectors nobody checks: #{inspect(left)}"
    seed = File.read!(@seed_test)
    for tag <- @seed_tags, do: assert(seed =~ "vectors(:#{tag})", "#{@seed_test}: #{tag}")
  end

  test "defaults" do
    assert [{:defaults, expected}] = vectors(:defaults)
    assert Jobs.defaults() == expected

    # the application's own env (mix.exs, as compiled into the .app file) holds the same
    # values for the keys it names
    app_file = Application.app_dir(:pynode, "ebin/pynode.app")
    {:ok, [{:application, :pynode, spec}]} = :file.consult(app_file)
    app_env = Keyword.get(spec, :env, [])
    assert Keyword.has_key?(app_env, :replica_check)

    for {key, value} <- app_env, is_map_key(expected, key) do
      assert value == Map.fetch!(expected, key), "mix.exs env #{key}: #{inspect(value)}"
    end
  end

  test "replica_targets" do
    for {:replica_targets, hosts, owner, n, expected} = v <- vectors(:replica_targets) do
      assert JobServer.replica_targets(hosts, owner, n) == expected, inspect(v)
    end
  end

  test "adopts" do
    for {:adopts, me, replicas, alive, expected} = v <- vectors(:adopts) do
      assert Host.adopts?(me, replicas, alive) == expected, inspect(v)
    end
  end

  test "retryable" do
    for {:retryable, reason, expected} = v <- vectors(:retryable) do
      assert Client.retryable?(reason) == expected, inspect(v)
    end
  end

  test "recent_merge" do
    for {:recent_merge, winner, loser, recent, seq} = v <- vectors(:recent_merge) do
      assert JobServer.merge_recent(winner, loser) == {recent, seq}, inspect(v)
    end
  end

  ## Run kinds (Pynode.Jobs.Run)

  alias Pynode.Jobs.Run

  test "run_initial" do
    for {:run_initial, args, expected} = v <- vectors(:run_initial),
        do: assert(Run.initial(args) == expected, inspect(v))
  end

  test "run_backoff" do
    for {:run_backoff, attempt, base, max_ms, expected} = v <- vectors(:run_backoff),
        do: assert(Run.backoff(attempt, base, max_ms) == expected, inspect(v))
  end

  test "run_done" do
    for {:run_done, state, result, ttl, expected} = v <- vectors(:run_done),
        do: assert(Run.done(state, result, ttl) == expected, inspect(v))
  end

  test "run_error" do
    for {:run_error, state, error, max_attempts, base, max_ms, ttl, expected} = v <-
          vectors(:run_error),
        do:
          assert(Run.error(state, error, max_attempts, base, max_ms, ttl) == expected, inspect(v))
  end

  test "run_retry" do
    for {:run_retry, state, expected} = v <- vectors(:run_retry),
        do: assert(Run.retry(state) == expected, inspect(v))
  end

  test "run_cancel" do
    for {:run_cancel, state, ttl, expected} = v <- vectors(:run_cancel),
        do: assert(Run.cancel(state, ttl) == expected, inspect(v))
  end

  test "run_status" do
    for {:run_status, state, node, expected} = v <- vectors(:run_status),
        do: assert(Run.status(state, node) == expected, inspect(v))
  end

  test "run_results" do
    for {:run_results, state, expected} = v <- vectors(:run_results),
        do: assert(Run.results(state) == expected, inspect(v))
  end

  test "place" do
    for {:place, candidates, n, expected} = v <- vectors(:place) do
      assert Jobs.place(candidates, n) == expected, inspect(v)
    end
  end

  test "run_queue" do
    for {:run_queue, state, expected} = v <- vectors(:run_queue) do
      assert Pynode.Jobs.Run.queue(state) == expected, inspect(v)
    end
  end

  test "run_admit" do
    for {:run_admit, state, expected} = v <- vectors(:run_admit) do
      assert Pynode.Jobs.Run.admit(state) == expected, inspect(v)
    end
  end
end
