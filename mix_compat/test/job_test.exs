defmodule JobTest do
  # One node: this test node runs the :available_processes application (its kinds) and the
  # :pynode application (registry and job host), so the client API reads the registry locally.
  use ExUnit.Case, async: false

  alias Pynode.Jobs
  alias Pynode.Jobs.{Client, JobServer}
  alias Pynode.Registry

  import Pynode.Test.Cluster, only: [wait_until: 2, wait_until: 3]

  setup do
    Pynode.Test.AppEnv.keep([:work_ms, :missing_grace, :result_ttl], work_ms: 200, missing_grace: 300)
  end

  defp uniq(prefix), do: "#{prefix}-#{System.unique_integer([:positive])}"

  test "Job: start, update, finish" do
    id = uniq("job")
    assert {:ok, pid} = Job.start(id)
    assert Registry.where(Jobs.key(id)) == pid
    assert [{^pid, :Job}] = Registry.lookup_values(Jobs.key(id))
    assert {^id, :Job, ^pid} = List.keyfind(Jobs.list(), id, 0)
    assert Job.start(id) == {:error, :job_already_started}
    assert Job.update(id, :a) == :ok
    assert Job.update(id, {:b, 2}) == :ok
    assert Jobs.get_state(id) == [{:b, 2}, :a, id]
    ref = Process.monitor(pid)
    assert Job.finish(id) == [{:b, 2}, :a, id]
    assert_receive {:DOWN, ^ref, :process, ^pid, :normal}
    assert Registry.where(Jobs.key(id)) == :undefined
  end

  test "integer ids, and operations on a missing job" do
    id = System.unique_integer([:positive])
    assert {:ok, _} = Job.start(id)
    assert Job.update(id, :update) == :ok
    assert Job.finish(id) == [:update, id]
    assert Job.update(id, :late) == {:error, :no_such_job}
    assert Job.finish(id) == {:error, :no_such_job}
    assert Job.Otp.check_results(id) == nil
  end

  test "Job.Otp: nil while working, then the results, kept for result_ttl" do
    Application.put_env(:pynode, :result_ttl, 400)
    id = uniq("otp")
    assert {:ok, pid} = Job.Otp.start(id)
    assert Job.Otp.start(id) == {:error, :job_already_started}
    assert Job.Otp.check_results(id) == nil
    assert %{id: ^id, results: nil, work_left_ms: left, ttl_left_ms: nil} = Jobs.get_state(id)
    assert left in 0..200
    ref = Process.monitor(pid)
    assert wait_until(fn -> Job.Otp.check_results(id) end, 2_000) == "results of #{id}"

    assert %{results: "results of " <> _, work_left_ms: nil, ttl_left_ms: ttl} =
             Jobs.get_state(id)

    assert ttl in 0..400
    # the TTL runs out: the job ends and its results are gone
    assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 2_000
    assert Job.Otp.check_results(id) == nil
  end

  test "integer id results are written in decimal" do
    id = System.unique_integer([:positive])
    assert {:ok, _} = Job.Otp.start(id)
    assert wait_until(fn -> Job.Otp.check_results(id) end, 2_000) == "results of #{id}"
    assert Jobs.results_binary(:abc) == "results of abc"
  end

  test "a retried operation (same OpId) is answered, not applied twice" do
    id = uniq("dedupe")
    {:ok, pid} = Job.start(id)
    op_id = make_ref()
    assert Client.op(id, {:update, :x}, op_id) == {:ok, :ok}
    assert Client.op(id, {:update, :x}, op_id) == {:ok, :ok}
    assert GenServer.call(pid, {:pynode_job_op, op_id, {:update, :x}}) == {:ok, :ok}
    assert Jobs.get_state(id) == [:x, id]
    %{recent: [{^op_id, {:ok, :ok}} | _], seq: 2} = :sys.get_state(pid) |> Map.from_struct()
    assert Jobs.op(id, :bogus) == {:error, {:unknown_request, :bogus}}
    assert Job.finish(id) == [:x, id]
  end

  test "the host's calls: start (unknown kind), list, client" do
    id = uniq("host")
    assert GenServer.call(:pynode_jobs, {:start, :NoSuchKind, id, []}) == {:error, :unknown_kind}
    assert {:ok, pid} = GenServer.call(:pynode_jobs, {:start, :Job, id, []})
    assert {id, :Job, pid} in GenServer.call(:pynode_jobs, :list)
    assert GenServer.call(:pynode_jobs, {:client, :update, [id, :u]}) == :ok
    assert GenServer.call(:pynode_jobs, {:client, :get_state, [id]}) == [:u, id]
    assert GenServer.call(:pynode_jobs, {:client, :op, [id, :get_state]}) == {:ok, [:u, id]}
    assert GenServer.call(:pynode_jobs, {:client, :finish, [id]}) == [:u, id]
    id2 = uniq("host")
    assert {:ok, _} = GenServer.call(:pynode_jobs, {:client, :start, [:"Job.Otp", id2, []]})
    assert GenServer.call(:pynode_jobs, {:client, :check_results, [id2]}) == nil

    assert {:error, {:unknown_client_op, :nope, 0}} =
             GenServer.call(:pynode_jobs, {:client, :nope, []})
  end

  test "client ops with the argument shapes of pynode/jobs/client.py" do
    id = uniq("shapes")
    assert {:ok, _} = GenServer.call(:pynode_jobs, {:client, :start, [id]})

    assert GenServer.call(:pynode_jobs, {:client, :start, [:Job, id]}) ==
             {:error, :job_already_started}

    assert GenServer.call(:pynode_jobs, {:client, :finish, [id]}) == [id]
    assert {:ok, _} = GenServer.call(:pynode_jobs, {:client, :otp_start, [id]})
    assert Jobs.start(Job.Otp, id) == {:error, :job_already_started}

    assert {^id, :"Job.Otp", _} =
             List.keyfind(GenServer.call(:pynode_jobs, {:client, :list_jobs, []}), id, 0)

    assert GenServer.call(:pynode_jobs, {:client, :update, [uniq("none"), :x]}) ==
             {:error, :no_such_job}
  end

  test "replica store: newer seq or new owner replaces; owner exit (not noconnection) drops" do
    id = uniq("replica")
    owner = spawn(fn -> Process.sleep(:infinity) end)
    owner2 = spawn(fn -> Process.sleep(:infinity) end)
    portable = fn seq -> %{kind: :Job, id: id, state: [seq, id], recent: [], seq: seq} end
    rep = fn -> Map.get(:sys.get_state(:pynode_jobs).replicas, id) end

    call = fn seq, o ->
      GenServer.call(:pynode_jobs, {:replicate, id, :Job, portable.(seq), seq, o, [node()]})
    end

    assert call.(2, owner) == :ok
    assert %{seq: 2, owner: ^owner} = rep.()
    assert {id, :Job, owner, 2} in GenServer.call(:pynode_jobs, :replicas)
    # the same Seq again from the same owner is a refresh: stored
    refreshed = %{portable.(2) | state: [:refreshed, id]}

    assert GenServer.call(
             :pynode_jobs,
             {:replicate, id, :Job, refreshed, 2, owner, [node()]}
           ) == :ok

    assert %{seq: 2, portable: ^refreshed} = rep.()
    assert call.(1, owner) == :ok
    assert %{seq: 2} = rep.()
    assert call.(1, owner2) == :ok
    assert %{seq: 1, owner: ^owner2} = rep.()
    # the old owner's exit does not drop the replica that moved to owner2 (a call after
    # the DOWN has surely been handled: the host unmonitored owner when owner2 replaced it)
    Process.exit(owner, :kill)
    refute Map.has_key?(:sys.get_state(:pynode_jobs).owner_mons, owner)
    assert %{owner: ^owner2} = rep.()
    # drop_replica from another owner is ignored; from the owner it drops
    GenServer.cast(:pynode_jobs, {:drop_replica, id, owner})
    assert %{owner: ^owner2} = rep.()
    GenServer.cast(:pynode_jobs, {:drop_replica, id, owner2})
    assert rep.() == nil
    assert call.(5, owner2) == :ok
    Process.exit(owner2, :kill)
    wait_until(fn -> rep.() == nil end, 2_000, "replica dropped")
  end

  test "the host property lists the kinds" do
    assert [{_, [:Job, :"Job.Otp", :"Job.Steps"]}] =
             Registry.lookup_values(Jobs.host_key())
             |> Enum.filter(fn {p, _} -> node(p) == node() end)
  end

  test "adopt: a job arrives with its portable state, seq and recent" do
    id = uniq("adopt")
    op_id = {node(), 1}

    portable = %{
      kind: :Job,
      id: id,
      state: [:b, :a, id],
      recent: [{op_id, {:ok, :ok}}],
      seq: 3
    }

    assert {:ok, pid} = GenServer.call(:pynode_jobs, {:adopt, :Job, id, portable})
    assert Registry.where(Jobs.key(id)) == pid
    assert %{seq: 4} = :sys.get_state(pid) |> Map.from_struct()
    # the operation recorded in `recent` is answered, not applied again
    assert Client.op(id, {:update, :b}, op_id) == {:ok, :ok}
    assert Job.finish(id) == [:b, :a, id]
  end

  test "replica placement: the next hosts after the owner, wrapping around" do
    hosts = [:a@h, :b@h, :c@h, :d@h]
    assert JobServer.replica_targets(hosts, :b@h, 1) == [:c@h]
    assert JobServer.replica_targets(hosts, :d@h, 2) == [:a@h, :b@h]
    assert JobServer.replica_targets(hosts, :b@h, 0) == []
    assert JobServer.replica_targets([:b@h], :b@h, 1) == []
  end

  test "pynode_job_merge: the copy's events, Recent and Seq join the winner's; other jobs are refused" do
    id = uniq("merge")
    assert {:ok, pid} = Job.start(id)
    assert Client.op(id, {:update, :a}, :o1) == {:ok, :ok}
    assert Client.op(id, {:update, :w}, :o2) == {:ok, :ok}
    assert %{seq: 3} = :sys.get_state(pid)

    # the other copy saw :a (o1) too, then :l1 and :l2
    theirs = %{
      kind: :Job,
      id: id,
      state: [:l2, :l1, :a, id],
      recent: [{:o4, {:ok, :ok}}, {:o3, {:ok, :ok}}, {:o1, {:ok, :ok}}],
      seq: 7
    }

    assert GenServer.call(pid, {:pynode_job_merge, %{theirs | id: {:other, id}}}) ==
             {:error, :not_this_job}

    assert GenServer.call(pid, {:pynode_job_merge, %{theirs | kind: :"Job.Otp"}}) ==
             {:error, :not_this_job}

    assert GenServer.call(pid, {:pynode_job_merge, theirs}) == :ok
    assert Jobs.get_state(id) == [:l2, :l1, :w, :a, id]
    assert %{seq: 8, recent: recent} = :sys.get_state(pid)
    assert Enum.map(recent, &elem(&1, 0)) == [:o2, :o1, :o4, :o3]
    # an operation acknowledged by the other copy is answered, not applied again
    assert Client.op(id, {:update, :l2}, :o4) == {:ok, :ok}
    assert Job.finish(id) == [:l2, :l1, :w, :a, id]
  end

  test "pynode_job_merge on a Job.Otp: results win, else the smaller work left" do
    Application.put_env(:pynode, :work_ms, 60_000)
    # the job ends soon after its results (it would outlive the test otherwise)
    Application.put_env(:pynode, :result_ttl, 300)
    id = uniq("otpmerge")
    assert {:ok, pid} = Job.Otp.start(id)
    theirs = %{kind: :"Job.Otp", id: id, recent: [], seq: 2}
    working = %{id: id, results: nil, work_left_ms: 100, ttl_left_ms: nil}
    assert GenServer.call(pid, {:pynode_job_merge, Map.put(theirs, :state, working)}) == :ok
    assert %{results: nil, work_left_ms: left} = Jobs.get_state(id)
    assert left <= 100
    # the timer follows the merged state: the results come after the other copy's 100 ms
    assert wait_until(fn -> Job.Otp.check_results(id) end, 2_000) == "results of " <> id
    ref = Process.monitor(pid)
    assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 5_000
  end

  # A process that plays the winner of a name conflict: it answers one pynode_job_merge
  # call with `answer` and reports the portable it was given.
  defp fake_winner(answer) do
    test = self()

    spawn(fn ->
      receive do
        {:"$gen_call", from, {:pynode_job_merge, portable}} ->
          send(test, {:merged, portable})
          GenServer.reply(from, answer)
      end
    end)
  end

  test "a job that loses its name merges into the winner and ends; if the merge fails it serves again" do
    id = uniq("loser")
    assert {:ok, pid} = Job.start(id)
    assert Job.update(id, :e) == :ok
    ref = Process.monitor(pid)

    # the merge fails: the job takes its name back (it still holds it here) and serves
    Process.exit(pid, {:name_conflict, Jobs.key(id), fake_winner({:error, :nope})})
    assert_receive {:merged, %{kind: :Job, id: ^id, state: [:e, ^id], seq: 2}}, 5_000
    assert Job.update(id, :f) == :ok
    assert Registry.where(Jobs.key(id)) == pid

    # the merge succeeds: the job ends `normal`
    Process.exit(pid, {:name_conflict, Jobs.key(id), fake_winner(:ok)})
    assert_receive {:merged, %{state: [:f, :e, ^id], recent: [_, _], seq: 3}}, 5_000
    assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 5_000
  end

  test "other exit signals act on a job as on a process that does not trap exits" do
    id = uniq("signals")
    assert {:ok, pid} = Job.start(id)
    ref = Process.monitor(pid)
    Process.exit(pid, :normal)
    assert Job.update(id, :still_here) == :ok
    Process.exit(pid, {:name_conflict, Jobs.key({:another, id}), self()})
    assert_receive {:DOWN, ^ref, :process, ^pid, {:name_conflict, _, _}}, 5_000

    id = uniq("signals")
    assert {:ok, pid} = Job.start(id)
    ref = Process.monitor(pid)
    Process.exit(pid, :boom)
    assert_receive {:DOWN, ^ref, :process, ^pid, :boom}, 5_000
  end
end
