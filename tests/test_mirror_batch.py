"""mirror_session_answers: many answers in a few statements, leaving the same rows as
mirror_session_answer applied answer after answer."""

import copy
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from django_talonone import mirror
from django_talonone.mirror import SessionAnswer
from django_talonone.models import (
    AudienceMembership,
    CartItem,
    CustomerProfile,
    CustomerSession,
    Effect,
    LoyaltyBalance,
    LoyaltyMembership,
)
from tests.shop.models import Order
from tests.test_mirror import CART, OPEN_EFFECTS, effect, session_answer

pytestmark = pytest.mark.django_db


def answer_for(sid, pid, **kwargs):
    """session_answer() for session ``sid`` of customer ``pid``."""
    found = copy.deepcopy(session_answer(**kwargs))
    found["customerSession"]["integrationId"] = sid
    found["customerSession"]["profileId"] = pid
    found["customerProfile"]["integrationId"] = pid
    return found


def snapshot():
    """Every mirrored row, by natural keys, without surrogate pks and local timestamps."""
    sessions = {}
    for s in CustomerSession.objects.select_related("profile").order_by("integration_id"):
        row = {
            f.attname: getattr(s, f.attname)
            for f in CustomerSession._meta.concrete_fields
            if f.attname not in ("id", "profile_id", "created_at", "updated_at", "synced_at")
        }
        row["profile"] = s.profile.integration_id if s.profile else None
        row["lines"] = [
            {
                f.attname: getattr(line, f.attname)
                for f in CartItem._meta.concrete_fields
                if f.attname not in ("id", "session_id")
            }
            for line in s.cart_items.order_by("position")
        ]
        row["effects"] = [
            {
                f.attname: getattr(e, f.attname)
                for f in Effect._meta.concrete_fields
                if f.attname not in ("id", "session_id", "created_at")
            }
            for e in s.effects.order_by("-is_current", "id")
        ]
        sessions[s.integration_id] = row
    profiles = {}
    for p in CustomerProfile.objects.order_by("integration_id"):
        row = {
            f.attname: getattr(p, f.attname)
            for f in CustomerProfile._meta.concrete_fields
            if f.attname not in ("id", "created_at", "updated_at", "synced_at")
        }
        row["audiences"] = sorted(
            AudienceMembership.objects.filter(profile=p).values_list(
                "audience__talon_id", "audience__name"
            )
        )
        row["memberships"] = sorted(
            LoyaltyMembership.objects.filter(profile=p).values_list("program_id", "joined", "raw")
        )
        row["balances"] = [
            {
                f.attname: getattr(b, f.attname)
                for f in LoyaltyBalance._meta.concrete_fields
                if f.attname not in ("id", "profile_id", "fetched_at")
            }
            for b in LoyaltyBalance.objects.filter(profile=p).order_by("program_id", "subledger_id")
        ]
        profiles[p.integration_id] = row
    return sessions, profiles


def wipe():
    CustomerSession.objects.all().delete()
    CustomerProfile.objects.all().delete()


def one_by_one(rounds):
    for items in rounds:
        for item in items:
            mirror.mirror_session_answer(
                item.session_id, item.answer, order=item.order, sent_payload=item.sent
            )


def batched(rounds):
    for items in rounds:
        with transaction.atomic():
            mirror.mirror_session_answers(items)


def same_rows_both_ways(rounds):
    one_by_one(rounds)
    expected = snapshot()
    wipe()
    batched(rounds)
    assert snapshot() == expected
    return expected


def test_new_sessions_and_profiles_then_changes_match_one_by_one():
    later = [effect(12, "setDiscountPerItem", {"name": "mug deal", "value": 4.5, "position": 0})]
    rounds = [
        # Three new sessions; two of them of one customer.
        [
            SessionAnswer("s-1", answer_for("s-1", "c-1")),
            SessionAnswer("s-2", answer_for("s-2", "c-1", update_count=1)),
            SessionAnswer("s-3", answer_for("s-3", "c-2")),
        ],
        # A changed cart and effects; the same effects with a new update count; a close.
        [
            SessionAnswer("s-1", answer_for("s-1", "c-1", effects=later, cart=[CART[1]])),
            SessionAnswer("s-2", answer_for("s-2", "c-1", update_count=9)),
            SessionAnswer("s-3", answer_for("s-3", "c-2", state="closed", effects=later)),
        ],
        # A closed session's effects change: the old set becomes history.
        [SessionAnswer("s-3", answer_for("s-3", "c-2", state="closed", effects=OPEN_EFFECTS))],
    ]
    sessions, profiles = same_rows_both_ways(rounds)
    # Open → closed retires the 8 open effects, closed → closed the 1 that followed.
    assert [e["is_current"] for e in sessions["s-3"]["effects"]].count(False) == 9
    assert sessions["s-2"]["effects"][0]["evaluation"] == 9
    assert sessions["s-1"]["discount_total"] == Decimal("4.5")
    assert [line["sku"] for line in sessions["s-1"]["lines"]] == ["MUG"]
    assert set(profiles) == {"c-1", "c-2"}
    assert len(profiles["c-1"]["balances"]) == 2


