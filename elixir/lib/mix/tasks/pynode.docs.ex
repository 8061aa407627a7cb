defmodule Mix.Tasks.Pynode.Docs do
  @shortdoc "Builds the API reference of the pynode library into doc/ (no ex_doc needed)"
  @moduledoc """
  Builds a static HTML reference of the project's modules from their `@moduledoc`, `@doc`,
  `@typedoc` and `@callback` docs, with no dependency (ex_doc comes from hex.pm, which the
  build machines cannot reach):

      cd elixir && mix pynode.docs            # writes doc/index.html and doc/<Module>.html

  It compiles the project with `--warnings-as-errors` first, then reads every module of the
  application with `Code.fetch_docs/1`. It fails (exit status 1, nothing written) and lists
  what is missing when a public module has no `@moduledoc`, or a public function, macro or
  callback of a documented module has no `@doc`. `@moduledoc false` and `@doc false` are
  explicit: such a module or function is left out of the reference. Functions that
  implement a behaviour (`@impl`) are documented by the behaviour.

  Options: `--output DIR` (default `doc`).
  """

  use Mix.Task

  @impl true
  def run(argv) do
    {opts, _, _} = OptionParser.parse(argv, strict: [output: :string])
    out = Keyword.get(opts, :output, "doc")
    Mix.Task.run("compile", ["--warnings-as-errors"])

    app = Mix.Project.config()[:app]
    :ok = Application.load(app) |> loaded()
    modules = app |> Application.spec(:modules) |> Enum.sort()
    docs = for mod <- modules, doc = module_docs(mod), do: doc
    missing = Enum.flat_map(docs, &missing/1)

    if missing != [] do
      Mix.shell().error("mix pynode.docs: #{length(missing)} public item(s) without docs:")
      for line <- missing, do: Mix.shell().error("  " <> line)

      Mix.raise("add @moduledoc/@doc (or an explicit @moduledoc false/@doc false) and run again")
    end

    shown = for %{hidden: false} = d <- docs, do: d
    File.mkdir_p!(out)
    File.write!(Path.join(out, "index.html"), index_page(app, shown))

    for d <- shown,
        do: File.write!(Path.join(out, "#{inspect(d.module)}.html"), module_page(app, d))

    Mix.shell().info("mix pynode.docs: #{length(shown)} module(s) written to #{out}/")
  end

  defp loaded(:ok), do: :ok
  defp loaded({:error, {:already_loaded, _}}), do: :ok
  defp loaded(other), do: Mix.raise("cannot load the application: #{inspect(other)}")

  # %{module, hidden, moduledoc, entries: [{kind, name, arity, signature, doc}], missing_mod}
  defp module_docs(mod) do
    case Code.fetch_docs(mod) do
      {:docs_v1, _anno, :elixir, _format, moduledoc, _meta, entries} ->
        %{
          module: mod,
          hidden: moduledoc == :hidden,
          moduledoc: text(moduledoc),
          no_moduledoc: moduledoc == :none,
          entries:
            for {{kind, name, arity}, _anno, signature, doc, meta} <- entries,
                not generated?(name, meta) do
              {kind, name, arity, Enum.join(signature, " "), doc}
            end
            |> Enum.sort_by(fn {kind, name, arity, _, _} -> {kind_order(kind), name, arity} end)
        }

      {:error, reason} ->
        Mix.raise("no docs for #{inspect(mod)}: #{inspect(reason)}")
    end
  end

  # compiler-generated functions (__struct__, __impl__, ...) and defaults of `use` macros
  defp generated?(name, meta),
    do:
      String.starts_with?(Atom.to_string(name), "__") or Map.get(meta, :delegate_to) == :generated

  defp kind_order(:callback), do: 0
  defp kind_order(:macrocallback), do: 1
  defp kind_order(:type), do: 2
  defp kind_order(:function), do: 3
  defp kind_order(:macro), do: 4
  defp kind_order(_), do: 5

  defp text(%{"en" => t}), do: t
  defp text(_), do: nil

  defp missing(%{hidden: true}), do: []
  defp missing(%{no_moduledoc: true, module: mod}), do: ["#{inspect(mod)}: no @moduledoc"]

  defp missing(%{module: mod, entries: entries}) do
    for {kind, name, arity, _sig, :none} <- entries,
        kind in [:function, :macro, :callback, :macrocallback] do
      "#{inspect(mod)}.#{name}/#{arity}: no @doc (#{kind})"
    end
  end

  ## HTML

  defp page(title, body) do
    """
    <!DOCTYPE html>
    <html lang="en"><head><meta charset="utf-8"><title>#{esc(title)}</title>
    <style>
    body { font-family: sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
    pre { background: #f4f4f4; padding: .6em; overflow-x: auto; }
    code { background: #f4f4f4; padding: 0 .2em; }
    h2 { border-bottom: 1px solid #ccc; } h3 { margin-top: 1.8em; font-family: monospace; }
    .kind { color: #777; font-size: .8em; font-weight: normal; }
    </style></head>
    <body>
    #{body}
    </body></html>
    """
  end

  defp index_page(app, docs) do
    items =
      Enum.map_join(docs, "\n", fn d ->
        ~s(<li><a href="#{inspect(d.module)}.html">#{esc(inspect(d.module))}</a> — #{esc(summary(d.moduledoc))}</li>)
      end)

    page("#{app} API reference", "<h1>#{app} API reference</h1>\n<ul>\n#{items}\n</ul>")
  end

  defp module_page(app, d) do
    entries =
      for {kind, name, arity, sig, doc} <- d.entries, doc != :hidden do
        id = "#{kind}-#{name}-#{arity}"
        title = if sig == "", do: "#{name}/#{arity}", else: sig

        ~s(<h3 id="#{esc(id)}">#{esc(title)} <span class="kind">#{kind}</span></h3>\n) <>
          markdown(text(doc) || "")
      end

    body =
      ~s(<p><a href="index.html">#{app} API reference</a></p>\n) <>
        "<h1>#{esc(inspect(d.module))}</h1>\n" <>
        markdown(d.moduledoc || "") <> Enum.join(entries, "\n")

    page(inspect(d.module), body)
  end

  defp summary(nil), do: ""
  defp summary(doc), do: doc |> String.split("\n\n") |> hd() |> String.replace("\n", " ")

  # A small subset of Markdown: headings, fenced and indented code, lists, tables as text,
  # paragraphs, inline `code`.
  defp markdown(text) do
    text
    |> String.split("\n")
    |> blocks([])
    |> Enum.map_join("\n", &render/1)
  end

  defp blocks([], acc), do: Enum.reverse(acc)

  defp blocks(["```" <> _ | rest], acc) do
    {code, rest} = Enum.split_while(rest, &(not String.starts_with?(&1, "```")))
    blocks(Enum.drop(rest, 1), [{:code, code} | acc])
  end

  defp blocks(["    " <> _ | _] = lines, acc) do
    {code, rest} = Enum.split_while(lines, &(String.starts_with?(&1, "    ") or &1 == ""))
    {code, back} = trim_blank_tail(code)
    blocks(back ++ rest, [{:code, Enum.map(code, &String.replace_prefix(&1, "    ", ""))} | acc])
  end

  defp blocks(["#" <> _ = line | rest], acc) do
    [hashes | words] = String.split(line, " ", parts: 2)
    level = min(String.length(hashes) + 1, 6)
    blocks(rest, [{:heading, level, Enum.join(words)} | acc])
  end

  defp blocks(["" | rest], acc), do: blocks(rest, acc)

  defp blocks([line | _] = lines, acc) do
    # the first line is neither blank nor a fence nor a heading (the clauses above): never []
    {para, rest} =
      Enum.split_while(lines, &(&1 != "" and not String.starts_with?(&1, ["```", "#"])))

    cond do
      String.starts_with?(line, "|") -> blocks(rest, [{:code, para} | acc])
      String.match?(line, ~r/^\s*[*-] /) -> blocks(rest, [{:list, para} | acc])
      true -> blocks(rest, [{:para, para} | acc])
    end
  end

  defp trim_blank_tail(lines) do
    trailing = lines |> Enum.reverse() |> Enum.take_while(&(&1 == ""))
    {Enum.drop(lines, -length(trailing)), trailing}
  end

  defp render({:code, lines}), do: "<pre><code>#{esc(Enum.join(lines, "\n"))}</code></pre>"
  defp render({:heading, level, t}), do: "<h#{level}>#{inline(t)}</h#{level}>"
  defp render({:para, lines}), do: "<p>#{inline(Enum.join(lines, "\n"))}</p>"

  defp render({:list, lines}) do
    items =
      lines
      |> Enum.chunk_while(
        [],
        fn line, cur ->
          if String.match?(line, ~r/^\s*[*-] /) and cur != [],
            do: {:cont, Enum.reverse(cur), [line]},
            else: {:cont, [line | cur]}
        end,
        fn cur -> {:cont, Enum.reverse(cur), []} end
      )
      |> Enum.reject(&(&1 == []))
      |> Enum.map_join("\n", fn item ->
        t = item |> Enum.join(" ") |> String.replace(~r/^\s*[*-] /, "")
        "<li>#{inline(t)}</li>"
      end)

    "<ul>\n#{items}\n</ul>"
  end

  defp inline(t) do
    t
    |> esc()
    |> String.replace(~r/`([^`]+)`/, "<code>\\1</code>")
    |> String.replace(~r/\*\*([^*]+)\*\*/, "<strong>\\1</strong>")
  end

  defp esc(t) do
    t
    |> to_string()
    |> String.replace("&", "&amp;")
    |> String.replace("<", "&lt;")
    |> String.replace(">", "&gt;")
    |> String.replace("\"", "&quot;")
  end
end
