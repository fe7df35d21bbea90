"""Local mirrors of Talon.One's customer profiles, sessions, cart lines, effects and loyalty,
plus the outbox of pushes to the Integration API.

Each mirror keeps a local surrogate pk, Talon.One's ids as unique indexed columns, the last raw
payload in ``raw``, and real columns only for what people filter, sort or join on. Fields that only
exist locally (the link to the shop's user or order, sync bookkeeping) say so in their help text.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q
from django.utils import timezone

__all__ = [
    "Audience",
    "AudienceMembership",
    "CartItem",
    "CustomerProfile",
    "CustomerSession",
    "Effect",
    "LoyaltyBalance",
    "LoyaltyMembership",
    "Push",
]

MONEY = {"max_digits": 16, "decimal_places": 4, "default": Decimal("0")}
POINTS = {"max_digits": 16, "decimal_places": 4, "default": Decimal("0")}
# Talon.One allows integration ids up to 1,000 characters.
INTEGRATION_ID = {"max_length": 1000}


class CustomerProfile(models.Model):
    """A Talon.One customer profile (ApplicationCustomer / AudienceCustomer on the wire)."""

    integration_id = models.CharField(**INTEGRATION_ID, unique=True)
    talon_id = models.BigIntegerField(
        null=True, blank=True, db_index=True, help_text="Talon.One's internal id."
    )
    account_id = models.BigIntegerField(null=True, blank=True)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="talonone_profile",
        help_text="Local only: the shop's user this profile belongs to.",
    )
    attributes = models.JSONField(default=dict, blank=True)
    closed_sessions = models.IntegerField(default=0)
    total_sales = models.DecimalField(**MONEY)
    last_activity = models.DateTimeField(null=True, blank=True)
    sandbox = models.BooleanField(default=False)
    advocate_integration_id = models.CharField(**INTEGRATION_ID, blank=True, default="")
    connected_application_ids = models.JSONField(default=list, blank=True)
    connected_audience_ids = models.JSONField(default=list, blank=True)
    talon_created = models.DateTimeField(null=True, blank=True, help_text="`created` on Talon.One.")
    raw = models.JSONField(default=dict, blank=True, help_text="The last profile payload received.")
    synced_at = models.DateTimeField(null=True, blank=True, help_text="Local only: last mirrored.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "customer profile"
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["last_activity"])]

    def __str__(self) -> str:
        return self.integration_id


class Audience(models.Model):
    """A Talon.One audience (a list of customer profiles that campaigns can target)."""

    talon_id = models.BigIntegerField(unique=True, help_text="Talon.One's audience id.")
    name = models.CharField(max_length=500, blank=True, default="")
    integration = models.CharField(max_length=100, blank=True, default="")
    integration_id = models.CharField(**INTEGRATION_ID, blank=True, default="")
    raw = models.JSONField(default=dict, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "talon_id"]

    def __str__(self) -> str:
        return self.name or f"audience {self.talon_id}"


class AudienceMembership(models.Model):
    """A customer profile's membership of an audience."""

    profile = models.ForeignKey(
        CustomerProfile, on_delete=models.CASCADE, related_name="audience_memberships"
    )
    audience = models.ForeignKey(Audience, on_delete=models.CASCADE, related_name="memberships")
    synced_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["profile", "audience"], name="talonone_audience_member_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.profile} in {self.audience}"


class LoyaltyMembership(models.Model):
    """A profile's membership of a loyalty program (joined date)."""

    profile = models.ForeignKey(
        CustomerProfile, on_delete=models.CASCADE, related_name="loyalty_memberships"
    )
    program_id = models.BigIntegerField(db_index=True, help_text="Talon.One's loyalty program id.")
    joined = models.DateTimeField(null=True, blank=True)
    raw = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["profile", "program_id"], name="talonone_loyalty_member_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.profile} in program {self.program_id}"


