"""``python -m sport_fast.serve --model smollm2|PATH``: the sampler behind an OpenAI-compatible API.

Endpoints and fields: ``sport_fast.sampler.server``. A local folder loads on the GPU when there is one, in
``--dtype`` (auto: bf16 there, float32 on the CPU), through the one model loader.
"""
from __future__ import annotations

import argparse
from http.server import ThreadingHTTPServer

from sport_fast.model.loader import DTYPES, ModelLoadError, load_base
from sport_fast.sampler.server import SamplerService, make_handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sport_fast.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="'smollm2' (the embedded default) or a Hugging Face path")
    parser.add_argument("--served-name", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--cache-entries", type=int, default=32)
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="auto: bf16 on a GPU, float32 on the CPU")
    args = parser.parse_args(argv)
    try:
        model, tokenizer = load_base(args.model, args.dtype)
    except ModelLoadError as err:
        raise SystemExit(f"sport_fast.serve: {err}") from None
    service = SamplerService(model, tokenizer, args.served_name or args.model, args.cache_entries)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(service))
    print(f"sport_fast.serve: {service.name} on http://{args.host}:{server.server_address[1]}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
