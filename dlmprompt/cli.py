"""The ``dlmprompt`` command."""

from __future__ import annotations

import argparse
import sys
import time


def _live(tok, program, live: bool):  # type: ignore[no-untyped-def]
    """An ``on_step`` that shows the canvas from the line of the first slot on: redrawn in place on a
    terminal (masked positions as ``_``), else one line per step."""
    head = program.layout.slots[0].start
    anchor_tail = program.layout.canvas[:head].tolist()
    prefix = tok.decode(anchor_tail).rsplit("\n", 1)[-1]
    drawn = [0]  # lines drawn last time

    def show(step) -> None:  # type: ignore[no-untyped-def]
        view = "".join(
            "_" if t == tok.mask_id else ("" if t == tok.pad_id else tok.decode([int(t)])) for t in step.canvas[head:]
        )
        if live:
            lines = f"  step {step.index + 1:3d}  {prefix}{view}".rstrip("\n").split("\n")
            up = f"\x1b[{drawn[0] - 1}A" if drawn[0] > 1 else ""
            sys.stdout.write("\r" + up + "\x1b[J" + "\n".join(line[:200] for line in lines))
            sys.stdout.flush()
            drawn[0] = len(lines)
            time.sleep(0.02)
        else:
            print(f"  step {step.index + 1:3d}  {prefix}{view}")

    return show


def _demo(args: argparse.Namespace) -> int:
    import torch

    from dlmprompt import Prompt, compile, load, slot
    from dlmprompt.models.records import extraction_prompt
    from dlmprompt.sampling.sampler import generate

    t0 = time.perf_counter()
    denoiser = load()
    tok = denoiser.tokenizer
    print(f"dlmprompt demo on the embedded default model ({time.perf_counter() - t0:.1f} s to load)\n")
    live = sys.stdout.isatty() and not args.no_live
    g = torch.Generator().manual_seed(args.seed)

    text = args.text or "Meet Ada Lovelace, 36, from London (email: ada.lovelace@example.org)."
    print(f"1. Extraction: a typed record from text, keys as anchors, values as typed slots\n   Text: {text}")
    program = extraction_prompt("person", text, grounded=True).with_sampling(temperature=0.0)
    t = time.perf_counter()
    result = generate(denoiser, program, generator=g, on_step=_live(tok, compile(program, tok), live))
    if live:
        print()
    print("   Record:", result.text.split("Record: ", 1)[1], " (grounded: each text and number a span of the text)")
    print(f"   {result.steps} denoising steps, {result.forward_passes} forward passes, {time.perf_counter() - t:.2f} s")
    plain = extraction_prompt("person", text).with_sampling(temperature=0.0)
    t = time.perf_counter()
    result = generate(denoiser, plain, generator=g)
    print("   The same without grounding (the model's own reading):", result.text.split("Record: ", 1)[1])
    print(
        f"   {result.steps} denoising steps, {result.forward_passes} forward passes, {time.perf_counter() - t:.2f} s\n"
    )

    print("2. Code template: fill a function's name and body expression between fixed code")
    code = (
        Prompt("def ")
        + slot("name", regex=r"[a-z_][a-z0-9_]*", max_tokens=4)
        + "(self, other):\n    return "
        + slot("expr", regex=r"[a-z_][a-z0-9_.]*( [-+*/<>=]+ [a-z_][a-z0-9_.]*)?", max_tokens=8)
        + "\n"
    )
    t = time.perf_counter()
    result = generate(denoiser, code, generator=g, on_step=_live(tok, compile(code, tok), live))
    if live:
        print()
    print("   " + result.text.replace("\n", "\n   "))
    print(f"   {result.steps} denoising steps, {result.forward_passes} forward passes, {time.perf_counter() - t:.2f} s")
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
    return 0


