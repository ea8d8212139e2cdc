"""The `ponder` command line: eval, submit, jobs, serve, solve, report, calibrate, strategies.

Every input is validated before anything is written: a bad flag, config, strategy, budget,
dataset or model prints one line `ponder: error: ...` and exits 2 (usage) or 1 (anything else),
and an existing results file is left byte-identical. Results are appended one durable line at a
time, so an interrupted eval resumes where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from ponder.api import report
from ponder.jobs import spec as spec_mod
from ponder.jobs.core import run_job
from ponder.jobs.local import LocalQueue
from ponder.jobs.records import chosen_rewards
from ponder.jobs.spec import JobSpec, SpecError, load_strategies, runner_config
from ponder.jobs.store import (
    JsonlStore,
    MemoryStore,
    ResultStore,
    StoreError,
    open_store,
    record_key,
)
from ponder.config import IN_PROCESS, Budget, ConfigError, PonderConfig
from ponder.search import registry
from ponder.search.types import Candidate, Compute, Problem, SearchResult

USAGE, FAILURE, INTERRUPTED = 2, 1, 130


class CliError(Exception):
    def __init__(self, message: str, code: int = FAILURE):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage dump
        raise CliError(message, USAGE)


# ---------------------------------------------------------------------------- building blocks


def _one_line(e: BaseException) -> str:
    cause = getattr(e, "cause", None)  # a Ray task error: the remote exception, not its traceback
    if isinstance(cause, BaseException):
        e = cause
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split())


def load_config(args: argparse.Namespace) -> PonderConfig:
    """YAML file, then `--set` overrides, then the dedicated flags (flags win)."""
    try:
        config = PonderConfig.load(args.config, args.set or [])
    except ConfigError as e:
        raise CliError(_one_line(e), USAGE) from None
    except (TypeError, ValueError) as e:  # e.g. a value of the wrong shape for a section
        raise CliError(f"bad config: {_one_line(e)}", USAGE) from None
    if getattr(args, "address", None):
        config.cluster.address = args.address
    return config


def _spec_call(fn: Any, *args: Any) -> Any:
    """Run a job-spec validator; its one-line error is a usage error here."""
    try:
        return fn(*args)
    except SpecError as e:
        raise CliError(str(e), USAGE) from None


def resolve_strategies(names: list[str] | None, config: PonderConfig) -> list[registry.Strategy]:
    return _spec_call(spec_mod.resolve_strategies, names, config)


def resolve_budgets(specs: list[str] | None, config: PonderConfig) -> list[Budget]:
    return _spec_call(spec_mod.resolve_budgets, specs, config)


def strategy_params(strategies: list[registry.Strategy], budgets: list[Budget], config: PonderConfig) -> dict[str, dict[str, Any]]:
    return _spec_call(spec_mod.strategy_params, strategies, budgets, config)


def check_model_paths(config: PonderConfig) -> None:
    """The engines' kinds and model directories, before anything is printed or started."""
    from ponder.actors.factory import ENGINES

    for role, engine in (("policy", config.policy), ("reward", config.reward)):
        if engine.kind not in ENGINES:
            raise CliError(f"unknown engine kind {engine.kind!r} for the {role} (known: {', '.join(ENGINES)})")
        if engine.kind == "hf" and engine.path is not None:
            p = Path(engine.path)
            if not p.is_dir():
                raise CliError(f"{role} model directory not found: {p}")
            if not os.access(p, os.R_OK | os.X_OK):
                raise CliError(f"{role} model directory is not readable: {p}")
            if not (p / "config.json").is_file():
                raise CliError(f"{role} model directory {p} holds no model (no config.json)")


def make_runner(config: PonderConfig) -> Any:
    check_model_paths(config)
    from ponder.scheduler import make_runner as build

    try:
        return build(runner_config(config))
    except CliError:
        raise
    except Exception as e:  # engine construction: missing weights, bad options, no Ray...
        raise CliError(f"cannot start engines: {_one_line(e)}") from None


def load_problems(spec: str, limit: int | None) -> list[Problem]:
    from ponder.tasks.datasets import load_problems as load

    try:
        problems = list(load(spec, limit=limit))
    except ValueError as e:  # DatasetError is a ValueError
        raise CliError(_one_line(e)) from None
    except OSError as e:
        raise CliError(f"cannot read dataset {spec}: {e.strerror or _one_line(e)}") from None
    if not problems:
        raise CliError(f"dataset {spec} has no problems")
    seen: set[str] = set()
    for p in problems:
        if p.id in seen:  # ids key the results: duplicates would make resume skip problems
            raise CliError(f"dataset {spec} has a duplicate problem id {p.id!r}")
        seen.add(p.id)
    return problems


