"""The shop adapter: turns the shop's carts, orders and users into Integration API payloads.

Every shop models its cart differently, so nothing else in django-talonone looks inside a shop
object: it asks the adapter. The default :class:`ShopAdapter` works with duck-typed objects (the
attribute names it reads are listed on each hook); a shop whose objects look different subclasses
it, overrides the hooks that differ, and names the subclass in ``TALONONE["ADAPTER"]``.

Adapters run inside the shop's transaction when a signal is sent; they should read, not write.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import models
from django.utils.functional import Promise
from django.utils.module_loading import import_string

from .conf import settings

__all__ = ["AdapterError", "ShopAdapter", "get_adapter"]

# Session states a session update may set; partially_returned is only reached through a return.
UPDATABLE_STATES = ("open", "closed", "cancelled")


class AdapterError(ValueError):
    """A shop object could not be turned into a payload; the message says which hook and why."""


class ShopAdapter:
    """Default adapter for duck-typed shop objects; subclass it to fit your shop.

    A cart or order is read through these attributes (each optional unless said otherwise;
    a method of that name is called without arguments):

    - ``talonone_session_id``: the session's integration id (default: ``"<app>.<model>-<pk>"``
      for a model instance, else ``str(obj.id)``);
    - ``customer`` or ``user``: the shop's user (None or an anonymous user = anonymous session);
      ``talonone_profile_id`` overrides the profile id outright;
    - ``lines`` or ``items``: the cart lines (a related manager, queryset or iterable);
    - ``coupon_codes`` (list) or ``coupon_code`` (str); ``referral_code``;
    - ``shipping_cost`` or ``talonone_additional_costs`` (``{"shipping": 4.95}``);
    - ``talonone_attributes``: custom session attributes (dict).

    A line: ``sku`` (or ``product.sku``, required), ``quantity`` (required), ``price`` or
    ``unit_price`` (the price of one unit), ``name`` (or ``product.name``), ``category`` (or
    ``product.category``), ``talonone_attributes``.
    """

    # ---- sessions ----------------------------------------------------------------------------

    def session_id(self, obj: Any) -> str:
        """The integration id of the Talon.One session that stands for this cart or order.

        Override it so that a cart and the order made from it share one id: Talon.One then sees
        one session go from open to closed, which is what its rules and limits expect.
        """
        explicit = _scalar(obj, "talonone_session_id")
        if explicit not in (None, ""):
            return str(explicit)
        if isinstance(obj, models.Model) and obj.pk is not None:
            return f"{obj._meta.label_lower}-{obj.pk}"
        ident = getattr(obj, "id", None)
        if ident not in (None, ""):
            return str(ident)
        raise AdapterError(
            f"ShopAdapter.session_id: {type(obj).__name__} has no talonone_session_id, pk or id; "
            "give it one of those or override session_id() in your adapter."
        )

    def profile_id(self, obj: Any) -> str | None:
        """The integration id of the customer of a cart or order, or None for a guest."""
        explicit = _scalar(obj, "talonone_profile_id")
        if explicit is not None:
            return str(explicit) or None
        user = self.user(obj)
        if user is None or not getattr(user, "is_authenticated", True):
            return None
        return self.profile_id_for_user(user)

    def user(self, obj: Any) -> Any | None:
        """The shop's user who owns a cart or order (``obj.customer`` or ``obj.user``), or None."""
        for name in ("customer", "user"):
            value = getattr(obj, name, None)
            if value is not None:
                return value
        return None

    def profile_id_for_user(self, user: Any) -> str:
        """The integration id of a user's customer profile: ``user.talonone_profile_id`` or the pk.

        Choose it once and never change it: Talon.One keys loyalty points and limits on it. The pk
        is a safe default; an e-mail address is not (it changes, and it is personal data).
        """
        explicit = _scalar(user, "talonone_profile_id")
        if explicit not in (None, ""):
            return str(explicit)
        pk = getattr(user, "pk", None)
        if pk is None:
            raise AdapterError(
                f"ShopAdapter.profile_id_for_user: {type(user).__name__} has no pk; "
                "save the user first or override profile_id_for_user()."
            )
        return str(pk)

    def session_payload(self, obj: Any, state: str | None = None) -> dict[str, Any]:
        """The IntegrationRequest body for UpdateCustomerSessionV2 for a cart or order.

        ``state`` None leaves the session's state alone (a new session starts open). Fields the
        hooks return None for are left out, so Talon.One keeps what it had.
        """
        if state is not None and state not in UPDATABLE_STATES:
            raise AdapterError(
                f"ShopAdapter.session_payload: state must be one of {', '.join(UPDATABLE_STATES)}"
                f" or None, got {state!r} (partially_returned is reached through a return)."
            )
        session: dict[str, Any] = {}
        profile_id = self.profile_id(obj)
        if profile_id:
            session["profileId"] = profile_id
        store = self.store_integration_id(obj)
        if store:
            session["storeIntegrationId"] = store
        if state is not None:
            session["state"] = state
        session["cartItems"] = self.cart_items(obj)
        session["additionalCosts"] = self.additional_costs(obj)
        optional = {
            "couponCodes": self.coupon_codes(obj),
            "referralCode": self.referral_code(obj),
            "loyaltyCards": self.loyalty_cards(obj),
            "identifiers": self.identifiers(obj),
        }
        session.update({key: value for key, value in optional.items() if value is not None})
        attributes = self.session_attributes(obj)
        if attributes:
            session["attributes"] = attributes
        body: dict[str, Any] = {"customerSession": session}
        if settings.RESPONSE_CONTENT:
            body["responseContent"] = list(settings.RESPONSE_CONTENT)
        return _jsonable(body)

    def cart_items(self, obj: Any) -> list[dict[str, Any]]:
        """The cart's lines as CartItem dicts, in a stable order: effects refer to the index."""
        return [self.cart_item(line) for line in _lines(obj)]

    def cart_item(self, line: Any) -> dict[str, Any]:
        """One CartItem dict (sku, name, quantity, price, category, attributes) for a line."""
        product = getattr(line, "product", None)
        sku = _first(line, "sku") or _first(product, "sku")
        if not sku:
            raise AdapterError(
                f"ShopAdapter.cart_item: {type(line).__name__} has no sku (nor product.sku); "
                "override cart_item() to say where it is."
            )
        quantity = _first(line, "quantity")
        if quantity is None:
            raise AdapterError(f"ShopAdapter.cart_item: line {sku!r} has no quantity.")
        item: dict[str, Any] = {"sku": str(sku), "quantity": int(quantity)}
        name = _first(line, "name") or _first(product, "name")
        if name:
            item["name"] = str(name)
        price = _first(line, "price", "unit_price")
        if price is not None:
            item["price"] = price
        category = _first(line, "category") or _first(product, "category")
        if category and isinstance(category, str):
            item["category"] = category
        for dimension in ("weight", "height", "width", "length"):
            value = _first(line, dimension)
            if value is not None:
                item[dimension] = value
        attributes = _scalar(line, "talonone_attributes")
        if attributes:
            item["attributes"] = dict(attributes)
        return item

    def additional_costs(self, obj: Any) -> dict[str, dict[str, Any]]:
        """Session-level costs such as shipping, ``{"shipping": {"price": 4.95}}``.

        Each name must exist as an additional cost in your Talon.One Application.
        """
        explicit = _scalar(obj, "talonone_additional_costs")
        if explicit is not None:
            return {
                str(name): dict(value) if isinstance(value, Mapping) else {"price": value}
                for name, value in explicit.items()
            }
        shipping = _scalar(obj, "shipping_cost")
        return {} if shipping is None else {"shipping": {"price": shipping}}

    def coupon_codes(self, obj: Any) -> list[str] | None:
        """The codes the customer entered; ``[]`` drops earlier codes, None leaves the field out."""
        codes = _scalar(obj, "coupon_codes")
        if codes is None:
            if not hasattr(obj, "coupon_code"):
                return None
            codes = _scalar(obj, "coupon_code")
            return [str(codes)] if codes else []
        if isinstance(codes, str):
            return [codes] if codes else []
        return [str(code) for code in codes if code]

    def referral_code(self, obj: Any) -> str | None:
        """The referral code entered; ``""`` drops an earlier one, None leaves the field out."""
        code = _scalar(obj, "referral_code")
        return None if code is None else str(code)

    def store_integration_id(self, obj: Any) -> str | None:
        """The integration id of the store the cart belongs to, if your Application uses stores."""
        value = _scalar(obj, "talonone_store_id")
        return None if value in (None, "") else str(value)

    def loyalty_cards(self, obj: Any) -> list[str] | None:
        """Loyalty card identifiers for card-based programs (at most one), or None."""
        value = _scalar(obj, "loyalty_card")
        if value is None:
            return None
        return [str(value)] if value else []

    def identifiers(self, obj: Any) -> list[str] | None:
        """Session identifiers that rules may limit on (at most five), or None."""
        value = _scalar(obj, "talonone_identifiers")
        return None if value is None else [str(v) for v in value]

    def session_attributes(self, obj: Any) -> dict[str, Any]:
        """Custom session attributes (``obj.talonone_attributes``); each must exist in Talon.One."""
        value = _scalar(obj, "talonone_attributes")
        return dict(value) if value else {}

    def order_for_session(self, obj: Any) -> models.Model | None:
        """The Django object a CustomerSession links to (the object itself, if it is saved)."""
        if isinstance(obj, models.Model) and obj.pk is not None:
            return obj
        return None

    # ---- profiles ----------------------------------------------------------------------------

    def profile_payload(self, user: Any) -> dict[str, Any]:
        """The CustomerProfileIntegrationRequestV2 body for UpdateCustomerProfileV2."""
        body: dict[str, Any] = {"attributes": self.profile_attributes(user)}
        changes = self.audiences_changes(user)
        if changes:
            body["audiencesChanges"] = {
                "adds": list(changes.get("adds", [])),
                "deletes": list(changes.get("deletes", [])),
            }
        return _jsonable(body)

    def profile_attributes(self, user: Any) -> dict[str, Any]:
        """Profile attributes to send (``user.talonone_attributes``; default none).

        Sending nothing personal is the safe default: add what your campaigns need, e.g.
        ``{"Name": user.get_full_name()}``; each attribute must exist in your Application.
        """
        value = _scalar(user, "talonone_attributes")
        return dict(value) if value else {}

    def audiences_changes(self, user: Any) -> dict[str, list[int]] | None:
        """Audience ids to join and leave, ``{"adds": [...], "deletes": [...]}``, or None."""
        return None

    # ---- returns -----------------------------------------------------------------------------

    def returned_items(self, order: Any, lines: Any) -> list[dict[str, Any]]:
        """ReturnedCartItem dicts (position, quantity, sku) for the shop's returned lines.

        ``lines`` may be an iterable of order lines (returned whole), ``(line, quantity)`` pairs,
        objects with ``line`` and ``quantity``, dicts with ``sku``/``position``/``quantity``, or a
        return object with ``lines``/``items``. None returns everything not yet returned.
        """
        order_lines = _lines(order)
        if lines is None:
            return self._everything_remaining(order, order_lines)
        if _has_lines(lines):
            entries = _lines(lines)
        elif hasattr(lines, "all"):
            entries = list(lines.all())
        else:
            entries = list(lines)
        items = []
        for entry in entries:
            line, quantity, item = _return_entry(entry)
            if line is not None:
                item.setdefault("sku", self.cart_item(line)["sku"])
                position = _index_of(line, order_lines)
                if position is not None:
                    item.setdefault("position", position)
                quantity = line.quantity if quantity is None else quantity
            if quantity is None or int(quantity) < 1:
                raise AdapterError(
                    f"ShopAdapter.returned_items: a returned line needs a quantity of at least 1, "
                    f"got {quantity!r} for {item.get('sku') or entry!r}."
                )
            item["quantity"] = int(quantity)
            if "position" not in item:
                item["position"] = self._mirrored_position(order, item)
            returned = {"position": int(item["position"]), "quantity": item["quantity"]}
            if item.get("sku"):
                returned["sku"] = str(item["sku"])
            items.append(returned)
        if not items:
            raise AdapterError("ShopAdapter.returned_items: the return has no lines.")
        return items

    def return_id(self, order: Any, lines: Any) -> str:
        """A stable id of this return, sent as the Idempotency-Key (at most 255 characters).

        Pass ``return_id=`` with the signal when your shop has its own return ids. The default
        is the return object's label and pk, or else a hash of the session id, the returned items
        and the lines' ``returned_quantity`` (so that the same return sent twice counts once).
        """
        if isinstance(lines, models.Model) and lines.pk is not None:
            return f"{lines._meta.label_lower}-{lines.pk}"
        session_id = self.session_id(order)
        material = [
            session_id,
            self.returned_items(order, lines),
            [getattr(line, "returned_quantity", None) for line in _lines(order)],
        ]
        digest = hashlib.sha256(json.dumps(_jsonable(material), sort_keys=True).encode())
        return f"return-{digest.hexdigest()[:40]}"

    # ---- helpers a subclass may reuse ---------------------------------------------------------

    def _everything_remaining(self, order: Any, order_lines: list[Any]) -> list[dict[str, Any]]:
        # Talon.One's own view of what is left (the mirror) wins over the shop's line quantities,
        # which may not track returns at all.
        from .models import CartItem

        mirrored = list(
            CartItem.objects.filter(session__integration_id=self.session_id(order)).order_by(
                "position"
            )
        )
        if mirrored:
            items = []
            for row in mirrored:
                left = (
                    row.remaining_quantity
                    if row.remaining_quantity is not None
                    else row.quantity - row.returned_quantity
                )
                if left > 0:
                    items.append({"position": row.position, "quantity": left, "sku": row.sku})
        else:
            items = [
                {"position": index, "quantity": item["quantity"], "sku": item["sku"]}
                for index, item in enumerate(self.cart_item(line) for line in order_lines)
                if item["quantity"] > 0
            ]
        if not items:
            raise AdapterError(
                "ShopAdapter.returned_items: nothing is left to return on this order."
            )
        return items

    def _mirrored_position(self, order: Any, item: dict[str, Any]) -> int:
        from .models import CartItem

        sku = item.get("sku")
        row = (
            CartItem.objects.filter(session__integration_id=self.session_id(order), sku=sku)
            .order_by("position")
            .first()
            if sku
            else None
        )
        if row is None:
            raise AdapterError(
                f"ShopAdapter.returned_items: cannot find the cart position of {sku!r}; "
                "pass the order's own line objects or give each returned line a position."
            )
        return row.position


