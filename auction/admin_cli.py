"""`auction keys ...` and `auction providers ...`: the admin HTTP API from the command line.

Merged into `auction.cli.COMMANDS` (each entry: summary, add_arguments, handler). The token
comes from --admin-token or AUCTION_ADMIN_TOKEN; answers print as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
Handler = Callable[[argparse.Namespace], int]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help=f"marketplace URL ({DEFAULT_URL})")
    parser.add_argument("--admin-token", help="admin token (default: AUCTION_ADMIN_TOKEN)")


def _add_keys(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="issue a client API key (printed once)")
    create.add_argument("name")
    create.add_argument("--budget", required=True, help="budget in USD, e.g. 25 or 0.50")
    create.add_argument("--period", choices=["day", "month", "total"], default="total")
    sub.add_parser("list", help="every key with its budget, spent and remaining")
    revoke = sub.add_parser("revoke", help="revoke a key for good")
    revoke.add_argument("name")
    budget = sub.add_parser("set-budget", help="change a key's budget (and period)")
    budget.add_argument("name")
    budget.add_argument("--budget", required=True, help="budget in USD")
    budget.add_argument("--period", choices=["day", "month", "total"])
    for child in sub.choices.values():
        _common(child)


def _add_providers(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="register a provider (prints its bidder token once)")
    add.add_argument("name")
    add.add_argument("--api", required=True, choices=["openai", "anthropic", "gemini"])
    add.add_argument("--base-url", required=True, help="the base URL its official SDK takes")
    add.add_argument("--api-key", help="the credential the marketplace calls it with")
    sub.add_parser("list", help="registered providers (never their credentials)")
    remove = sub.add_parser("remove", help="remove a provider and withdraw its offers")
    remove.add_argument("name")
    for child in sub.choices.values():
        _common(child)


def _request(args: argparse.Namespace, method: str, path: str, body: object = None) -> int:
    token = args.admin_token or os.environ.get("AUCTION_ADMIN_TOKEN")
    if not token:
        print("auction: set AUCTION_ADMIN_TOKEN or pass --admin-token", file=sys.stderr)
        return 2
    try:
        reply = httpx.request(
            method,
            args.url.rstrip("/") + path,
            json=body,
            headers={"authorization": f"Bearer {token}"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        print(f"auction: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    try:
        data = reply.json()
    except ValueError:
        data = {"error": {"message": reply.text, "code": str(reply.status_code)}}
    if reply.status_code >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        print(f"auction: {error.get('code')}: {error.get('message')}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2))
    return 0


def _keys(args: argparse.Namespace) -> int:
    action = args.action
    if action == "create":
        body = {"name": args.name, "budget_usd": args.budget, "period": args.period}
        return _request(args, "POST", "/v1/admin/keys", body)
    if action == "list":
        return _request(args, "GET", "/v1/admin/keys")
    if action == "revoke":
        return _request(args, "POST", f"/v1/admin/keys/{args.name}/revoke")
    body = {"budget_usd": args.budget, "period": args.period}
    return _request(args, "POST", f"/v1/admin/keys/{args.name}/budget", body)


def _providers(args: argparse.Namespace) -> int:
    action = args.action
    if action == "add":
        body = {"name": args.name, "api": args.api, "base_url": args.base_url}
        if args.api_key:
            body["api_key"] = args.api_key
        return _request(args, "POST", "/v1/admin/providers", body)
    if action == "list":
        return _request(args, "GET", "/v1/admin/providers")
    return _request(args, "DELETE", f"/v1/admin/providers/{args.name}")


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {
    "keys": ("client API keys: create, list, revoke, set-budget", _add_keys, _keys),
    "providers": ("providers: add, list, remove", _add_providers, _providers),
}
