defmodule Pynode.Test.Vectors do
  @moduledoc false
  # The shared job vectors (docs/vectors/jobs.terms, also read by the Python suite), for the
  # vector tests of the library (elixir/test) and of the seed's kinds (mix_compat/test).

  import ExUnit.Assertions

  @path Path.expand("../../../docs/vectors/jobs.terms", __DIR__)

  @doc "The path of the vectors file."
  def path, do: @path

  @doc "Every term of the file, read when the tests run."
  def all do
    {:ok, terms} = :file.consult(String.to_charlist(@path))
    terms
  end

  @doc "The vectors of `tag` (tuples whose first element it is); fails when there are none."
  def of(tag) do
    found = for term <- all(), is_tuple(term), elem(term, 0) == tag, do: term
    assert found != [], "no #{tag} vectors in #{@path}"
    found
  end
end
