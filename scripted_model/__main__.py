"""CLI entry point: `python -m scripted_model --host H --port P [--latency S]`."""

from gevent import monkey

monkey.patch_all()  # must run before anything else imports socket/threading

import argparse  # noqa: E402


def main(argv=None) -> None:
    from shared.config import settings

    parser = argparse.ArgumentParser(prog="python -m scripted_model", description=__doc__)
    parser.add_argument("--host", default=settings.scripted_model_host)
    parser.add_argument("--port", type=int, default=settings.scripted_model_port)
    parser.add_argument("--latency", type=float, default=settings.scripted_model_latency,
                        help="base seconds added to every completion")
    parser.add_argument("--token-rate", type=float, default=settings.scripted_model_token_rate,
                        help="tokens per second a streamed answer arrives at (0: as fast as possible)")
    parser.add_argument("--first-token-delay", type=float, default=settings.scripted_model_first_token_delay,
                        help="seconds from the start of a streamed answer to its first token")
    args = parser.parse_args(argv)

    from .server import serve

    serve(args.host, args.port, args.latency, args.token_rate, args.first_token_delay)


if __name__ == "__main__":
    main()
