# The library's test setup (EPMD, distribution, a cookie of this run's own, discovery off on
# this node, ExUnit.start): the seed's tests run against the :pynode application the same way.
Code.require_file("../../elixir/test/test_helper.exs", __DIR__)
