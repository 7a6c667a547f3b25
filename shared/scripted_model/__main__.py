"""CLI entry point: `python -m shared.scripted_model --host H --port P [--latency S]`."""

from gevent import monkey

monkey.patch_all()  # must run before anything else imports socket/threading

import argparse  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.scripted_model", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--latency", type=float, default=0.0,
                        help="base seconds added to every completion")
    args = parser.parse_args(argv)

    from .server import serve

    serve(args.host, args.port, args.latency)


if __name__ == "__main__":
    main()
