"""The sandbox's in-memory store: everything it knows, as JSON-able data behind one lock.

``State.config`` is the parsed campaigns file (see :mod:`.campaigns`); ``State.data`` holds the
entities the API creates and changes (profiles, sessions, coupons, ledgers, ...), keyed by the id
the API uses, with string keys so that a snapshot is plain JSON. Callers hold ``lock`` while they
read or change it (the HTTP layer holds it around each request).
"""

from __future__ import annotations

import datetime
import threading
import uuid
from typing import Any

from . import ledger
from .campaigns import Config, parse_campaigns
from .values import clone, fmt_time, to_cents
from .wire import ApiError

#: The ``format`` tag of a snapshot; restore() refuses anything else.
SNAPSHOT_FORMAT = "django-talonone-sandbox-state/1"

_SECTIONS = (
    "counters",
    "profiles",
    "sessions",
    "audiences",
    "coupons",
    "referrals",
    "loyalty",
    "catalogs",
    "giveaways",
    "budgets",
    "returns",
    "idempotency",
    "priceHistory",
)


class State:
    """The sandbox's data and campaigns; thread-safe when callers hold ``lock``."""

    def __init__(self, campaigns: dict[str, Any] | None = None) -> None:
        self.lock = threading.RLock()
        self.config: Config = parse_campaigns(campaigns)
        #: when the campaigns were loaded: the ``created`` time of every campaign
        self.loaded_at = fmt_time(_now())
        self.data: dict[str, Any] = {}
        self.reset()

    def reset(self) -> None:
        """Forget all data and start again from what the campaigns file seeds; keep campaigns."""
        with self.lock:
            self.data = {name: {} for name in _SECTIONS}
            self._seed(_now())

    def load_campaigns(self, data: dict[str, Any]) -> None:
        """Replace the campaigns (ValueError, and no change, on a bad file).

        Data is kept; what the new file seeds (coupons, referral codes, audiences, catalogs,
        profiles, loyalty cards) is added where it does not exist yet.
        """
        config = parse_campaigns(data)
        with self.lock:
            self.config = config
            self.loaded_at = fmt_time(_now())
            self._seed(_now())

    def snapshot(self) -> dict[str, Any]:
        """The whole state as JSON-able data (campaigns included), for a ``--state FILE``."""
        with self.lock:
            return {
                "format": SNAPSHOT_FORMAT,
                "campaigns": clone(self.config.raw),
                "data": clone(self.data),
            }

    @classmethod
    def restore(cls, data: dict[str, Any]) -> State:
        """Rebuild a state from :meth:`snapshot`'s output; ValueError if it is not one."""
        if not isinstance(data, dict) or data.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"not a sandbox state snapshot (expected format {SNAPSHOT_FORMAT!r})")
        saved = data.get("data")
        if not isinstance(saved, dict) or not all(
            isinstance(saved.get(s), dict) for s in _SECTIONS
        ):
            raise ValueError("sandbox state snapshot is incomplete: 'data' lacks a section")
        state = cls(data.get("campaigns"))
        state.data = clone(saved)
        return state

    # -- small services the handlers share ---------------------------------------------------

    def next_id(self, kind: str) -> int:
        """The next integer id for ``kind`` (each kind counts from 1)."""
        counters = self.data["counters"]
        value = counters.get(kind, 0) + 1
        counters[kind] = value
        return value

    def peek_id(self, kind: str) -> int:
        """The id :meth:`next_id` would give, without using it (for dry runs)."""
        return self.data["counters"].get(kind, 0) + 1

    def new_uuid(self) -> str:
        """A fresh transaction UUID."""
        return str(uuid.uuid4())

    def working_profile(self, integration_id: str, now: str, *, dry: bool) -> dict[str, Any]:
        """The profile a request works on: the stored one (created when missing), or for a dry
        run a copy of it (or a new one with the id it would get) that is never stored."""
        if not dry:
            return self.ensure_profile(integration_id, now)
        profile = self.data["profiles"].get(integration_id)
        if profile is not None:
            return clone(profile)
        return new_profile(self.peek_id("profile"), integration_id, now)

    def ensure_profile(self, integration_id: str, now: str) -> dict[str, Any]:
        """The profile with this integration id, created empty when it does not exist."""
        profile = self.data["profiles"].get(integration_id)
        if profile is None:
            profile = new_profile(self.next_id("profile"), integration_id, now)
            self.data["profiles"][integration_id] = profile
        return profile

    def program_data(self, program_id: int) -> dict[str, Any]:
        """The ledgers and cards of a loyalty program (created empty on first use)."""
        key = str(program_id)
        entry = self.data["loyalty"].get(key)
        if entry is None:
            entry = self.data["loyalty"][key] = {"profiles": {}, "cards": {}}
        return entry

    def profile_ledger(self, program_id: int, integration_id: str, now: str) -> dict[str, Any]:
        """A profile's ledger in a program, created (joined at ``now``) on first use."""
        ledgers = self.program_data(program_id)["profiles"]
        entry = ledgers.get(integration_id)
        if entry is None:
            entry = ledgers[integration_id] = ledger.new_ledger(now)
        return entry

    # -- seeding from the campaigns file -----------------------------------------------------

    def _seed(self, now: datetime.datetime) -> None:
        cfg = self.config
        stamp = fmt_time(now)
        data = self.data
        for spec in cfg.audiences:
            key = str(spec["id"])
            if key not in data["audiences"]:
                data["audiences"][key] = {
                    "id": spec["id"],
                    "created": stamp,
                    "name": spec["name"],
                    "description": spec["description"],
                    "members": [],
                }
            self._bump("audience", spec["id"])
        for spec in cfg.catalogs:
            self._seed_catalog(spec, stamp)
        for entry in cfg.best_prior_prices:
            history = data["priceHistory"].setdefault(entry["sku"], [])
            observed = fmt_time(entry["observedAt"])
            if not any(
                h["observedAt"] == observed and h["price"] == entry["price"] for h in history
            ):
                history.append(
                    {
                        "id": self.next_id("priceObservation"),
                        "price": entry["price"],
                        "observedAt": observed,
                        "contextIds": list(entry["contextIds"]),
                    }
                )
                history.sort(key=lambda h: h["observedAt"])
        # profiles first: referral codes and cards below create the profiles they name
        for spec in cfg.profiles:
            if spec["integrationId"] in data["profiles"]:
                continue
            profile = self.ensure_profile(spec["integrationId"], stamp)
            profile["attributes"] = clone(spec["attributes"])
            for aid in spec["audiences"]:
                join_audience(self, profile, aid)
            for grant in spec["loyalty"]:
                book = self.profile_ledger(grant["programId"], spec["integrationId"], stamp)
                self._import_points(
                    book,
                    grant["points"],
                    grant["subledgerId"],
                    _opt_time(grant["expiryDate"]),
                    stamp,
                    profile=spec["integrationId"],
                )
        for campaign in cfg.campaigns:
            for spec in campaign.coupons:
                if spec["value"] not in data["coupons"]:
                    data["coupons"][spec["value"]] = self._coupon_from_spec(
                        campaign.id, spec, stamp
                    )
            for spec in campaign.referrals:
                if spec["code"] not in data["referrals"]:
                    self.ensure_profile(spec["advocate"], stamp)
                    data["referrals"][spec["code"]] = {
                        "id": self.next_id("referral"),
                        "created": stamp,
                        "campaignId": campaign.id,
                        "code": spec["code"],
                        "advocateProfileIntegrationId": spec["advocate"],
                        "friendProfileIntegrationId": spec["friend"],
                        "usageLimit": spec["usageLimit"],
                        "usageCounter": 0,
                        "startDate": _opt_time(spec["startDate"]),
                        "expiryDate": _opt_time(spec["expiryDate"]),
                        "attributes": clone(spec["attributes"]),
                        "referredCustomers": [],
                    }
        for pool in cfg.pools.values():
            entry = data["giveaways"].setdefault(str(pool["id"]), {"codes": []})
            known = {g["code"] for g in entry["codes"]}
            for code in pool["codes"]:
                if code not in known:
                    entry["codes"].append(
                        {
                            "id": self.next_id("giveaway"),
                            "created": stamp,
                            "code": code,
                            "poolId": pool["id"],
                            "profileIntegrationId": None,
                        }
                    )
        for program in cfg.programs.values():
            cards = self.program_data(program.id)["cards"]
            for spec in program.cards:
                if spec["identifier"] in cards:
                    continue
                card = new_card(
                    self.next_id("loyaltyCard"), spec["identifier"], stamp, spec["status"]
                )
                card["profiles"] = [
                    {"integrationId": p, "timestamp": stamp} for p in spec["profiles"]
                ]
                for integration_id in spec["profiles"]:
                    self.ensure_profile(integration_id, stamp)
                if spec["points"]:
                    self._import_points(
                        card["ledger"], spec["points"], "", None, stamp, card=spec["identifier"]
                    )
                cards[spec["identifier"]] = card

    def _seed_catalog(self, spec: dict[str, Any], stamp: str) -> None:
        key = str(spec["id"])
        if key in self.data["catalogs"]:
            return
        items = {}
        for item in spec["items"]:
            entry = {
                "id": self.next_id("catalogItem"),
                "sku": item["sku"],
                "price": item.get("price"),
                "attributes": clone(item["attributes"]),
                "product": clone(item.get("product")),
                "created": stamp,
            }
            items[item["sku"]] = entry
            if item.get("price") is not None:
                record_price(self, item["sku"], item["price"], stamp)
        self.data["catalogs"][key] = {
            "id": spec["id"],
            "created": stamp,
            "modified": stamp,
            "name": spec["name"],
            "description": spec["description"],
            "version": 1,
            "items": items,
        }

    def _coupon_from_spec(
        self, campaign_id: int, spec: dict[str, Any], stamp: str
    ) -> dict[str, Any]:
        return {
            "id": self.next_id("coupon"),
            "created": stamp,
            "campaignId": campaign_id,
            "value": spec["value"],
            "usageLimit": spec["usageLimit"],
            "usageCounter": 0,
            "profileLimit": spec["profileLimit"],
            "reservationLimit": spec["reservationLimit"],
            "startDate": _opt_time(spec["startDate"]),
            "expiryDate": _opt_time(spec["expiryDate"]),
            "recipientIntegrationId": spec["recipientIntegrationId"],
            "isReservationMandatory": spec["isReservationMandatory"],
            "implicitlyReserved": spec["implicitlyReserved"],
            "attributes": clone(spec["attributes"]),
            "reservedBy": [],
            "redemptions": {},
            "referralId": None,
        }

    def _import_points(
        self,
        book: dict[str, Any],
        amount: int,
        subledger: str,
        expiry: str | None,
        stamp: str,
        *,
        card: str | None = None,
        profile: str | None = None,
    ) -> None:
        ledger.add_transaction(
            book,
            tx_id=self.next_id("ledgerEntry"),
            uuid=self.new_uuid(),
            created=stamp,
            kind="addition",
            amount=amount,
            name="Imported from the campaigns file",
            subledger=subledger,
            expiry=expiry,
            source="import",
            reason="import",
            card=card,
            profile=profile,
        )

    def _bump(self, kind: str, used: int) -> None:
        counters = self.data["counters"]
        if counters.get(kind, 0) < used:
            counters[kind] = used


