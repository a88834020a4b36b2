"""``python -m shop.inventory``: run one inventory replica."""

from shop.inventory.app import setup
from shop.runtime import run_service


def main() -> None:
    run_service("inventory", setup)


if __name__ == "__main__":
    main()