def test_loyalty_and_audience_changes_match_one_by_one():
    richer = answer_for("s-1", "c-1")
    ledger = richer["loyalty"]["programs"]["7"]["ledger"]
    ledger["currentBalance"] = 180.0
    ledger.pop("currentTier")
    richer["loyalty"]["programs"]["7"]["subLedgers"]["toys"] = {"currentBalance": 3.0}
    richer["loyalty"]["programs"]["9"] = {"id": 9, "ledger": {"currentBalance": 1.0}}
    richer["customerProfile"]["audienceMemberships"] = [{"id": 21, "name": "VIP gold"}]
    rounds = [
        [SessionAnswer("s-1", answer_for("s-1", "c-1"))],
        [SessionAnswer("s-1", richer), SessionAnswer("s-2", answer_for("s-2", "c-3"))],
    ]
    _sessions, profiles = same_rows_both_ways(rounds)
    assert [(b["program_id"], b["subledger_id"]) for b in profiles["c-1"]["balances"]] == [
        (7, ""),
        (7, "beauty"),
        (7, "toys"),
        (9, ""),
    ]
    assert profiles["c-1"]["balances"][0]["active_points"] == Decimal("180")
    assert profiles["c-1"]["balances"][0]["tier_name"] == "Silver"  # no tier: kept
    # 22 left; 21 stays (its name is shared: the last answer that named it, c-3's, wins).
    assert profiles["c-1"]["audiences"] == [(21, "VIP")]


def test_answers_without_the_session_and_with_an_order_match_one_by_one():
    owner = User.objects.create(username="ann")
    order = Order.objects.create(number="1001", customer=owner)
    pid = str(owner.pk)  # the default adapter's profile id of a user
    sent = {
        "customerSession": {
            "profileId": pid,
            "cartItems": [{"sku": "A", "quantity": 2, "price": 3.5}],
            "couponCodes": ["X"],
            "attributes": {"a": 1},
        }
    }
    bare = {"effects": [effect(11, "setDiscount", {"name": "d", "value": 1.5})]}
    rounds = [
        [SessionAnswer("s-1", answer_for("s-1", pid), order=order)],
        [
            SessionAnswer("s-1", bare, sent=sent, order=order),
            SessionAnswer("s-2", {"effects": []}, sent={"customerSession": {"state": "open"}}),
        ],
    ]
    sessions, _profiles = same_rows_both_ways(rounds)
    assert sessions["s-1"]["order_id"] == str(order.pk)
    assert sessions["s-1"]["coupon_codes"] == ["X"]
    assert sessions["s-2"]["profile"] is None
    assert CustomerProfile.objects.get(integration_id=pid).user == owner


def test_a_batch_costs_the_same_statements_for_one_session_or_fifty():
    def counted(n, count):
        items = [
            SessionAnswer(f"s-{i}", answer_for(f"s-{i}", f"c-{i}", update_count=count))
            for i in range(n)
        ]
        with CaptureQueriesContext(connection) as queries, transaction.atomic():
            mirror.mirror_session_answers(items)
        return len(queries)

    # New sessions, profiles, memberships and balances: inserted together too.
    new_one = counted(1, 1)
    assert counted(50, 1) <= new_one + 10  # SQLite: wide rows go in a few parts (see below)
    assert CustomerSession.objects.count() == 50 and LoyaltyBalance.objects.count() == 100
    later = [effect(12, "setDiscountPerItem", {"name": "m", "value": 1, "position": 0})]

    def changed(n):
        items = [
            SessionAnswer(
                f"s-{i}",
                answer_for(f"s-{i}", f"c-{i}", update_count=2 + n, effects=later, cart=[CART[0]]),
            )
            for i in range(n)
        ]
        with CaptureQueriesContext(connection) as queries, transaction.atomic():
            mirror.mirror_session_answers(items)
        return len(queries)

    # SQLite takes at most 999 parameters a statement: wide rows are inserted in a few parts.
    one, fifty = changed(1), changed(50)
    assert one <= 14 and fifty <= one + 4


def test_the_signals_and_returned_sessions_match(django_capture_on_commit_callbacks):
    from django_talonone import signals

    seen = []

    def on_effects(sender, session, effects, **kwargs):
        seen.append(
            (session.integration_id, [e.effect_type for e in effects], all(e.pk for e in effects))
        )

    signals.effects_updated.connect(on_effects, dispatch_uid="batch-test")
    try:
        with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
            found = mirror.mirror_session_answers(
                [
                    SessionAnswer("s-1", answer_for("s-1", "c-1")),
                    SessionAnswer("s-2", answer_for("s-2", "c-1", effects=[])),
                ]
            )
    finally:
        signals.effects_updated.disconnect(dispatch_uid="batch-test")
    assert [s.integration_id for s in found] == ["s-1", "s-2"]
    assert all(s.pk and s.profile.pk for s in found)
    assert found[0].created_at == CustomerSession.objects.get(pk=found[0].pk).created_at
    assert seen == [
        ("s-1", [e["effectType"] for e in OPEN_EFFECTS], True),
        ("s-2", [], True),
    ]


def test_bad_calls_are_refused():
    with pytest.raises(ValueError, match="one answer per session"):
        mirror.mirror_session_answers(
            [SessionAnswer("s-1", {"effects": []}), SessionAnswer("s-1", {"effects": []})]
        )
    assert mirror.mirror_session_answers([]) == []
