"""Cart item catalogs: SyncCatalog, catalog prices for carts, and best prior prices.

Catalogs are defined in the campaigns file (``catalogs``) and changed with SyncCatalog. A cart
item whose SKU is in a catalog may leave out its price (the catalog's is used). Every price a
catalog gets is remembered with its time, and BestPriorPrice answers the lowest price a SKU had
in a time frame (from that history and the file's ``bestPriorPrices``).
"""

from __future__ import annotations

import datetime
from typing import Any

from .params import now_of
from .state import record_price
from .values import clone, fmt_time, money, parse_time
from .wire import ApiError, Call

ACTIONS = ("ADD", "PATCH", "PATCH_MANY", "REMOVE", "REMOVE_MANY")
_FILTER_OPS = ("EQ", "LT", "LE", "GT", "GE", "IN")


def find_item(state: Any, sku: str) -> dict[str, Any] | None:
    """The catalog item with this SKU in any catalog, or None."""
    for catalog in state.data["catalogs"].values():
        item = catalog["items"].get(sku)
        if item is not None:
            return item
    return None


def sync_catalog(state: Any, call: Call) -> tuple[int, Any]:
    """SyncCatalog: apply one kind of action (up to 1000 of them) to a catalog, all or nothing."""
    catalog = state.data["catalogs"].get(str(call.path["catalogId"]))
    if catalog is None:
        raise ApiError.not_found(f"catalog {call.path['catalogId']}")
    body = call.body if isinstance(call.body, dict) else {}
    actions = body.get("actions")
    if not isinstance(actions, list) or not actions:
        raise ApiError.bad_field("/actions", "actions must be a non-empty list")
    if len(actions) > 1000:
        raise ApiError.bad_field(
            "/actions", "Too many actions", f"at most 1000, got {len(actions)}"
        )
    version = body.get("version")
    if version is not None and version != catalog["version"]:
        raise ApiError.bad_field(
            "/version",
            "Catalog version mismatch",
            f"the catalog is at version {catalog['version']}, the request is for version {version}",
        )
    kind = None
    seen: dict[str, int] = {}
    for index, action in enumerate(actions):
        where = f"/actions/{index}"
        if not isinstance(action, dict):
            raise ApiError.bad_field(where, "An action must be an object")
        atype = action.get("type")
        if atype not in ACTIONS:
            raise ApiError.bad_field(
                f"{where}/type", "Unknown action type", f"expected one of: {', '.join(ACTIONS)}"
            )
        if kind is None:
            kind = atype
        elif atype != kind:
            raise ApiError.bad_field(
                f"{where}/type",
                "One action type per request",
                f"this request does {kind}, not {atype}",
            )
        payload = action.get("payload")
        if not isinstance(payload, dict):
            raise ApiError.bad_field(f"{where}/payload", "payload must be an object")
        _check_payload(catalog, atype, payload, f"{where}/payload", seen, index)
    now_s = fmt_time(now_of(call))
    for action in actions:
        _apply(state, catalog, action["type"], action["payload"], now_s)
    catalog["version"] += 1
    catalog["modified"] = now_s
    return 200, catalog_view(state, catalog)


