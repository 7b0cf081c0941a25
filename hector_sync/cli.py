"""hector-sync: the operator's command line."""


def main() -> None:
    print("not yet")