def _variables(args: argparse.Namespace, tmpl) -> dict:  # type: ignore[no-untyped-def]
    """--example, then --vars FILE.json, then each --var NAME=VALUE (typed by the template's header)."""
    import json
    from pathlib import Path

    from dlmprompt.errors import TemplateError

    values = dict(tmpl.example) if args.example else {}
    if args.vars:
        try:
            loaded = json.loads(Path(args.vars).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TemplateError(f"--vars {args.vars}: not a readable JSON file ({exc})", template=tmpl.name) from None
        if not isinstance(loaded, dict):
            raise TemplateError(f"--vars {args.vars}: holds {type(loaded).__name__}, not an object", template=tmpl.name)
        values.update(loaded)
    types = {v.name: v.type for v in tmpl.variables}
    for item in args.var:
        name, eq, raw = item.partition("=")
        if not eq or not name:
            raise TemplateError(f"--var {item!r}: write NAME=VALUE", template=tmpl.name)
        if raw.startswith("@"):
            try:
                raw = Path(raw[1:]).read_text(encoding="utf-8")
            except OSError as exc:
                raise TemplateError(f"--var {name}=@{raw[1:]}: {exc.strerror or exc}", template=tmpl.name) from None
        if types.get(name) == "string":
            values[name] = raw
            continue
        try:
            values[name] = json.loads(raw)
        except ValueError:
            if types.get(name, "any") != "any":
                raise TemplateError(
                    f"--var {name}: {raw[:40]!r} is not JSON; {name} is of type {types[name]}", template=tmpl.name
                ) from None
            values[name] = raw
    return values


def _fill(args: argparse.Namespace) -> int:
    import json

    import torch

    from dlmprompt import compile, load
    from dlmprompt.prompt_template import load_template
    from dlmprompt.sampling.sampler import generate

    tmpl = load_template(args.template)
    prompt = tmpl.render(**_variables(args, tmpl))
    if args.steps is not None:
        prompt = prompt.with_sampling(steps=args.steps)
    denoiser = load(args.model)
    tok = getattr(denoiser, "tokenizer", None)
    live = sys.stdout.isatty() and not args.no_live and not args.json
    on_step = None
    if tok is not None and not args.json:
        on_step = _live(tok, compile(prompt, tok), live)
    t = time.perf_counter()
    result = generate(denoiser, prompt, generator=torch.Generator().manual_seed(args.seed), on_step=on_step)
    if live:
        print()
    if args.json:
        values = {}
        for name, cap in result.captures.items():
            value = cap.value
            values[name] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
        print(json.dumps(values, indent=2, ensure_ascii=False))
    else:
        print(result.text.rstrip("\n"))
        print(
            f"\n({result.steps} steps, {result.forward_passes} forward passes, {time.perf_counter() - t:.2f} s)",
            file=sys.stderr,
        )
    return 0


def _templates(args: argparse.Namespace) -> int:
    import json

    from dlmprompt.prompt_template import template, template_names

    described = [template(name).describe() for name in template_names()]
    if args.json:
        print(json.dumps(described, indent=2, ensure_ascii=False))
        return 0
    for d in described:
        print(f"{d['name']}: {d['description']}")
        for v in d["variables"]:
            opt = "" if v["required"] else f" = {json.dumps(v['default'])}"
            print(f"    {v['name']} ({v['type']}{opt}){': ' + v['description'] if v.get('description') else ''}")
    print("\nRun one: dlmprompt fill NAME --example, or --var NAME=VALUE ...")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dlmprompt", description="Prompt and constrain diffusion language models.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fill a typed record under exact constraints, showing the canvas as it denoises")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--text", default=None, help="the document to extract a person record from")
    demo.add_argument("--no-live", action="store_true", help="print every step on its own line")
    serve = sub.add_parser("serve", help="serve a model over HTTP (native and OpenAI-compatible APIs)")
    serve.add_argument("--model", default=None, help="a local checkpoint folder (default: the embedded model)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: $DLMPROMPT_API_KEY, else none)"
    )
    serve.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: where the model loads)")
    serve.add_argument("--trust-remote-code", action="store_true", help="run model code shipped with the checkpoint")
    serve.add_argument("--max-batch", type=int, default=32, help="rows denoised together in one forward pass")
    serve.add_argument("--max-queue", type=int, default=128, help="requests queued or running before 429")
    serve.add_argument("--templates", default=None, metavar="DIR", help="a folder of .jinja prompt templates to serve")
    serve.add_argument(
        "--allow-template-source", action="store_true", help="render template source sent in requests (sandboxed)"
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--compile-timeout", type=float, default=10.0, metavar="S", help="seconds one request's prompt may compile"
    )
    serve.add_argument(
        "--compile-memory-mb", type=int, default=2048, metavar="MB", help="memory one request's compile may add"
    )
    serve.add_argument(
        "--compile-workers", type=int, default=2, help="processes compiling prompts (0: in a thread, no budget)"
    )
    serve.add_argument(
        "--graceful-timeout", type=float, default=30.0, metavar="S", help="on SIGTERM, wait so long for requests"
    )
    serve.add_argument("--no-ui", action="store_true", help="no playground page at GET /")
    serve.add_argument("--ray", action="store_true", help="run on Ray Serve: replicas behind one endpoint")
    serve.add_argument("--replicas", type=int, default=1, help="with --ray: model replicas")
    serve.add_argument(
        "--autoscale", default=None, metavar="MIN:MAX", help="with --ray: scale replicas on queue depth instead"
    )
    serve.add_argument("--ray-address", default=None, help="with --ray: join this Ray cluster (default: start one)")
    serve.add_argument("--num-cpus", type=float, default=1.0, help="with --ray: CPUs per replica")
    serve.add_argument("--num-gpus", type=float, default=0.0, help="with --ray: GPUs per replica (0.5 shares one)")
    fill = sub.add_parser("fill", help="render a prompt template, fill it on a model and print the result")
    fill.add_argument("template", help="a shipped template's name (`dlmprompt templates` lists them) or a .jinja file")
    fill.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a variable (repeatable); VALUE is JSON unless the variable is a string; @FILE reads a file",
    )
    fill.add_argument("--vars", metavar="FILE.json", help="variables from a file holding one JSON object")
    fill.add_argument("--example", action="store_true", help="start from the template's example variables")
    fill.add_argument("--model", default=None, help="a checkpoint folder or a server URL (default: the embedded model)")
    fill.add_argument("--json", action="store_true", help="print the slots' values as JSON instead of the text")
    fill.add_argument("--seed", type=int, default=0)
    fill.add_argument("--steps", type=int, default=None, help="denoising steps (default: the template's)")
    fill.add_argument("--no-live", action="store_true", help="print every step on its own line")
    listing = sub.add_parser("templates", help="list the shipped prompt templates, their descriptions and variables")
    listing.add_argument("--json", action="store_true", help="print them as JSON")
    sub.add_parser("train-default", help="train the embedded default model (needs the train extra)", add_help=False)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train-default"]:  # its own parser takes every option (REMAINDER drops leading --opts)
        from dlmprompt.models.train import main as train_main

        return train_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    if args.command in ("fill", "templates"):
        from dlmprompt.errors import DLMPromptError

        try:
            return _fill(args) if args.command == "fill" else _templates(args)
        except DLMPromptError as exc:
            print(f"dlmprompt {args.command}: error: {exc}", file=sys.stderr)
            if "variable" in str(exc):
                print("(give variables with --var NAME=VALUE, --vars FILE.json or --example)", file=sys.stderr)
            return 2
    if args.command == "serve":
        import os

        from dlmprompt.serving.protocol import Limits
        from dlmprompt.serving.server import serve as run_server

        limits = Limits(compile_seconds=args.compile_timeout, compile_memory_mb=args.compile_memory_mb)
        common = {  # the same server, alone or in each Ray Serve replica
            "host": args.host,
            "port": args.port,
            "api_key": args.api_key or os.environ.get("DLMPROMPT_API_KEY") or None,
            "device": args.device,
            "trust_remote_code": args.trust_remote_code,
            "max_batch": args.max_batch,
            "max_queue": args.max_queue,
            "templates_dir": args.templates,
            "allow_template_source": args.allow_template_source,
            "limits": limits,
            "compile_workers": args.compile_workers,
            "ui": not args.no_ui,
        }
        if args.ray:
            from dlmprompt.errors import DLMPromptError
            from dlmprompt.serving import ray_serve

            autoscaling = None
            if args.autoscale:
                lo, _, hi = args.autoscale.partition(":")
                if not (lo.isdigit() and hi.isdigit() and 1 <= int(lo) <= int(hi)):
                    print("dlmprompt serve: error: --autoscale takes MIN:MAX, e.g. 1:8", file=sys.stderr)
                    return 2
                autoscaling = {"min_replicas": int(lo), "max_replicas": int(hi), "target_ongoing_requests": 16}
            try:
                ray_serve.run(
                    args.model,
                    address=args.ray_address,
                    replicas=args.replicas,
                    autoscaling=autoscaling,
                    num_cpus=args.num_cpus,
                    num_gpus=args.num_gpus,
                    **common,
                )
            except DLMPromptError as exc:
                print(f"dlmprompt serve: error: {exc}", file=sys.stderr)
                return 2
            return 0
        run_server(args.model, log_level=args.log_level, graceful_timeout=args.graceful_timeout, **common)
        return 0
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
