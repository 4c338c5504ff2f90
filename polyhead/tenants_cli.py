"""`polyhead tenants|keys|audit`: tenants, their quotas, API keys and the audit trail, on a
store directly (``--store``: a folder or postgresql:// URL; recorded in the audit trail as
key "local") or on a server over gRPC with an admin key (``--server``, ``--token``)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from typing import Any

from polyhead._words import counted
from polyhead.store.keys import SCOPES, parse_duration, parse_scopes
from polyhead.store.tenancy import WEIGHT_RULE, printable, valid_weight

TENANT_HELP = "the tenant's name: lower-case letters, digits, - and _ (up to 32)"

SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("tenants", help="create, list, delete tenants; set their quotas and weights")
    tsub = t.add_subparsers(dest="tenants_command", required=True)
    p = _verb(tsub, "create", _tenant_create, "a tenant: it owns the task ids NAME/...")
    p.add_argument("name", help=TENANT_HELP)
    _quota_flags(p)
    _verb(tsub, "list", _tenant_list, "every tenant, its quotas, weight and what it holds")
    p = _verb(tsub, "delete", _tenant_delete, "a tenant that owns no task (its keys are revoked)")
    p.add_argument("name", help=TENANT_HELP)
    p = _verb(tsub, "quota", _tenant_quota, "set a tenant's quotas and weight (an omitted quota: "
              "no limit; an omitted weight: 1); every replica applies them within ~1 s")
    p.add_argument("name", help=TENANT_HELP)
    _quota_flags(p)
    k = sub.add_parser("keys", help="create, list, revoke API keys")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    p = _verb(ksub, "create", _key_create, "a key (printed once; only its hash is stored)")
    p.add_argument("--tenant", required=True, help="the tenant the key acts for")
    p.add_argument("--scope", required=True, help=f"comma-separated: {', '.join(SCOPES)}")
    p.add_argument("--expires", help="it expires after this long: 90m, 12h, 30d, 2w (default never)")
    p = _verb(ksub, "list", _key_list, "keys (ids, tenants, scopes, state), never the keys")
    p.add_argument("--tenant", default="", help="only this tenant's keys")
    p = _verb(ksub, "revoke", _key_revoke, "revoke a key by its id (every replica within ~1 s)")
    p.add_argument("key_id", help="the key's id, as `polyhead keys list` shows it (never the key)")
    p = _verb(sub, "audit", _audit, "the audit trail of Registry and Admin changes, oldest first")
    p.add_argument("--tenant", default="", help="only this tenant's callers")
    p.add_argument("--since", default="", help="ISO-8601 time, or a duration ago (1h, 7d)")
    p.add_argument("--limit", type=int, default=1000, help="the latest this many (default 1000)")


def _verb(sub: Any, name: str, func: Callable[[Any, argparse.Namespace], None],
          text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--store", help="work on this store directly (folder or postgresql:// URL)")
    where.add_argument("--server", help="work on this server over gRPC (HOST:PORT), with an admin key")
    p.add_argument("--token", help="the admin key or Registry token for --server (default "
                   "$POLYHEAD_TOKEN, else the token `polyhead serve` saved)")
    p.set_defaults(func=lambda args: _run(args, func))
    return p


def _quota_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tasks", type=int, help="the most tasks it may hold")
    p.add_argument("--max-bytes", type=_size, help="the most artifact bytes it may store (e.g. 500M)")
    p.add_argument("--max-rows-in-flight", type=int,
                   help="the most rows it may have queued or computing at once, per replica")
    p.add_argument("--weight", type=_weight,
                   help="its share of each replica's engine while other tenants wait too, relative "
                        "to theirs (fair batch order: tokens served in proportion); default 1")


def _weight(text: str) -> float:
    try:
        w = float(text)
    except ValueError:
        w = math.nan
    if not valid_weight(w):
        raise argparse.ArgumentTypeError(f"{text!r}: a weight is {WEIGHT_RULE}, such as 1, 3 or 0.5")
    return w


def _size(text: str) -> int:
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    unit = t[-1] if t and t[-1] in SIZE_UNITS else ""
    number = t[:-1] if unit else t
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: a byte count such as 1000000, 500M or 2G")
    return int(number) * SIZE_UNITS[unit]


def _ops(args: argparse.Namespace) -> tuple[Any, Callable[[], None]]:
    """The Admin operations (StoreAdmin or GrpcAdmin) and how to close them."""
    if args.server:
        import grpc

        from polyhead.admin import GrpcAdmin
        from polyhead.client._common import check_address
        from polyhead.server.config import TOKEN_ENV, saved_token

        channel = grpc.insecure_channel(check_address(args.server))
        token = args.token or os.environ.get(TOKEN_ENV) or saved_token()
        return GrpcAdmin(channel, token), channel.close
    from polyhead.admin import StoreAdmin
    from polyhead.store.catalog import default_location, open_catalog

    catalog = open_catalog(args.store or default_location(), create=False)
    return StoreAdmin(catalog, audit_as="local"), catalog.close


def _run(args: argparse.Namespace, func: Callable[[Any, argparse.Namespace], None]) -> int:
    import grpc

    from polyhead.store.errors import StoreError

    prog = f"polyhead {args.verb}"
    try:
        ops, close = _ops(args)
        try:
            func(ops, args)
        finally:
            close()
    except grpc.RpcError as e:
        from polyhead.client._common import error_text

        print(error_text(prog, args.server or "", e.code(), e.details() or ""), file=sys.stderr)
        return 2
    except (StoreError, ValueError, OSError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


def _quota_request(cls: Any, args: argparse.Namespace) -> Any:
    req = cls(tenant=args.name)
    if args.max_tasks is not None:
        req.max_tasks = args.max_tasks
    if args.max_bytes is not None:
        req.max_bytes = args.max_bytes
    if args.max_rows_in_flight is not None:
        req.max_rows_in_flight = args.max_rows_in_flight
    if args.weight is not None:
        req.weight = args.weight
    return req


def _tenant_line(t: Any) -> str:
    tasks = f"{t.tasks}/{t.max_tasks}" if t.HasField("max_tasks") else f"{t.tasks}/-"
    nbytes = f"{t.nbytes}/{t.max_bytes}" if t.HasField("max_bytes") else f"{t.nbytes}/-"
    rows = t.max_rows_in_flight if t.HasField("max_rows_in_flight") else "-"
    return (f"{t.tenant}\ttasks {tasks}\tbytes {nbytes}\trows in flight <= {rows}\t"
            f"weight {t.weight:g}\tdataset bytes {t.dataset_bytes}\tcreated {t.created_at or '-'}")


def _tenant_create(ops: Any, args: argparse.Namespace) -> None:
    from polyhead.v1 import polyhead_pb2 as pb

    print(_tenant_line(ops.CreateTenant(_quota_request(pb.CreateTenantRequest, args))))


def _tenant_quota(ops: Any, args: argparse.Namespace) -> None:
    from polyhead.v1 import polyhead_pb2 as pb

    print(_tenant_line(ops.SetQuota(_quota_request(pb.SetQuotaRequest, args))))


def _tenant_list(ops: Any, args: argparse.Namespace) -> None:
    from polyhead.v1 import polyhead_pb2 as pb

    for t in ops.ListTenants(pb.ListTenantsRequest()).tenants:
        print(_tenant_line(t))


def _tenant_delete(ops: Any, args: argparse.Namespace) -> None:
    from polyhead.v1 import polyhead_pb2 as pb

    out = ops.DeleteTenant(pb.DeleteTenantRequest(tenant=args.name))
    print(f"deleted tenant {out.tenant} ({counted(out.keys_revoked, 'key')} revoked)")


def _key_line(k: Any) -> str:
    return (f"{k.key_id}\t{k.tenant}\t{','.join(k.scopes)}\t{k.state}\tcreated {k.created_at}\t"
            f"expires {k.expires_at or 'never'}")


def _key_create(ops: Any, args: argparse.Namespace) -> None:
    from polyhead.v1 import polyhead_pb2 as pb

    scopes = parse_scopes(args.scope)
    expires = parse_duration(args.expires) if args.expires else 0.0
    out = ops.CreateKey(pb.CreateKeyRequest(tenant=args.tenant, scopes=scopes, expires_in_s=expires))
    print(_key_line(out.info), file=sys.stderr)
    print("the key (shown this once; only its hash is stored):", file=sys.stderr)
    print(out.key, flush=True)


def _key_list(ops: Any, args: argparse.Namespace) -> None:
    from polyhead.v1 import polyhead_pb2 as pb

    keys = ops.ListKeys(pb.ListKeysRequest(tenant=args.tenant)).keys
    for k in keys:
        print(_key_line(k))
    if not keys:  # said on stderr, as `store list` says it: stdout stays a table
        print(f"no keys{f' of tenant {args.tenant}' if args.tenant else ''} "
              "(`polyhead keys create --tenant T --scope classify` makes one)", file=sys.stderr)


def _key_revoke(ops: Any, args: argparse.Namespace) -> None:
    from polyhead.v1 import polyhead_pb2 as pb

    print(_key_line(ops.RevokeKey(pb.RevokeKeyRequest(key_id=args.key_id))))


def _audit(ops: Any, args: argparse.Namespace) -> None:
    from polyhead.v1 import polyhead_pb2 as pb

    req = pb.ListAuditRequest(tenant=args.tenant, since=args.since, limit=args.limit)
    records = ops.ListAudit(req).records
    for r in records:  # each field printable: records an older store kept as given
        fields = (r.at, r.key_id, r.tenant, r.rpc, r.task_id or "-", r.version[:12] or "-", r.outcome)
        print("\t".join(printable(f) for f in fields))
    if not records:
        print("no audit records" + (f" of tenant {args.tenant}" if args.tenant else "")
              + (f" since {args.since}" if args.since else ""), file=sys.stderr)