def best_prior_price(state: Any, call: Call) -> tuple[int, Any]:
    """BestPriorPrice: per SKU, the lowest price observed in the time frame before an end date."""
    body = call.body if isinstance(call.body, dict) else {}
    skus = body.get("skus")
    if not isinstance(skus, list) or not skus or not all(isinstance(s, str) for s in skus):
        raise ApiError.bad_field("/skus", "skus must be a non-empty list of SKUs")
    try:
        end = parse_time(body.get("timeframeEndDate"))
    except (ValueError, TypeError):
        raise ApiError.bad_field(
            "/timeframeEndDate", "timeframeEndDate must be an RFC 3339 time stamp"
        ) from None
    try:
        days = int(str(body.get("timeframe")))
    except ValueError:
        raise ApiError.bad_field(
            "/timeframe", 'timeframe must be a number of days, e.g. "30"'
        ) from None
    if days < 0:
        raise ApiError.bad_field("/timeframe", "timeframe must not be negative")
    # timeframeEndDateType (the OpenAPI file); strictEndDate is the older wire reference's flag
    end_type = body.get("timeframeEndDateType")
    if end_type is not None and end_type not in ("strict", "price", "sale"):
        raise ApiError.bad_field(
            "/timeframeEndDateType", "timeframeEndDateType must be strict, price or sale"
        )
    strict = end_type == "strict" if end_type is not None else bool(body.get("strictEndDate", True))
    target = body.get("target") if isinstance(body.get("target"), dict) else {"targetType": "NONE"}
    answer = []
    for sku in dict.fromkeys(skus):
        best = _best(state.data["priceHistory"].get(sku, []), end, days, strict)
        if best is None:
            continue
        view = {
            "id": best["id"],
            "sku": sku,
            "observedAt": best["observedAt"],
            "price": money(best["price"]),
            "contextIds": list(best.get("contextIds", [])),
            "contextId": "",
            "metadata": {"influencingCampaignDetails": []},
            "target": {"type": "NONE"},
        }
        if target.get("targetType") == "AUDIENCE" and target.get("audienceID") is not None:
            view["target"] = {"type": "AUDIENCE", "audience": {"id": target["audienceID"]}}
        answer.append(view)
    return 200, answer


def catalog_view(state: Any, catalog: dict[str, Any]) -> dict[str, Any]:
    """A Catalog."""
    return {
        "id": catalog["id"],
        "created": catalog["created"],
        "accountId": state.config.account_id,
        "modified": catalog["modified"],
        "name": catalog["name"],
        "description": catalog["description"],
        "subscribedApplicationsIds": [state.config.application_id],
        "version": catalog["version"],
        "createdBy": 1,
    }


# -- helpers --------------------------------------------------------------------------------


def _check_payload(
    catalog: dict[str, Any],
    atype: str,
    payload: dict[str, Any],
    where: str,
    seen: dict[str, int],
    index: int,
) -> None:
    if atype in ("ADD", "PATCH", "REMOVE"):
        sku = payload.get("sku")
        if not isinstance(sku, str) or not sku:
            raise ApiError.bad_field(f"{where}/sku", "sku is required")
        if sku in seen:
            raise ApiError.bad_field(
                f"{where}/sku", "Duplicate SKU", f"SKU {sku!r} is also in action {seen[sku]}"
            )
        seen[sku] = index
        exists = sku in catalog["items"]
        if atype == "ADD" and exists and not payload.get("replaceIfExists"):
            raise ApiError.bad_field(
                f"{where}/sku", "Item already exists", f"set replaceIfExists to replace SKU {sku!r}"
            )
        if atype == "PATCH" and not exists and not payload.get("createIfNotExists"):
            raise ApiError.bad_field(
                f"{where}/sku", "No such item", f"SKU {sku!r} is not in the catalog"
            )
        if atype == "REMOVE" and not exists:
            raise ApiError.bad_field(
                f"{where}/sku", "No such item", f"SKU {sku!r} is not in the catalog"
            )
    if "price" in payload and payload["price"] is not None:
        price = payload["price"]
        if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
            raise ApiError.bad_field(f"{where}/price", "price must be a number of at least 0")
    if "attributes" in payload and not isinstance(payload["attributes"], dict):
        raise ApiError.bad_field(f"{where}/attributes", "attributes must be an object")
    product = payload.get("product")
    if product is not None and (
        not isinstance(product, dict) or not isinstance(product.get("name"), str)
    ):
        raise ApiError.bad_field(f"{where}/product", "product must be an object with a name")
    if atype in ("PATCH_MANY", "REMOVE_MANY"):
        filters = payload.get("filters", [])
        if not isinstance(filters, list):
            raise ApiError.bad_field(f"{where}/filters", "filters must be a list")
        for j, flt in enumerate(filters):
            fw = f"{where}/filters/{j}"
            if (
                not isinstance(flt, dict)
                or not isinstance(flt.get("attr"), str)
                or "value" not in flt
            ):
                raise ApiError.bad_field(fw, "A filter needs attr, op and value")
            if flt.get("op") not in _FILTER_OPS:
                raise ApiError.bad_field(
                    f"{fw}/op",
                    "Unknown filter operator",
                    f"expected one of: {', '.join(_FILTER_OPS)}",
                )
            if flt["op"] in ("LT", "LE", "GT", "GE") and _number(flt["value"]) is None:
                raise ApiError.bad_field(f"{fw}/value", f"{flt['op']} compares numbers only")


