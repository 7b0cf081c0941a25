"""`python -m hector_sync.simulators`: both simulators in their own process, until killed.

The first two lines of stdout end with the C2 ITSM URL and the Hector URL.
"""

import argparse

from hector_sync.demo import DEMO_C2_PORT, DEMO_HECTOR_PORT, DEMO_SEED, DEMO_SIZE

from .serve import serve_forever


def _size_of(text: str) -> tuple[str, int]:
    name, equals, count = text.rpartition("=")
    if not equals or not name or not count.isdigit():
        raise argparse.ArgumentTypeError(f"expected CATEGORY=COUNT, e.g. Laptops=1000000: {text!r}")
    return name, int(count)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hector_sync.simulators",
                                     description="Serve the C2 ITSM and Hector simulators.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--c2-port", type=int, default=DEMO_C2_PORT, help="0 picks a free port")
    parser.add_argument("--hector-port", type=int, default=DEMO_HECTOR_PORT,
                        help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    parser.add_argument("--size", type=int, default=DEMO_SIZE, help="CIs per category")
    parser.add_argument("--sizes", type=_size_of, action="append", default=[],
                        metavar="CATEGORY=COUNT", help="override one category's size (repeatable)")
    parser.add_argument("--copies", type=int, default=0, metavar="N",
                        help='also serve N copies of Printers, "Printers 01"… (benchmarks of many categories)')
    args = parser.parse_args(argv)
    try:
        serve_forever(seed=args.seed, size=args.size, sizes=dict(args.sizes), host=args.host,
                      c2_port=args.c2_port, hector_port=args.hector_port, copies=args.copies)
    except (OSError, ValueError) as exc:
        parser.exit(1, f"{parser.prog}: {exc}\n")


if __name__ == "__main__":
    main()
