"""The ``dlmprompt`` command."""

from __future__ import annotations

import argparse
import sys
import time


def _live(tok, program, live: bool):  # type: ignore[no-untyped-def]
    head = program.layout.slots[0].start
    anchor_tail = program.layout.canvas[:head].tolist()
    prefix = tok.decode(anchor_tail).rsplit("\n", 1)[-1]

    def show(step) -> None:  # type: ignore[no-untyped-def]
        view = "".join(
            "_" if t == tok.mask_id else ("" if t == tok.pad_id else tok.decode([int(t)])) for t in step.canvas[head:]
        )
        line = f"  step {step.index + 1:3d}  {prefix}{view}"
        if live:
            sys.stdout.write("\r\x1b[2K" + line[:220])
            sys.stdout.flush()
            time.sleep(0.02)
        else:
            print(line)

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
    program = extraction_prompt("person", text).with_sampling(temperature=0.0)
    t = time.perf_counter()
    result = generate(denoiser, program, generator=g, on_step=_live(tok, compile(program, tok), live))
    if live:
        print()
    print("   Record:", result.text.split("Record: ", 1)[1])
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
    serve.add_argument("--log-level", default="info")
    sub.add_parser("train-default", help="train the embedded default model (needs the train extra)", add_help=False)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train-default"]:  # its own parser takes every option (REMAINDER drops leading --opts)
        from dlmprompt.models.train import main as train_main

        return train_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    if args.command == "serve":
        import os

        from dlmprompt.serving.server import serve as run_server

        run_server(
            args.model,
            host=args.host,
            port=args.port,
            api_key=args.api_key or os.environ.get("DLMPROMPT_API_KEY") or None,
            device=args.device,
            trust_remote_code=args.trust_remote_code,
            max_batch=args.max_batch,
            max_queue=args.max_queue,
            log_level=args.log_level,
        )
        return 0
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