def get_adapter() -> ShopAdapter:
    """The adapter named by ``TALONONE["ADAPTER"]`` (one shared instance, rebuilt on change)."""
    global _adapter
    if _adapter is None:
        _adapter = load_adapter(settings.ADAPTER)
    return _adapter


def load_adapter(path: Any) -> ShopAdapter:
    """Import and instantiate an adapter class from a dotted path; a clear error if it is wrong."""
    if isinstance(path, type):
        cls = path
    else:
        try:
            cls = import_string(str(path))
        except ImportError as exc:
            raise ImproperlyConfigured(
                f'TALONONE["ADAPTER"] = {path!r} cannot be imported: {exc}'
            ) from exc
    if not (isinstance(cls, type) and issubclass(cls, ShopAdapter)):
        raise ImproperlyConfigured(
            f'TALONONE["ADAPTER"] = {path!r} must name a subclass of '
            "django_talonone.adapters.ShopAdapter."
        )
    return cls()


_adapter: ShopAdapter | None = None


def _reset_adapter(*, setting: str, **kwargs: Any) -> None:
    global _adapter
    if setting == "TALONONE":
        _adapter = None


setting_changed.connect(_reset_adapter, dispatch_uid="django_talonone.adapters.reset")


def _scalar(obj: Any, name: str) -> Any:
    """``obj.<name>``, called when it is a method; None when absent."""
    value = getattr(obj, name, None)
    if callable(value) and not hasattr(value, "all"):
        value = value()
    return value