class LoyaltyBalance(models.Model):
    """A profile's points in one loyalty program ledger or subledger, with its tier when given."""

    profile = models.ForeignKey(
        CustomerProfile, on_delete=models.CASCADE, related_name="loyalty_balances"
    )
    program_id = models.BigIntegerField(db_index=True)
    subledger_id = models.CharField(
        max_length=255, blank=True, default="", help_text="Empty for the program's main ledger."
    )
    active_points = models.DecimalField(**POINTS)
    pending_points = models.DecimalField(**POINTS)
    spent_points = models.DecimalField(**POINTS)
    expired_points = models.DecimalField(**POINTS)
    negative_points = models.DecimalField(**POINTS)
    tier_id = models.BigIntegerField(null=True, blank=True)
    tier_name = models.CharField(max_length=255, blank=True, default="")
    tier_expiry = models.DateTimeField(null=True, blank=True)
    points_to_next_tier = models.DecimalField(
        max_digits=16, decimal_places=4, null=True, blank=True
    )
    next_tier_name = models.CharField(max_length=255, blank=True, default="")
    raw = models.JSONField(default=dict, blank=True)
    fetched_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["profile", "program_id", "subledger_id"], name="talonone_balance_uniq"
            )
        ]
        ordering = ["program_id", "subledger_id"]

    def __str__(self) -> str:
        ledger = f"/{self.subledger_id}" if self.subledger_id else ""
        return f"{self.profile}: {self.active_points} points in program {self.program_id}{ledger}"


