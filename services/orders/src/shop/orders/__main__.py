"""``python -m shop.orders``: run one orders replica."""

from shop.orders.app import setup
from shop.runtime import run_service


def main() -> None:
    run_service("orders", setup)


if __name__ == "__main__":
    main()