def _first(obj: Any, *names: str) -> Any:
    if obj is None:
        return None
    for name in names:
        value = _scalar(obj, name)
        if value is not None:
            return value
    return None


def _has_lines(obj: Any) -> bool:
    return any(getattr(obj, name, None) is not None for name in ("lines", "items")) and not (
        isinstance(obj, (list, tuple, Mapping))
    )


def _lines(obj: Any) -> list[Any]:
    """The lines of a cart, order or return, in a stable order (pk order for an unordered query)."""
    for name in ("lines", "items"):
        value = getattr(obj, name, None)
        if value is None:
            continue
        if hasattr(value, "all"):
            queryset = value.all()
            if hasattr(queryset, "ordered") and not queryset.ordered:
                if getattr(queryset, "_result_cache", None) is not None:
                    # Prefetched (prefetch_related): sort those, rather than query again.
                    return sorted(queryset, key=lambda line: line.pk)
                queryset = queryset.order_by("pk")
            return list(queryset)
        if callable(value):
            value = value()
        return list(value)
    return []


def _return_entry(entry: Any) -> tuple[Any, Any, dict[str, Any]]:
    """(order line or None, quantity or None, partial ReturnedCartItem) for one returned entry."""
    if isinstance(entry, Mapping):
        item = {key: entry[key] for key in ("position", "sku") if entry.get(key) is not None}
        return entry.get("line"), entry.get("quantity"), item
    if isinstance(entry, (tuple, list)) and len(entry) == 2:
        return entry[0], entry[1], {}
    for name in ("line", "order_line"):
        line = getattr(entry, name, None)
        if line is not None:
            return line, getattr(entry, "quantity", None), {}
    return entry, None, {}


def _index_of(line: Any, order_lines: list[Any]) -> int | None:
    for index, candidate in enumerate(order_lines):
        # Model equality is by pk, so a line re-read from the database still matches.
        if candidate is line or candidate == line:
            return index
    return None


def _jsonable(value: Any) -> Any:
    """A copy json.dumps accepts: Decimals become numbers, datetimes RFC 3339, UUIDs strings."""
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(item) for item in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime.datetime):
        from .client import rfc3339

        return rfc3339(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, Promise)):  # Promise: a lazy translation string
        return str(value)
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return [_jsonable(item) for item in value]
    return value