def check_writable(path: Path, what: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if path.exists() and path.is_dir():
        raise CliError(f"{what} {path} is a directory")
    if not parent.is_dir():
        raise CliError(f"{what} directory does not exist: {parent}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CliError(f"{what} {path} is not writable")


_told_interrupt = False


def _interrupted(message: str) -> None:
    """Say it once, and let the shutdown that follows finish: a second Ctrl-C during it would
    only print Ray's atexit traceback and leave its processes behind."""
    global _told_interrupt
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not _told_interrupt:
        print(message, file=sys.stderr)
        _told_interrupt = True


def close_runner(runner: Any) -> None:
    """Release a runner's resources (a Ray scheduler actor); called outside any event loop,
    since a remote runner's shutdown blocks."""
    try:
        asyncio.run(runner.close())
    except Exception as e:  # the results are safe already; do not bury them in a traceback
        print(f"ponder: warning: runner shutdown failed: {_one_line(e)}", file=sys.stderr)


# ---------------------------------------------------------------------------- commands


def cmd_eval(args: argparse.Namespace) -> int:
    # 1. Validate everything; nothing is written before step 3.
    config = load_config(args)
    spec = _spec_call(lambda: JobSpec.build(config, args.strategy, args.budget, dataset=args.dataset, owner=_owner(),
                                            max_attempts=args.max_attempts or config.jobs.max_attempts))
    out_path = Path(args.out) if args.out else None
    check_outputs(args.dataset, out_path, Path(args.plot) if args.plot else None)
    problems = load_problems(args.dataset, args.limit)
    items = _spec_call(spec.plan, problems)
    try:
        store: ResultStore = open_store(out_path) if out_path else MemoryStore()
    except StoreError as e:
        raise CliError(_one_line(e)) from None
    check_model_paths(config)
    for warning in store.warnings:
        print(f"ponder: warning: {warning}", file=sys.stderr)

    # 2. Work out what is left to do (before any engine starts: a finished eval starts nothing).
    queue = LocalQueue(items, store, spec.max_attempts)
    total = len(queue.pending)
    runner = make_runner(config) if total else None  # its failure is the only line, if it fails
    print(
        f"ponder: {len(problems)} problems x {len(spec.strategies)} strategies x {len(spec.budgets)} budgets"
        + (f"; {queue.already} already in {out_path}, {total} to run" if queue.already else f"; {total} to run"),
        file=sys.stderr,
    )

    # 3. Run, appending each result as it finishes.
    try:
        if runner is not None:
            asyncio.run(_run_local(runner, spec, queue, total, quiet=args.quiet))
    except KeyboardInterrupt:
        _interrupted(f"ponder: interrupted{_resume_hint(out_path)}")
        return INTERRUPTED
    except Exception as e:  # the runner or the disk failed: what was written stays valid
        print(f"ponder: error: run failed: {type(e).__name__}: {_one_line(e)}{_resume_hint(out_path)}", file=sys.stderr)
        return FAILURE
    finally:
        store.close()
        if runner is not None:
            close_runner(runner)

    # 4. Summarise this run's keys (the file may hold other configs' results too).
    records = [r for r in store.records() if record_key(r) in queue.keys]
    rows = report.summarize(records)
    print(report.format_table(rows))
    print(report.LEGEND, file=sys.stderr)
    if args.plot:
        report.plot(rows, args.plot, title=f"{Path(args.dataset).name}: accuracy versus compute")
        print(f"plot: {args.plot}", file=sys.stderr)
    failed = [r for r in records if r.get("stop_reason") == "error"]
    if failed:
        print(
            f"ponder: error: {len(failed)} of {len(records)} searches failed after {spec.max_attempts} attempts "
            f"(first: {failed[0].get('error')}); run the same command again to retry them",
            file=sys.stderr,
        )
        return FAILURE
    return 0


def _owner() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (a container without /etc/passwd entry)
        return f"uid{os.getuid()}"


def check_outputs(dataset: str | None, out: Path | None, plot: Path | None) -> None:
    """Every output path, before any work starts."""
    if out is not None:
        check_writable(out, "results file")
        if dataset and out.exists() and Path(dataset).exists() and out.samefile(dataset):
            raise CliError("--out must not be the dataset file", USAGE)
    if plot is not None:
        check_plot(plot, out, dataset)


def check_plot(plot: Path, *others: Path | str | None) -> None:
    """A plot path matplotlib can write, that is not one of the run's other files."""
    check_writable(plot, "plot file")
    for other in others:
        if other is not None and Path(other).resolve() == plot.resolve():
            raise CliError(f"--plot {plot} would overwrite {other}", USAGE)
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    kinds = Figure().canvas.get_supported_filetypes()
    ext = plot.suffix.lower().lstrip(".")
    if ext not in kinds:
        got = f"'.{ext}'" if ext else "no extension"
        raise CliError(f"--plot {plot} has {got}; use one of {', '.join('.' + k for k in sorted(kinds))}", USAGE)


def _resume_hint(out_path: Path | None) -> str:
    return f"; results so far are in {out_path}: run the same command to resume" if out_path else ""


async def _run_local(runner: Any, spec: JobSpec, queue: LocalQueue, total: int, quiet: bool) -> None:
    from tqdm import tqdm

    counts = {"finished": 0, "graded": 0, "correct": 0, "cost": 0.0}
    bar = tqdm(
        total=total, unit="problem", desc="eval", file=sys.stderr, dynamic_ncols=True, disable=quiet or total == 0
    )

    def on_record(record: dict[str, Any], written: bool) -> None:
        if not written:
            return
        counts["finished"] += 1
        counts["cost"] += record["compute"]["cost"]
        if record["correct"] is not None:
            counts["graded"] += 1
            counts["correct"] += bool(record["correct"])
        bar.update(1)
        bar.set_postfix(
            acc=f"{100 * counts['correct'] / counts['graded']:.1f}%" if counts["graded"] else "-",
            tokens=f"{counts['cost'] / counts['finished']:.0f}/problem",
            refresh=False,
        )

    watch = asyncio.ensure_future(_watch_replicas(runner, bar.write))
    try:
        await run_job(runner, spec, queue, concurrency=spec.ponder_config().scheduler.max_concurrent_searches,
                      on_record=on_record, poll_s=0.05, max_runtime_failures=3, retry_pause_s=0.5)
    finally:
        watch.cancel()
        bar.close()


async def _watch_replicas(runner: Any, say: Any, every_s: float = 2.0) -> None:
    """Tell the user, in a line, when a replica was lost and when it was replaced (the pools
    recover by themselves; their own warnings go only to Ray's logs)."""
    seen: dict[tuple[str, str], int] = {}
    while True:
        await asyncio.sleep(every_s)
        try:
            stats = await runner.stats()
        except Exception:  # the scheduler is restarting: the job loop reports that
            continue
        for role in ("policy", "reward"):
            pool = stats.get(f"{role}_pool") or {}
            for key, what in (("restarts_seen", "lost; its requests went to another replica"),
                              ("replaced", "replaced by a new one")):
                n, before = int(pool.get(key, 0)), seen.get((role, key), 0)
                if n > before:
                    say(f"ponder: {n - before} {role} replica(s) {what} ({pool.get('replicas', '?')} now serving)")
                seen[(role, key)] = n


# ---------------------------------------------------------------------------- jobs on a store


def _redis_url(args: argparse.Namespace, config: PonderConfig | None = None) -> str:
    """--redis, else jobs.redis_url, else the embedded server under the state directory."""
    from ponder.jobs.embedded import EmbeddedRedis

    url = getattr(args, "redis", None) or (config.jobs.redis_url if config is not None else None)
    if url:
        if not str(url).startswith(("redis://", "rediss://", "unix://")):
            raise CliError(f"--redis must be a redis://, rediss:// or unix:// URL, got {url!r}", USAGE)
        return url
    state = _state_dir(args, config)
    try:
        return EmbeddedRedis(state).ensure()
    except Exception as e:
        raise CliError(f"cannot start the embedded Redis under {state}: {_one_line(e)}") from None


def _state_dir(args: argparse.Namespace, config: PonderConfig | None = None) -> Path:
    from ponder.jobs.embedded import default_state_dir

    given = getattr(args, "state_dir", None) or (config.jobs.state_dir if config is not None else None)
    return Path(given) if given else default_state_dir()


def _connect_cluster(args: argparse.Namespace, config: PonderConfig) -> None:
    """Join the cluster the job runs on; the embedded default is a local head that outlives us."""
    from ponder.scheduler.cluster import ensure_local_head, ensure_ray

    address = config.cluster.address
    try:
        if address == "local":  # before `ray` is imported: it reads the local head's settings then
            address = ensure_local_head(_state_dir(args, config))
        ensure_ray(dataclasses.replace(config.cluster, address=address))
    except ConfigError as e:
        raise CliError(_one_line(e)) from None


def cmd_submit(args: argparse.Namespace) -> int:
    config = load_config(args)
    spec = _spec_call(lambda: JobSpec.build(
        config, args.strategy, args.budget, dataset=args.dataset, job_budget=args.job_budget, owner=_owner(),
        name=args.name or "", max_attempts=args.max_attempts or config.jobs.max_attempts))
    if not config.cluster.uses_ray:
        raise CliError("a submitted job runs on a Ray cluster: --address inprocess cannot be used here", USAGE)
    if config.cluster.address != "local" and not (args.redis or config.jobs.redis_url):
        raise CliError("a job on a cluster needs a Redis every node reaches: pass --redis URL or set jobs.redis_url", USAGE)
    problems = load_problems(args.dataset, args.limit)
    _spec_call(spec.plan, problems)
    from ponder.jobs.client import call

    url = _redis_url(args, config)
    _connect_cluster(args, config)
    job_id = call(url, lambda c: c.submit(spec, problems))
    from ponder.jobs.worker import ensure_worker

    try:
        ensure_worker(url, config)
    except Exception as e:  # the job is stored: a worker started later picks it up
        print(f"ponder: warning: job {job_id} is queued, but no job worker could be started: {_one_line(e)}",
              file=sys.stderr)
    print(job_id)
    print(f"ponder: submitted {len(problems)} problems x {len(spec.strategies)} strategies x {len(spec.budgets)} "
          f"budgets; watch it with: ponder jobs wait {job_id}", file=sys.stderr)
    return 0


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def cmd_serve(args: argparse.Namespace) -> int:
    config = load_config(args)
    if args.host:
        config.api.host = args.host
    if args.port is not None:
        config.api.port = args.port
    try:
        config.api.validate()
        from ponder.api.auth import ENV_KEY, load_tokens

        tokens = load_tokens(config.api)
    except ConfigError as e:
        raise CliError(_one_line(e), USAGE) from None
    if not config.cluster.uses_ray:
        raise CliError("the HTTP service runs on a Ray cluster: --address inprocess cannot be used here", USAGE)
    if not tokens:
        if config.api.host not in LOOPBACK:
            print(f"ponder: no API key is configured ({ENV_KEY} or api.tokens_file): listening on 127.0.0.1 only, "
                  f"not {config.api.host}", file=sys.stderr)
        config.api.host = "127.0.0.1"
    check_model_paths(config)
    url = _redis_url(args, config)
    _connect_cluster(args, config)
    from ponder.api import server

    try:
        base = server.deploy(config, url, tokens)
        print("ponder: starting the pools (the first start loads the models)...", file=sys.stderr)
        health = server.wait_ready(base)
    except CliError:
        raise
    except Exception as e:
        raise CliError(f"cannot start the HTTP service: {_one_line(e)}") from None
    auth = f"bearer tokens for {len(set(tokens.values()))} tenant(s)" if tokens else "no auth (loopback only)"
    print(f"ponder: serving on {base} ({auth}; replicas {health.get('replicas')})", file=sys.stderr)
    print(f"ponder: OpenAI base URL {base}/v1 ; native API POST {base}/v1/solve ; Ctrl-C stops", file=sys.stderr)
    rec = server.record(_state_dir(args, config), base, config)
    try:
        server.serve_until_interrupted()
    finally:
        rec.unlink(missing_ok=True)
    return 0


def _fmt_status(st: dict[str, Any]) -> str:
    acc = f"{100 * st['accuracy']:.1f}%" if st.get("accuracy") is not None else "-"
    eta = f"{st['eta_s']:.0f}s" if st.get("eta_s") is not None else "-"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(st["created_at"])) if st.get("created_at") else "-"
    line = (f"{st['id']}  {st['status']:<9}  {st['done']}/{st['total']}  errors {st['errors']}  acc {acc}  "
            f"tokens {st['cost']:.0f}  eta {eta}  {st.get('dataset') or '-'}  {st.get('owner') or '-'}  {when}")
    return line + (f"  ({st['error']})" if st.get("error") else "")


def _job_call(args: argparse.Namespace, fn: Any) -> Any:
    from ponder.jobs.client import call

    return call(_redis_url(args), fn)


def _need(st: Any, job_id: str) -> Any:
    if st is None:
        raise CliError(f"no job {job_id}")
    return st


def cmd_jobs_list(args: argparse.Namespace) -> int:
    rows = _job_call(args, lambda c: c.list(None if args.all else _owner()))
    for st in rows:
        print(_fmt_status(st))
    if not rows:
        print("ponder: no jobs" + ("" if args.all else f" of {_owner()} (--all lists every owner's)"), file=sys.stderr)
    return 0


def cmd_jobs_status(args: argparse.Namespace) -> int:
    st = _need(_job_call(args, lambda c: c.status(args.job_id)), args.job_id)
    if args.json:
        print(json.dumps(st, default=str))
    else:
        print(_fmt_status(st))
    return 0


def cmd_jobs_results(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    if out is not None:
        check_writable(out, "results file")

    async def fetch(c: Any) -> Any:
        return await c.status(args.job_id), await c.results(args.job_id)

    st, records = _job_call(args, fetch)
    _need(st, args.job_id)
    text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
    if out is None:
        sys.stdout.write(text)
    else:  # whole file or nothing: write beside it, then rename
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)
        print(f"ponder: {len(records)} records of job {args.job_id} ({st['status']}) in {out}", file=sys.stderr)
    if args.summary and records:
        print(report.format_table(report.summarize(records)), file=sys.stderr if out is None else sys.stdout)
    return 0


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    async def go(c: Any) -> Any:
        return await c.status(args.job_id), await c.cancel(args.job_id)

    st, ok = _job_call(args, go)
    _need(st, args.job_id)
    if not ok:
        raise CliError(f"job {args.job_id} is already {st['status']}")
    print(f"ponder: job {args.job_id} cancelled ({st['done']}/{st['total']} done; its records stay)", file=sys.stderr)
    return 0


def cmd_jobs_wait(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    bar: Any = None

    def on_progress(st: dict[str, Any]) -> None:
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            bar = tqdm(total=st["total"], initial=st["done"], unit="problem", desc=st["id"][:8], file=sys.stderr,
                       dynamic_ncols=True)
        bar.update(st["done"] - bar.n)
        bar.set_postfix(acc=f"{100 * st['accuracy']:.1f}%" if st.get("accuracy") is not None else "-",
                        status=st["status"], refresh=False)

    try:
        st = _job_call(args, lambda c: c.wait(args.job_id, on_progress, timeout_s=args.timeout))
    except KeyError:
        raise CliError(f"no job {args.job_id}") from None
    except TimeoutError as e:
        raise CliError(_one_line(e)) from None
    finally:
        if bar is not None:
            bar.close()
    print(_fmt_status(st))
    return 0 if st["status"] == "completed" and not st["errors"] else FAILURE


def cmd_solve(args: argparse.Namespace) -> int:
    config = load_config(args)
    [strategy] = resolve_strategies([args.strategy] if args.strategy else None, config)
    [budget] = resolve_budgets([args.budget] if args.budget else None, config)
    params = strategy_params([strategy], [budget], config)[strategy.name]
    text = args.problem.strip()
    if not text:
        raise CliError("the problem text is empty", USAGE)
    from ponder.tasks.forms import policy_form, prepare

    prepared = prepare(text, policy_form(config.policy))
    if prepared.notice:
        print(f"ponder: {prepared.notice}", file=sys.stderr)
    problem = Problem(id="cli", problem=prepared.text, answer=args.reference)
    result = _solve_on_server(args, config, problem, strategy.name, budget, params)
    if result is None:
        if config.cluster.address == "local" and not args.address:
            # One problem: engines in this process (no cluster to start), unless a server runs.
            config = dataclasses.replace(config, cluster=dataclasses.replace(config.cluster, address=IN_PROCESS))
        runner = make_runner(config)
        try:
            result = asyncio.run(runner.solve(problem, strategy.name, budget, params))
        except KeyboardInterrupt:
            _interrupted("ponder: interrupted")
            return INTERRUPTED
        finally:
            close_runner(runner)
    if result.stop_reason == "error":
        raise CliError(f"search failed: {result.meta.get('error', 'unknown error')}")
    print(format_solution(result, budget, problem))
    return 0


def _solve_on_server(args: argparse.Namespace, config: PonderConfig, problem: Problem, strategy: str,
                     budget: Budget, params: dict[str, Any]) -> SearchResult | None:
    """The search on a running `ponder serve` of the same deployment, if there is one (no engine
    to load); None otherwise. Only on the embedded default (no --address)."""
    if args.address or config.cluster.address != "local":
        return None
    from ponder.api.server import find_server

    url = find_server(_state_dir(args, config), config)
    if url is None:
        return None
    import httpx

    headers = {"Authorization": f"Bearer {os.environ['PONDER_API_KEY']}"} if os.environ.get("PONDER_API_KEY") else {}
    body = {"problem": problem.problem, "id": problem.id, "strategy": strategy, "budget": budget.label(),
            "params": params, "answer": problem.answer}
    try:
        r = httpx.post(f"{url}/v1/solve", json=body, headers=headers, timeout=None)
    except httpx.HTTPError:
        return None  # it went away: solve here instead
    if r.status_code != 200:
        raise CliError(f"the server at {url} refused the search: {r.json().get('error', {}).get('message', r.text)}")
    print(f"ponder: solved on the running server at {url}", file=sys.stderr)
    d = r.json()
    trajectory = [s["step"] for s in d["path"]]
    chosen_rewards = [s["reward"] for s in d["path"]]
    # The response lists candidates without their steps; the chosen one is the path itself.
    cands = [Candidate(steps=trajectory if c["rewards"] == chosen_rewards else [], rewards=c["rewards"],
                       score=c["score"], answer=c["answer"], tokens=c["tokens"], terminal=c["finished"])
             for c in d["candidates"]]
    return SearchResult(problem_id=problem.id, strategy=d["strategy"], answer=d["answer"], trajectory=trajectory,
                        candidates=cands, compute=Compute(**d["compute"]), wall_time=d["wall_time_s"],
                        stop_reason=d["stop_reason"], correct=d["correct"], meta={"budget": d["budget"]})


def format_solution(result: SearchResult, budget: Budget, problem: Problem) -> str:
    verdict = ""
    if problem.answer is not None:
        verdict = "  (correct)" if result.correct else f"  (wrong; reference {problem.answer})"
    lines = [f"answer: {result.answer if result.answer is not None else '(none found)'}{verdict}", ""]
    lines.append("reasoning (PRM reward per step):")
    for i, (step, reward) in enumerate(zip(result.trajectory, chosen_rewards(result)), 1):
        r = f"{reward:.3f}" if reward is not None else "  -  "
        body = step.strip().split("\n")
        lines.append(f"  {i:>2}. [{r}] {body[0]}")
        lines += [f"      {' ' * 8}{more}" for more in body[1:]]
    if not result.trajectory:
        lines.append("  (no steps)")
    c = result.compute
    lines += [
        "",
        f"strategy: {result.strategy}  budget: {budget.label()}  stop: {result.stop_reason}  "
        f"candidates: {len(result.candidates)}",
        f"compute: {c.cost:.0f} tokens (policy {c.policy_tokens}, PRM {c.prm_tokens}), "
        f"{c.generations} generations, {c.score_calls} PRM calls, {result.wall_time:.2f} s",
    ]
    return "\n".join(lines)


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Learn the allocation table (difficulty bin x budget -> strategy) on a labelled dev set."""
    from ponder.scheduler.calibrate import candidate, resolve_candidates

    config = load_config(args)
    specs = list(dict.fromkeys(args.strategy or list(CALIBRATE_STRATEGIES)))
    try:
        names = [candidate(s)[0] for s in specs]
    except ValueError as e:
        raise CliError(_one_line(e), USAGE) from None
    strategies = resolve_strategies(names, config)
    budgets = resolve_budgets(args.budget, config)
    params = strategy_params(strategies, budgets, config)  # --set search.params.* apply, and go into the table
    try:
        resolve_candidates(specs, budgets, params)
    except ValueError as e:
        raise CliError(_one_line(e), USAGE) from None
    out = Path(args.out)
    check_writable(out, "table file")
    problems = load_problems(args.dataset, args.limit)
    if any(p.answer is None for p in problems):
        raise CliError(f"dataset {args.dataset} needs reference answers to calibrate")
    from ponder.scheduler.allocation import AllocationTable
    from ponder.scheduler.calibrate import calibrate

    try:
        base = AllocationTable.load(config.scheduler.allocation_table)
    except ConfigError as e:
        raise CliError(_one_line(e), USAGE) from None
    runner = make_runner(config)
    try:
        table = asyncio.run(calibrate(problems, runner, budgets, specs,
                                      probe_samples=config.scheduler.probe_samples, base=base, params=params))
    except KeyboardInterrupt:
        _interrupted("ponder: interrupted; no table written")
        return INTERRUPTED
    finally:
        close_runner(runner)
    out.write_text(yaml.safe_dump(table, sort_keys=False))
    print(f"allocation table: {out} (use it with --set scheduler.allocation_table={out})")
    return 0


# What `ponder calibrate` compares when no --strategy is given.
CALIBRATE_STRATEGIES = ("best_of_n", "beam_search", "dvts")


def cmd_deploy_render(args: argparse.Namespace) -> int:
    from ponder.deploy import render, write

    config = load_config(args)
    try:
        files = render(config, args.target, source=args.config)
    except ConfigError as e:
        raise CliError(_one_line(e), USAGE) from None
    try:
        written = write(files, Path(args.out))
    except OSError as e:
        raise CliError(f"cannot write under {args.out}: {e.strerror or e}") from None
    for path in written:
        print(path, file=sys.stderr)
    print(f"ponder: rendered {len(written)} file(s) for {', '.join(dict.fromkeys(args.target))} into {args.out}",
          file=sys.stderr)
    return 0


def cmd_strategies(args: argparse.Namespace) -> int:
    import textwrap

    from ponder.search.aggregate import AGGREGATIONS, SELECTIONS

    choices = {"aggregation": AGGREGATIONS, "selection": SELECTIONS, "prior": ("prm", "uniform")}
    load_strategies()
    for name in registry.names():
        s = registry.get(name)
        doc = (s.fn.__doc__ or sys.modules[s.fn.__module__].__doc__ or "").strip().split("\n\n")[0]
        doc = " ".join(doc.split())
        print(textwrap.fill(f"{name}" + (f": {doc}" if doc else ""), width=100, subsequent_indent="  "))
        for f in dataclasses.fields(s.config_cls):
            if f.metadata.get("internal"):  # set by the runner, not a user parameter
                continue
            if f.default is not dataclasses.MISSING:
                default = repr(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = repr(f.default_factory())
            else:
                default = "(required)"
            ftype = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            allowed = f"  (one of: {', '.join(choices[f.name])})" if f.name in choices and ftype == "str" else ""
            print(f"    {f.name}: {ftype} = {default}{allowed}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    path = Path(args.results)
    if not path.is_file():
        raise CliError(f"results file not found: {path}")
    if args.plot:
        check_plot(Path(args.plot), path)
    try:
        store = JsonlStore(path)
    except StoreError as e:
        raise CliError(_one_line(e)) from None
    for warning in store.warnings:
        print(f"ponder: warning: {warning}", file=sys.stderr)
    records = store.records()
    if not records:
        raise CliError(f"results file {path} has no results")
    rows = report.summarize(records)
    print(report.format_table(rows))
    print(report.LEGEND, file=sys.stderr)
    if args.plot:
        report.plot(rows, args.plot, title=f"{path.name}: accuracy versus compute")
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config file")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--address", metavar="ADDR|local|inprocess",
                   help="Ray cluster address; 'local' (default) starts a local cluster; 'inprocess': no Ray")


def _add_store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis", metavar="URL", help="the job store (default: jobs.redis_url, else an embedded Redis)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="where the embedded Redis and local cluster keep their state (default ~/.local/state/ponder)")


EXAMPLES = """examples:
  ponder eval --dataset arith:100 --strategy best_of_n --strategy beam_search \\
      --budget n=4 --budget n=16 --out results.jsonl --plot acc.png
  ponder eval --dataset math500.jsonl --strategy auto --budget 8k --out r.jsonl --address auto
  ponder solve "Compute (37 + 48) * 6." --strategy beam_search --budget n=8
  ponder report results.jsonl --plot acc.png
  ponder submit arith:1000 --strategy beam_search --budget n=8     # prints a job id, returns at once
  ponder jobs wait JOB_ID ; ponder jobs results JOB_ID --out r.jsonl ; ponder jobs cancel JOB_ID
  ponder serve --port 8000        # HTTP: POST /v1/solve, OpenAI-compatible /v1/chat/completions
Running the same eval again resumes it: finished problems are skipped, failed ones retried."""


DATASET_HELP = ("a JSONL/parquet/json file (problem, answer, optional id and level), hf:NAME[:split], or the "
                "built-in arithmetic task arith:N[:seed=S][:levels=1,3,5] (levels 1-5, ranges like 2-4)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ponder",
        description="Test-time search for small language models, guided by a PRM.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from ponder import __version__

    parser.add_argument("--version", action="version", version=f"ponder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("eval", help="evaluate strategies and budgets on a dataset")
    p.add_argument("--dataset", required=True, metavar="PATH|arith:N|hf:NAME", help=DATASET_HELP)
    p.add_argument("--strategy", action="append", metavar="NAME",
                   help="search strategy (repeatable; default search.strategy, best_of_n; list: ponder strategies)")
    p.add_argument("--budget", action="append", metavar="TOKENS|n=N",
                   help="compute budget: tokens (4096, 8k), a width (n=16) or both (n=16,tokens=4096) "
                        "(repeatable; default search.budget, n=16)")
    p.add_argument("--out", metavar="FILE.jsonl", help="results file; an existing one is resumed")
    p.add_argument("--plot", metavar="FILE.png", help="accuracy-versus-compute plot")
    p.add_argument("--limit", type=_positive_int, metavar="K", help="only the first K problems")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--max-attempts", type=_positive_int, metavar="K",
                   help="a search that fails K times ends as an error record (default jobs.max_attempts, 3)")
    _add_config_flags(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("submit", help="submit an evaluation job to the cluster; prints its id and returns")
    p.add_argument("dataset", metavar="PATH|arith:N|hf:NAME")
    p.add_argument("--strategy", action="append", metavar="NAME", help="search strategy (repeatable)")
    p.add_argument("--budget", action="append", metavar="TOKENS|n=N", help="compute budget (repeatable)")
    p.add_argument("--limit", type=_positive_int, metavar="K", help="only the first K problems")
    p.add_argument("--job-budget", metavar="TOKENS", help="total compute of the whole job (e.g. 2m)")
    p.add_argument("--name", help="a name to show in `ponder jobs list`")
    p.add_argument("--max-attempts", type=_positive_int, metavar="K",
                   help="a search that fails K times ends as an error record (default jobs.max_attempts)")
    _add_config_flags(p)
    _add_store_flags(p)
    p.set_defaults(func=cmd_submit)

    jobs = sub.add_parser("jobs", help="list, watch, fetch and cancel submitted jobs")
    jsub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION")
    jsub.required = True
    p = jsub.add_parser("list", help="jobs, newest first")
    p.add_argument("--all", action="store_true", help="every owner's jobs, not only yours")
    _add_store_flags(p)
    p.set_defaults(func=cmd_jobs_list)
    p = jsub.add_parser("status", help="a job's progress")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true")
    _add_store_flags(p)
    p.set_defaults(func=cmd_jobs_status)
    p = jsub.add_parser("results", help="a job's records as JSONL (so far, if it still runs)")
    p.add_argument("job_id")
    p.add_argument("--out", metavar="FILE.jsonl", help="write here instead of standard output")
    p.add_argument("--summary", action="store_true", help="also print the summary table")
    _add_store_flags(p)
    p.set_defaults(func=cmd_jobs_results)
    p = jsub.add_parser("cancel", help="stop a job (its records so far stay)")
    p.add_argument("job_id")
    _add_store_flags(p)
    p.set_defaults(func=cmd_jobs_cancel)
    p = jsub.add_parser("wait", help="a progress bar until the job ends")
    p.add_argument("job_id")
    p.add_argument("--timeout", type=float, metavar="S")
    p.add_argument("--quiet", action="store_true")
    _add_store_flags(p)
    p.set_defaults(func=cmd_jobs_wait)

    p = sub.add_parser("serve", help="the HTTP service: native /v1/solve and OpenAI-compatible /v1/chat/completions")
    p.add_argument("--host", help="listen address (default api.host, 127.0.0.1; without an API key always 127.0.0.1)")
    p.add_argument("--port", type=_positive_int, help="listen port (default api.port, 8000)")
    _add_config_flags(p)
    _add_store_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("solve", help="solve one problem and show the reasoning")
    p.add_argument("problem", help="the problem text")
    p.add_argument("--strategy", metavar="NAME")
    p.add_argument("--budget", metavar="TOKENS|n=N")
    p.add_argument("--reference", metavar="ANSWER", help="grade against this answer")
    _add_config_flags(p)
    p.set_defaults(func=cmd_solve)

    p = sub.add_parser("calibrate", help="learn the allocation table for strategy auto on a labelled dev set")
    p.add_argument("--dataset", required=True, metavar="PATH|arith:N|hf:NAME")
    p.add_argument("--strategy", action="append", metavar="NAME[:KEY=VALUE,...]",
                   help="a candidate strategy, optionally with its own parameters, e.g. best_of_n:confidence=0.9 (repeatable)")
    p.add_argument("--budget", action="append", metavar="TOKENS|n=N", help="a budget to calibrate (repeatable)")
    p.add_argument("--out", required=True, metavar="TABLE.yaml")
    p.add_argument("--limit", type=_positive_int, metavar="K", help="only the first K problems")
    _add_config_flags(p)
    p.set_defaults(func=cmd_calibrate)

    deploy = sub.add_parser("deploy", help="render the config into KubeRay manifests or a Ray cluster launcher config")
    dsub = deploy.add_subparsers(dest="deploy_command", metavar="ACTION")
    dsub.required = True
    p = dsub.add_parser("render", help="write the manifests of one or more targets into a folder")
    p.add_argument("--config", required=True, metavar="FILE", help="YAML config file (with a deploy section)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--target", action="append", required=True, choices=["rayservice", "rayjob", "cluster-launcher"],
                   help="what to render (repeatable)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write into (created if missing)")
    p.set_defaults(func=cmd_deploy_render)

    p = sub.add_parser("strategies", help="list strategies and their parameters")
    p.set_defaults(func=cmd_strategies)

    p = sub.add_parser("report", help="table and plot from an existing results file")
    p.add_argument("results", metavar="RESULTS.jsonl")
    p.add_argument("--plot", metavar="FILE.png")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    global _told_interrupt
    _told_interrupt = False
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)  # an earlier in-process run may have set it aside
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except CliError as e:
        print(f"ponder: error: {e}", file=sys.stderr)
        return e.code
    except SystemExit as e:  # --help / --version
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        _interrupted("ponder: interrupted")
        return INTERRUPTED
    except BrokenPipeError:  # `ponder strategies | head`
        sys.stderr.close()
        return FAILURE


if __name__ == "__main__":
    sys.exit(main())
