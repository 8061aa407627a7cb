defmodule Pynode.JobProtocolDocTest do
  # The protocol text at the top of Pynode.Jobs.Host must be docs/JOBS_PROTOCOL.md,
  # verbatim (as comment lines), so that the two cannot drift apart unnoticed.
  use ExUnit.Case, async: true

  @doc_path Path.expand("../../docs/JOBS_PROTOCOL.md", __DIR__)
  @impl_path Path.expand("../lib/pynode/jobs/host.ex", __DIR__)

  test "host.ex repeats docs/JOBS_PROTOCOL.md verbatim" do
    doc = @doc_path |> File.read!() |> String.trim_trailing()
    [_, block] = String.split(File.read!(@impl_path), "# --- BEGIN docs/JOBS_PROTOCOL.md ---\n")
    [block, _] = String.split(block, "\n  # --- END docs/JOBS_PROTOCOL.md ---")

    embedded =
      block
      |> String.split("\n")
      |> Enum.map_join("\n", fn line ->
        line |> String.replace_prefix("  #", "") |> String.replace_prefix(" ", "")
      end)

    assert embedded == doc,
           "lib/pynode/jobs/host.ex is out of step with docs/JOBS_PROTOCOL.md: " <>
             "copy the document into the comment block again"
  end
end
