defmodule Pynode.ProtocolDocTest do
  # The protocol documents in docs/ are the contract; the modules below repeat them verbatim
  # (as comment lines between BEGIN/END markers), so that they cannot drift apart unnoticed.
  # `python scripts/sync_protocol_docs.py` (from the repository root) copies them again.
  use ExUnit.Case, async: true

  @root Path.expand("../..", __DIR__)

  for {doc, impl} <- [
        {"docs/REGISTRY_PROTOCOL.md", "elixir/lib/pynode/registry_impl.ex"},
        {"docs/JOBS_PROTOCOL.md", "elixir/lib/pynode/jobs/host.ex"}
      ] do
    test "#{impl} repeats #{doc} verbatim" do
      doc = unquote(doc)
      impl = unquote(impl)
      text = Path.join(@root, doc) |> File.read!() |> String.trim_trailing()
      [_, block] = String.split(File.read!(Path.join(@root, impl)), "# --- BEGIN #{doc} ---\n")
      [block, _] = String.split(block, "\n  # --- END #{doc} ---")

      embedded =
        block
        |> String.split("\n")
        |> Enum.map_join("\n", fn line ->
          line |> String.replace_prefix("  #", "") |> String.replace_prefix(" ", "")
        end)

      assert embedded == text,
             "#{impl} is out of step with #{doc}: run python scripts/sync_protocol_docs.py"
    end
  end
end
