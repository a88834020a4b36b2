"""``python -m shop.gateway``: run one gateway replica."""

from shop.gateway.app import setup
from shop.runtime import run_service


def main() -> None:
    run_service("gateway", setup)


if __name__ == "__main__":
    main()
