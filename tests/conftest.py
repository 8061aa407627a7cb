# The pynode pytest plugin (fixtures beam_node, erl_node, elixir_node, node_name) is loaded
# through its entry point once the package is installed (./dev.sh test does `pip install -e .`).
# Do not add `pytest_plugins = ["pynode.pytest_plugin"]` here: it would register it twice.
