"""``restyle serve``: one warm Engine behind the HTTP API and the page
(docs/serving.md), on uvicorn here or as a Ray Serve application (``--ray``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from restyle import _settings
from restyle._engine import Engine
from restyle._errors import ConfigurationError
from restyle._secrets import RedactingFilter
from restyle.cli.analyze import _without_missing_catalog
from restyle.cli.common import UsageError, make_engine, pricing_rules, split_names

__all__ = ["access_log_to_stderr", "add_serve_command", "serve_command", "settings_of"]

#: Where the token comes from when no --token-file is given.
TOKEN_VARIABLE = "RESTYLE_SERVE_TOKEN"


def add_serve_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``serve`` command's arguments."""
    serve = sub.add_parser(
        "serve", parents=[common], help="serve the API and the page (docs/serving.md)",
        description="One warm Engine behind POST /v1/analyze, POST /v1/draft, GET /v1/health, "
        "/v1/ready and /v1/plugins, and a page at / for phones. It listens on 127.0.0.1 "
        f"unless told otherwise; another address wants a token (${TOKEN_VARIABLE} or "
        "--token-file) or --allow-no-token.",
        epilog="Ends cleanly on SIGTERM or Ctrl-C: the requests in flight finish first.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on "
                       "(default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument("--token-file", metavar="FILE",
                       help=f"file holding the bearer token (default: ${TOKEN_VARIABLE})")
    serve.add_argument("--allow-no-token", action="store_true",
                       help="listen on another address than loopback without a token (a proxy "
                       "in front checks who calls)")
    serve.add_argument("--concurrency", type=int, default=8, metavar="N",
                       help="analyses at once (default: 8)")
    serve.add_argument("--queue", type=int, default=32, metavar="N",
                       help="requests that may wait for one (default: 32); more get 429")
    serve.add_argument("--deadline", type=float, default=30.0, metavar="SECONDS",
                       help="each request's deadline, waiting included (default: 30); then 504")
    serve.add_argument("--batch-window", type=float, default=10.0, metavar="MS",
                       help="how long the encoder gathers concurrent requests' photos into "
                       "one batch, in milliseconds (default: 10; 0: no batching)")
    serve.add_argument("--max-batch", type=int, default=32, metavar="N",
                       help="most photos in one encoder batch (default: 32)")
    serve.add_argument("--experts", metavar="A,B", help="as for 'restyle analyze'")
    serve.add_argument("--synthesizer", metavar="NAME", help="as for 'restyle analyze'")
    serve.add_argument("--marketplaces", metavar="A,B", help="as for 'restyle analyze'")
    ray = serve.add_argument_group("Ray Serve (--ray)")
    ray.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                     help="deploy on Ray Serve: a cluster's address, 'local' or auto")
    ray.add_argument("--replicas", type=int, default=1, metavar="N",
                     help="pipeline replicas (default: 1)")
    ray.add_argument("--encoder-replicas", type=int, default=1, metavar="N",
                     help="encoder replicas (default: 1)")
    ray.add_argument("--encoder-gpus", type=float, default=0.0, metavar="G",
                     help="GPUs per encoder replica, fractions allowed (default: 0)")
    ray.add_argument("--replica-cpus", type=float, default=1.0, metavar="C",
                     help="CPUs per replica of either kind (default: 1)")


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        try:
            text = Path(args.token_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"cannot read the token file: {exc.strerror}") from None
        if not text:
            raise UsageError("the token file is empty")
        return text
    return _settings.env_str(TOKEN_VARIABLE) or None


def settings_of(args: argparse.Namespace) -> Any:
    """The service's settings the options give, checked."""
    from restyle.serve.settings import ServeSettings

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0 to 65535, got {args.port}")
    try:
        return ServeSettings(
            host=args.host, port=args.port, token=_token(args),
            allow_no_token=args.allow_no_token, concurrency=args.concurrency, queue=args.queue,
            deadline=args.deadline, batch_window=args.batch_window / 1000,
            max_batch=args.max_batch).check()
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def engine_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The Engine's components and rules the options name."""
    experts, marketplaces = _without_missing_catalog(
        args, split_names(args.experts), split_names(args.marketplaces))
    return {"experts": experts, "synthesizer": args.synthesizer, "marketplaces": marketplaces,
            "deadline": args.deadline, **pricing_rules(args)}


def serve_command(args: argparse.Namespace) -> int:
    try:
        from restyle.serve.batching import BatchingEncoder
        from restyle.serve.server import run
    except ImportError as exc:
        raise UsageError(f"restyle serve needs FastAPI and uvicorn ({exc.name} is missing): "
                         "pip install 'restyle[serve]'") from None
    settings = settings_of(args)
    access_log_to_stderr()
    if args.ray is not None:
        from restyle.serve.ray import serve_on_ray

        return int(serve_on_ray(args, settings, engine_arguments(args)))
    from restyle.serve.app import create_app

    arguments = engine_arguments(args)
    engine = make_engine(args, **arguments)
    if settings.batch_window > 0:
        # The same Engine around the encoder it resolved, its calls batched.
        encoder = BatchingEncoder(engine.encoder, window=settings.batch_window,
                                  max_batch=settings.max_batch)
        engine = Engine(**arguments, encoder=encoder, catalog=engine.catalog_dir,
                        load_entrypoints=not args.no_plugins)
    sys.stderr.write(f"restyle serve: http://{_url_host(settings.host)}:{settings.port}/ "
                     f"({'token required' if settings.token else 'no token'})\n")
    run(create_app(engine, settings), settings)
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def access_log_to_stderr() -> None:
    """The access log and the service's own lines on stderr, secrets redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("restyle.serve.access", "restyle.serve"):
        log = logging.getLogger(name)
        log.setLevel(logging.INFO)
        log.addHandler(handler)
        log.propagate = False