def _apply(
    state: Any, catalog: dict[str, Any], atype: str, payload: dict[str, Any], now_s: str
) -> None:
    items = catalog["items"]
    if atype in ("ADD", "PATCH"):
        sku = payload["sku"]
        item = items.get(sku)
        if item is None:
            item = items[sku] = {
                "id": state.next_id("catalogItem"),
                "sku": sku,
                "price": None,
                "attributes": {},
                "product": None,
                "created": now_s,
            }
        elif atype == "ADD":  # replaceIfExists: attributes are replaced
            item["attributes"] = {}
        item["attributes"].update(clone(payload.get("attributes") or {}))
        item["product"] = clone(payload.get("product"))
        _set_price(state, item, payload, now_s)
    elif atype == "PATCH_MANY":
        for item in _select(items, payload.get("filters", [])):
            item["attributes"].update(clone(payload.get("attributes") or {}))
            _set_price(state, item, payload, now_s)
    elif atype == "REMOVE":
        del items[payload["sku"]]
    else:
        for item in _select(items, payload.get("filters", [])):
            del items[item["sku"]]


def _set_price(state: Any, item: dict[str, Any], payload: dict[str, Any], now_s: str) -> None:
    price = payload.get("price")
    if price is not None:  # without a new price the old one stays
        item["price"] = price
        record_price(state, item["sku"], price, now_s)


def _select(items: dict[str, Any], filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for item in list(items.values()) if all(_matches(item, f) for f in filters)]


def _matches(item: dict[str, Any], flt: dict[str, Any]) -> bool:
    attr = flt["attr"]
    value = item["attributes"].get(attr, item.get(attr) if attr in ("sku", "price") else None)
    if value is None:
        return False
    op = flt["op"]
    wanted = flt["value"]
    if op == "EQ":
        return value == wanted or str(value) == str(wanted)
    if op == "IN":
        options = wanted if isinstance(wanted, list) else str(wanted).split(",")
        return str(value) in {str(o).strip() for o in options}
    left, right = _number(value), _number(wanted)
    if left is None or right is None:
        return False
    return {"LT": left < right, "LE": left <= right, "GT": left > right, "GE": left >= right}[op]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _best(
    history: list[dict[str, Any]], end: datetime.datetime, days: int, strict: bool
) -> dict[str, Any] | None:
    end_s = fmt_time(end)
    upto = [h for h in history if h["observedAt"] <= end_s]
    if not upto:
        return None
    if not strict:
        # the frame ends where the current price began; the current price itself does not count
        end_s = upto[-1]["observedAt"]
        upto = upto[:-1]
        if not upto:
            return None
        end = parse_time(end_s)
    start_s = fmt_time(end - datetime.timedelta(days=days))
    inside = [h for h in upto if h["observedAt"] >= start_s]
    before = [h for h in upto if h["observedAt"] < start_s]
    if before:  # the price in force when the frame began counts too
        inside.append(before[-1])
    if not inside:
        return None
    return min(inside, key=lambda h: (h["price"], h["observedAt"]))