class CustomerSession(models.Model):
    """A Talon.One customer session: one cart or order and its state."""

    class State(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"
        PARTIALLY_RETURNED = "partially_returned"
        CANCELLED = "cancelled"

    integration_id = models.CharField(**INTEGRATION_ID, unique=True)
    talon_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    application_id = models.BigIntegerField(null=True, blank=True)
    profile = models.ForeignKey(
        CustomerProfile,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sessions",
    )
    profile_integration_id = models.CharField(
        **INTEGRATION_ID, blank=True, default="", help_text="Empty for an anonymous session."
    )
    store_integration_id = models.CharField(max_length=1000, blank=True, default="")
    state = models.CharField(
        max_length=32, choices=State.choices, default=State.OPEN, db_index=True
    )
    coupon_codes = models.JSONField(default=list, blank=True)
    referral_code = models.CharField(max_length=100, blank=True, default="")
    loyalty_cards = models.JSONField(default=list, blank=True)
    identifiers = models.JSONField(default=list, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    additional_costs = models.JSONField(default=dict, blank=True)
    total = models.DecimalField(**MONEY)
    cart_item_total = models.DecimalField(**MONEY)
    additional_cost_total = models.DecimalField(**MONEY)
    discount_total = models.DecimalField(
        **MONEY, help_text="Sum of the current discount effects (local, computed from effects)."
    )
    first_session = models.BooleanField(default=False)
    update_count = models.IntegerField(default=0)
    # Local only: the shop's cart or order this session stands for.
    order_type = models.ForeignKey(
        ContentType, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    order_id = models.CharField(max_length=255, blank=True, default="", db_index=True)
    order = GenericForeignKey("order_type", "order_id")
    talon_created = models.DateTimeField(null=True, blank=True)
    talon_updated = models.DateTimeField(null=True, blank=True)
    raw = models.JSONField(default=dict, blank=True, help_text="The last session payload received.")
    synced_at = models.DateTimeField(null=True, blank=True, help_text="Local only: last mirrored.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "customer session"
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["order_type", "order_id"]),
            models.Index(fields=["profile", "state"]),
        ]

    def __str__(self) -> str:
        return f"{self.integration_id} ({self.state})"


class CartItem(models.Model):
    """One line of a session's cart, as last sent to (and answered by) Talon.One."""

    session = models.ForeignKey(
        CustomerSession, on_delete=models.CASCADE, related_name="cart_items"
    )
    position = models.IntegerField(help_text="Index in the cartItems sent; effects refer to it.")
    sku = models.CharField(max_length=255, db_index=True)
    name = models.CharField(max_length=500, blank=True, default="")
    quantity = models.IntegerField()
    returned_quantity = models.IntegerField(default=0)
    remaining_quantity = models.IntegerField(null=True, blank=True)
    price = models.DecimalField(max_digits=16, decimal_places=4, null=True, blank=True)
    category = models.CharField(max_length=255, blank=True, default="")
    attributes = models.JSONField(default=dict, blank=True)
    raw = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["session", "position"]
        constraints = [
            models.UniqueConstraint(fields=["session", "position"], name="talonone_cart_item_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku}"


class Effect(models.Model):
    """One rule-engine effect of a session's evaluation.

    Each answer carries the complete current set: mirroring an answer replaces the session's
    current effects in one transaction. Earlier sets are kept (``is_current=False``) once the
    session has been closed, so the history of what an order got stays visible.
    """

    session = models.ForeignKey(CustomerSession, on_delete=models.CASCADE, related_name="effects")
    campaign_id = models.BigIntegerField(db_index=True)
    ruleset_id = models.BigIntegerField(null=True, blank=True)
    rule_index = models.IntegerField(null=True, blank=True)
    rule_name = models.CharField(max_length=500, blank=True, default="")
    effect_type = models.CharField(max_length=100, db_index=True)
    props = models.JSONField(default=dict, blank=True)
    position = models.IntegerField(
        null=True, blank=True, help_text="The cart line (position) the effect applies to, if any."
    )
    sub_position = models.IntegerField(null=True, blank=True)
    triggered_by_coupon = models.BigIntegerField(
        null=True, blank=True, help_text="Talon.One's numeric coupon id (not the code)."
    )
    coupon_code = models.CharField(
        max_length=100,
        blank=True,
        default="",
        help_text="The code, from the campaign's acceptCoupon.",
    )
    evaluation = models.IntegerField(default=0, help_text="The session's updateCount it came from.")
    is_current = models.BooleanField(default=True)
    raw = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["session", "-is_current", "id"]
        indexes = [models.Index(fields=["session", "is_current"])]

    def __str__(self) -> str:
        return f"{self.effect_type} (campaign {self.campaign_id})"


class PushQuerySet(models.QuerySet["Push"]):
    def due(self, now: Any = None) -> PushQuerySet:
        """Pending rows whose next attempt time has come."""
        return self.filter(state=Push.State.PENDING, next_attempt_at__lte=now or timezone.now())

    def update(self, **kwargs: Any) -> int:
        """As ``QuerySet.update``, and ``updated_at`` moves too (``auto_now`` only acts on
        ``save()``; the outbox changes rows with UPDATE statements)."""
        kwargs.setdefault("updated_at", timezone.now())
        return super().update(**kwargs)


class Push(models.Model):
    """The outbox: one request to push to the Integration API, written in the shop's transaction.

    Rows for one ``key`` (a session or a profile) are sent one at a time, oldest first.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        IN_FLIGHT = "in_flight"
        DONE = "done"
        FAILED = "failed"
        DEAD = "dead"

    key = models.CharField(max_length=1100, help_text='"session:<id>" or "profile:<id>".')
    operation = models.CharField(
        max_length=100, help_text="The client method, e.g. update_customer_session_v2."
    )
    payload = models.JSONField(default=dict, help_text="Path args, body and query for the call.")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True, default="")
    error_class = models.CharField(max_length=100, blank=True, default="")
    error_status = models.IntegerField(null=True, blank=True)
    outcome_unknown = models.BooleanField(
        default=False,
        help_text="The last attempt may have been applied (timeout); reconcile first.",
    )
    coalesced = models.IntegerField(default=0, help_text="Earlier rows folded into this one.")
    source = models.CharField(
        max_length=100, blank=True, default="", help_text="The signal that made it."
    )
    session = models.ForeignKey(
        CustomerSession, null=True, blank=True, on_delete=models.SET_NULL, related_name="pushes"
    )
    profile = models.ForeignKey(
        CustomerProfile, null=True, blank=True, on_delete=models.SET_NULL, related_name="pushes"
    )
    claimed_by = models.CharField(max_length=255, blank=True, default="")
    claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    done_at = models.DateTimeField(null=True, blank=True)

    objects = PushQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [
            # Only unfinished rows are ever scanned by workers and the sweep.
            models.Index(
                fields=["key", "id"],
                name="talonone_push_open_key",
                condition=Q(state__in=["pending", "in_flight"]),
            ),
            models.Index(
                fields=["next_attempt_at"],
                name="talonone_push_due",
                condition=Q(state="pending"),
            ),
            models.Index(fields=["state", "updated_at"], name="talonone_push_state"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.operation} {self.key} ({self.state})"
