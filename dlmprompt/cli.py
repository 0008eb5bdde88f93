"""The ``dlmprompt`` command."""

from __future__ import annotations

import argparse
import sys
import time


def _demo(args: argparse.Namespace) -> int:
    import torch

    from . import Prompt, Tokenizer, compile, slot
    from .sampler import Step, generate
    from .testing import RandomDenoiser

    tok = Tokenizer.bytes_level(["the", "ing", "er", "on", ".org", ".com"])
    prompt = (
        Prompt("Extract the person.\nText: Ada Lovelace (ada@analytical.org) was born on 1815-12-10.\nRecord: ")
        + '{"name": "'
        + slot("name", regex=r"[A-Z][a-z]+ [A-Z][a-z]+", max_tokens=16)
        + '", "email": "'
        + slot("email", regex=r"[a-z]+@[a-z]+\.(org|com)", max_tokens=20)
        + '", "born": "'
        + slot("born", regex=r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])", tokens=10)
        + '", "role": "'
        + slot("role", choice=["mathematician", "engineer", "poet"], max_tokens=13)
        + '"}'
    ).with_sampling(steps=args.steps, temperature=1.0)
    program = compile(prompt, tok)
    denoiser = RandomDenoiser(tok, seed=args.seed)
    print("dlmprompt demo: exact constraints under any-order decoding.")
    print(
        "The model here writes random logits (the embedded default model is not trained yet), so\n"
        "every value below is valid only because the constraints make it so.\n"
    )
    live = sys.stdout.isatty() and not args.no_live
    t0 = time.perf_counter()
    head = program.layout.slots[0].start

    def show(step: Step) -> None:
        view = "".join(
            "_" if t == tok.mask_id else ("·" if t == tok.pad_id else tok.decode([int(t)])) for t in step.canvas[head:]
        )
        line = f"step {step.index + 1:3d}  {view}"
        if live:
            sys.stdout.write("\r\x1b[2K" + line[:200])
            sys.stdout.flush()
            time.sleep(0.03)
        else:
            print(line)

    result = generate(denoiser, program, generator=torch.Generator().manual_seed(args.seed), on_step=show)
    elapsed = time.perf_counter() - t0
    if live:
        print()
    print("\nResult:\n  " + result.text.split("Record: ")[1])
    for name, cap in result.captures.items():
        print(f"  {name:6s} = {cap.text!r}")
    print(f"\n{result.steps} denoising steps, {result.forward_passes} forward passes, {elapsed:.2f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dlmprompt", description="Prompt and constrain diffusion language models.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fill a typed record under exact constraints, showing the canvas as it denoises")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--steps", type=int, default=24)
    demo.add_argument("--no-live", action="store_true", help="print every step on its own line")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