def find_profile(state: State, integration_id: Any) -> dict[str, Any]:
    """The stored customer profile with this integration id, or the API's 404."""
    profile = state.data["profiles"].get(integration_id)
    if profile is None:
        raise ApiError.not_found(f"customer profile {integration_id!r}")
    return profile


def new_profile(profile_id: int, integration_id: str, now: str) -> dict[str, Any]:
    """A new, empty customer profile record."""
    return {
        "id": profile_id,
        "integrationId": integration_id,
        "created": now,
        "attributes": {},
        "audiences": [],
        "closedSessions": 0,
        "totalSales": 0,
        "lastActivity": now,
        "sessions": [],
        "achievements": {},
        "giveaways": [],
    }


def new_card(card_id: int, identifier: str, now: str, status: str = "active") -> dict[str, Any]:
    """A new loyalty card record with an empty ledger."""
    return {
        "id": card_id,
        "identifier": identifier,
        "created": now,
        "modified": now,
        "status": status,
        "profiles": [],
        "ledger": ledger.new_ledger(now),
    }


def join_audience(state: State, profile: dict[str, Any], audience_id: int) -> bool:
    """Add a profile to an audience; False if it was a member already."""
    audience = state.data["audiences"].get(str(audience_id))
    if audience is None or audience_id in profile["audiences"]:
        return False
    profile["audiences"].append(audience_id)
    audience["members"].append(profile["integrationId"])
    return True


def leave_audience(state: State, profile: dict[str, Any], audience_id: int) -> bool:
    """Remove a profile from an audience; False if it was not a member."""
    if audience_id not in profile["audiences"]:
        return False
    profile["audiences"].remove(audience_id)
    audience = state.data["audiences"].get(str(audience_id))
    if audience is not None and profile["integrationId"] in audience["members"]:
        audience["members"].remove(profile["integrationId"])
    return True


def record_price(state: State, sku: str, price: float, stamp: str) -> None:
    """Remember a catalog price of ``sku`` from ``stamp`` on (for best prior price)."""
    history = state.data["priceHistory"].setdefault(sku, [])
    cents = to_cents(price)
    if history and history[-1]["price"] == cents:
        return
    history.append(
        {
            "id": state.next_id("priceObservation"),
            "price": cents,
            "observedAt": stamp,
            "contextIds": [],
        }
    )


def _opt_time(value: datetime.datetime | None) -> str | None:
    return None if value is None else fmt_time(value)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)
