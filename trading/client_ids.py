"""Client order ids: derived from the workflow id and the lifecycle step, never random.

The same (workflow, step) always yields the same id, so an activity retried after a crash asks
the exchange "do you already have `trade-x1.3fa9c2-entry`?" before placing anything, and a
duplicate-id rejection (-4116) means "already placed", never "place again".

The `.3fa9c2` part is the run tag: a hash of the trade's first run id (kept through
continue-as-new). A second run started under the same workflow id (the Temporal CLI allows it
after the first closed) derives other ids, so it can never find the first run's orders and take
them for its own; the gates refuse such a run anyway (`workflow_id_reuse`).
"""

from __future__ import annotations

import hashlib
import re

# Binance USD-M: newClientOrderId / clientAlgoId must match this.
CLIENT_ORDER_ID_PATTERN = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
MAX_LEN = 36
_UNSAFE = re.compile(r"[^.A-Z:/a-z0-9_-]")
_STEP = re.compile(r"^[a-z0-9][a-z0-9-]{0,15}$")


def is_valid_client_order_id(value: str) -> bool:
    return bool(CLIENT_ORDER_ID_PATTERN.fullmatch(value))


RUN_TAG_LEN = 6


def run_tag(first_run_id: str) -> str:
    """Six hex characters naming one trade's chain of runs (its first run id, hashed: run ids
    may be time-ordered UUIDs whose leading characters two runs share)."""
    if not first_run_id:
        raise ValueError("first_run_id must not be empty")
    return hashlib.sha256(first_run_id.encode()).hexdigest()[:RUN_TAG_LEN]


def client_order_id(workflow_id: str, step: str, tag: str = "") -> str:
    """`{workflow_id}.{tag}-{step}` (or `{workflow_id}-{step}` without a tag) when it fits
    Binance's 36 characters, else a stable short form.

    The short form keeps the step readable at the end (`…-sl-2`) and replaces the workflow id
    with a prefix plus a hash of the full id and tag, so two long ids never collide in practice.
    """
    if not _STEP.fullmatch(step):
        raise ValueError(f"step {step!r} must be 1-16 chars of [a-z0-9-], e.g. 'entry', 'sl-2'")
    if not workflow_id:
        raise ValueError("workflow_id must not be empty")
    if tag and not re.fullmatch(r"[a-z0-9]{1,12}", tag):
        raise ValueError(f"run tag {tag!r} must be 1-12 chars of [a-z0-9]")
    workflow_id = f"{workflow_id}.{tag}" if tag else workflow_id
    safe_id = _UNSAFE.sub("_", workflow_id)
    candidate = f"{safe_id}-{step}"
    if len(candidate) <= MAX_LEN and safe_id == workflow_id:
        return candidate
    digest = hashlib.sha256(workflow_id.encode()).hexdigest()[:12]
    room = MAX_LEN - len(step) - len(digest) - 2  # two dashes
    prefix = safe_id[: max(room, 0)]
    short = f"{prefix}-{digest}-{step}" if prefix else f"{digest}-{step}"
    assert is_valid_client_order_id(short), short
    return short


# -- whose order is it? (reconciliation) ---------------------------------------------------------

_LONG_FORM = re.compile(r"^(?P<workflow>.+)\.(?P<tag>[0-9a-f]{6})-(?P<step>[a-z0-9][a-z0-9-]{0,15})$")
_SHORT_FORM = re.compile(r"^(?:.*-)?(?P<digest>[0-9a-f]{12})-(?P<step>[a-z0-9][a-z0-9-]{0,15})$")


def owner_key(workflow_id: str, tag: str) -> str:
    """The key every client id of one trade (workflow id + run tag) maps back to."""
    return hashlib.sha256(f"{workflow_id}.{tag}".encode()).hexdigest()[:12]


def owner_key_of(client_id: str) -> str | None:
    """The `owner_key` of a client id this system made (`client_order_id` with a run tag, in
    either form), or None for any other id: another bot's orders, a manual order, ids of the
    old untagged form. Several bots may share one account, so None means "never touch".

    The step may contain dashes (`sl-2`), so a split is ambiguous; every split whose step
    is valid is tried, the long form first (its `.tag-` cannot occur in a short form, which
    has only [a-z0-9-] after the prefix)."""
    if not is_valid_client_order_id(client_id):
        return None
    for cut in range(len(client_id) - 1, 0, -1):
        if client_id[cut] != "-":
            continue
        head, step = client_id[:cut], client_id[cut + 1:]
        if not _STEP.fullmatch(step):
            continue
        long_form = _LONG_FORM.fullmatch(f"{head}-{step}")
        if long_form and _UNSAFE.sub("_", long_form["workflow"]) == long_form["workflow"]:
            key = owner_key(long_form["workflow"], long_form["tag"])
            if client_order_id(long_form["workflow"], step, long_form["tag"]) == client_id:
                return key
        short_form = _SHORT_FORM.fullmatch(f"{head}-{step}")
        if short_form:
            return short_form["digest"]
    return None


def workflow_id_of(client_id: str) -> str | None:
    """The workflow id in a long-form client id of ours (`{workflow_id}.{tag}-{step}`); None for
    a short form (the id is hashed there) or an id that is not ours."""
    if owner_key_of(client_id) is None:
        return None
    for cut in range(len(client_id) - 1, 0, -1):
        if client_id[cut] == "-" and _STEP.fullmatch(client_id[cut + 1:]):
            match = _LONG_FORM.fullmatch(client_id)
            if match and client_order_id(match["workflow"], client_id[cut + 1:], match["tag"]) == client_id:
                return match["workflow"]
    return None
