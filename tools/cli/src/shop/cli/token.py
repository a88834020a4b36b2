"""``shop token`` and ``shop keys``: credentials for a shop without an identity provider.

``shop keys --out DIR`` writes a demo token issuer (``issuer-key.pem``, its public
``jwks.json``) and the internal callers' keys (``internal/<service>``): what
``shop up`` makes in its data dir, what the compose stack's one-shot ``keys`` service
makes in a volume, and what a cluster operator can load into Secrets.
``shop token SUBJECT`` prints a bearer token for a customer (``--admin`` adds the
``shop.admin`` scope that stock administration needs), e.g. for grpcurl:

    grpcurl -plaintext -H "authorization: Bearer $(shop token alice)" ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from shop.credentials import (
    CALLING_SERVICES,
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    TokenIssuer,
    ensure_credentials,
)

DEFAULT_CREDENTIALS = Path("data/credentials")  # where a default `shop up` keeps them


def add_parser(subparsers: Any) -> None:
    token = subparsers.add_parser(
        "token",
        help="print a bearer token for a customer (or an administrator) of a local shop",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token.add_argument("subject", help="the customer id the token is for (its sub claim)")
    token.add_argument(
        "--admin", action="store_true", help="add the shop.admin scope (stock administration)"
    )
    token.add_argument(
        "--key",
        type=Path,
        default=DEFAULT_CREDENTIALS / "issuer-key.pem",
        help="the issuer's private key (default: the one a default shop up writes, "
        f"{DEFAULT_CREDENTIALS}/issuer-key.pem)",
    )
    token.add_argument("--issuer", default=DEFAULT_ISSUER, help="iss claim (default %(default)s)")
    token.add_argument(
        "--audience", default=DEFAULT_AUDIENCE, help="aud claim (default %(default)s)"
    )
    token.add_argument(
        "--lifetime",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="seconds until it expires (default %(default)s)",
    )
    token.set_defaults(run=run_token, parser=token)


def add_keys_parser(subparsers: Any) -> None:
    keys = subparsers.add_parser(
        "keys",
        help="write a demo token issuer and internal service keys to a directory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keys.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_CREDENTIALS,
        help="directory (default %(default)s); existing keys are kept",
    )
    keys.set_defaults(run=run_keys, parser=keys)


def run_token(args: argparse.Namespace) -> int:
    if not 0 < args.lifetime <= 7 * 24 * 3600:
        args.parser.error("argument --lifetime: must be between 1 and 604800 seconds")
    if not args.key.exists():
        args.parser.error(
            f"argument --key: {args.key} does not exist (start `shop up`, or run `shop keys`)"
        )
    try:
        issuer = TokenIssuer.from_file(args.key, args.issuer, args.audience)
    except ValueError as error:
        args.parser.error(f"argument --key: {error}")
    print(issuer.token(args.subject, admin=args.admin, lifetime_s=args.lifetime))
    return 0


def run_keys(args: argparse.Namespace) -> int:
    credentials = ensure_credentials(args.out, CALLING_SERVICES)
    print(f"issuer key: {credentials.issuer_key}", file=sys.stderr)
    print(f"JWKS:       {credentials.jwks}", file=sys.stderr)
    print(f"internal:   {credentials.internal_keys_dir}/{{{','.join(CALLING_SERVICES)}}}",
          file=sys.stderr)  # fmt: skip
    return 0
