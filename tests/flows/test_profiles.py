"""Customer profiles against the sandbox: updates mirrored, deletions forgotten on both sides."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.forms.models import model_to_dict

from django_talonone import signals
from django_talonone.client import NotFoundError
from django_talonone.models import (
    AudienceMembership,
    CartItem,
    CustomerProfile,
    CustomerSession,
    Effect,
    LoyaltyBalance,
    LoyaltyMembership,
    Push,
)
from tests.flows.conftest import (
    DEMO_CUSTOMER,
    SEEDED_POINTS,
    FlowAdapter,
    make_order,
    pay,
    sent,
    session_id,
    shop_sends,
)

pytestmark = pytest.mark.django_db(transaction=True)


def update_profile(user: Any) -> None:
    shop_sends(signals.customer_updated, user)


def audiences(profile: CustomerProfile) -> list[tuple[int, str]]:
    return sorted(profile.audience_memberships.values_list("audience__talon_id", "audience__name"))


@pytest.fixture
def dora(customer: Any) -> Any:
    customer.first_name, customer.last_name = "Dora", "Demo"
    customer.save()
    return customer


def test_a_customer_update_mirrors_the_profile_its_audiences_and_points(sandbox, dora, received):
    update_profile(dora)

    (request,) = sent(sandbox, "update_customer_profile_v2")
    assert request["path"] == f"/v2/customer_profiles/{DEMO_CUSTOMER}"
    assert request["query"] == {"runRuleEngine": ["true"]}
    assert request["body"]["attributes"] == {"Name": "Dora Demo"}
    profile = CustomerProfile.objects.get(integration_id=DEMO_CUSTOMER)
    assert profile.user == dora
    # The attribute sent, and the one Talon.One already had.
    assert profile.attributes == {"Name": "Dora Demo", "Email": "demo@example.com"}
    assert audiences(profile) == [(1, "VIP customers")]
    balance = LoyaltyBalance.objects.get(profile=profile, program_id=1, subledger_id="")
    assert balance.active_points == SEEDED_POINTS
    assert LoyaltyMembership.objects.filter(profile=profile, program_id=1).exists()
    assert Push.objects.get().state == "done"
    (loyalty,) = received.of("loyalty_updated")
    assert (loyalty["profile"], loyalty["in_transaction"]) == (profile, False)


class NewsletterAdapter(FlowAdapter):
    """Customers who opted in join audience 2 and leave the VIP audience 1."""

    def audiences_changes(self, user: Any) -> dict[str, list[int]] | None:
        return {"adds": [2], "deletes": [1]}


def test_audience_changes_reach_talon_one_and_the_mirror(sandbox, dora, settings):
    order = make_order(dora)
    shop_sends(signals.cart_updated, order)
    vip = CustomerSession.objects.get(integration_id=session_id(order))
    assert vip.effects.filter(is_current=True, effect_type="customEffect").exists()
    settings.TALONONE = {**settings.TALONONE, "ADAPTER": f"{__name__}.NewsletterAdapter"}

    update_profile(dora)

    (request,) = sent(sandbox, "update_customer_profile_v2")
    assert request["body"]["audiencesChanges"] == {"adds": [2], "deletes": [1]}
    profile = CustomerProfile.objects.get(integration_id=DEMO_CUSTOMER)
    assert audiences(profile) == [(2, "Newsletter subscribers")]
    # Campaigns see it: the VIP gift wrap (audience 1) is gone from the next evaluation.
    shop_sends(signals.cart_updated, order)
    vip.refresh_from_db()
    assert not vip.effects.filter(is_current=True, effect_type="customEffect").exists()


def test_a_deleted_customer_is_forgotten_in_talon_one_and_in_the_mirror(sandbox, dora):
    order = make_order(dora)
    pay(order)
    update_profile(dora)
    profile = CustomerProfile.objects.get(integration_id=DEMO_CUSTOMER)
    assert profile.attributes["Email"] == "demo@example.com"
    assert LoyaltyBalance.objects.filter(profile=profile).exists()

    shop_sends(signals.customer_deleted, dora)

    (request,) = sent(sandbox, "delete_customer_data")
    assert (request["path"], request["status"]) == (f"/v1/customer_data/{DEMO_CUSTOMER}", 204)
    assert Push.objects.get(source="customer_deleted").state == "done"
    # Talon.One deleted the profile's attributes and its sessions.
    with sandbox.client() as client:
        inventory = client.get_customer_inventory(DEMO_CUSTOMER, profile=True)
        assert inventory["profile"]["attributes"] == {}
        with pytest.raises(NotFoundError):
            client.get_customer_session(session_id(order))
    # Locally: the profile, its audiences and points are gone...
    assert not CustomerProfile.objects.filter(integration_id=DEMO_CUSTOMER).exists()
    assert not AudienceMembership.objects.exists()
    assert not LoyaltyBalance.objects.exists()
    assert not LoyaltyMembership.objects.exists()
    # ...the order's session stays as an anonymous record...
    session = CustomerSession.objects.get(integration_id=session_id(order))
    assert (session.state, session.profile, session.profile_integration_id) == ("closed", None, "")
    assert session.order == order
    assert session.cart_items.count() == 5
    # ...and nothing names the customer or holds their data any more. (Outbox keys name the
    # profile by its integration id, which is why it must not be personal data itself.)
    stored = [*CustomerSession.objects.all(), *CartItem.objects.all(), *Effect.objects.all()]
    for row in stored:
        text = json.dumps(model_to_dict(row), default=str)
        for personal in ("Dora Demo", "demo@example.com", f'"{DEMO_CUSTOMER}"'):
            assert personal not in text, (row, personal)
    sent_before = Push.objects.exclude(source="customer_deleted")
    assert list(sent_before.values_list("payload", flat=True)) == [{}] * sent_before.count()
