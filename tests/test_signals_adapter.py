"""The signals' surface and the shop adapter: exact wire bodies from shop objects, and loading."""

import json
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ImproperlyConfigured
from django.dispatch import Signal

from django_talonone import signals
from django_talonone.adapters import AdapterError, ShopAdapter, get_adapter, load_adapter
from django_talonone.checks import check_adapter
from django_talonone.models import CartItem, CustomerSession
from tests.shop.models import Order, OrderLine

BASE = {"BASE_URL": "https://acme.europe-west1.talon.one", "API_KEY": "key-123"}


class CustomAdapter(ShopAdapter):
    """What a shop writes: its carts carry a token, its users a customer number."""

    def session_id(self, obj):
        return f"basket-{obj.token}"

    def profile_id_for_user(self, user):
        return f"C{user.number:06d}"

    def session_attributes(self, obj):
        return {"Channel": "web"}


class NotAnAdapter:
    pass


def user(pk=7, **extra):
    return SimpleNamespace(pk=pk, is_authenticated=True, **extra)


def line(sku, quantity, price, **extra):
    return SimpleNamespace(sku=sku, quantity=quantity, price=price, **extra)


def cart(**extra):
    values = {
        "id": 42,
        "customer": user(),
        "lines": [
            line("TSHIRT-M", 2, Decimal("19.99"), name="T-shirt", category="apparel"),
            line("MUG", 1, Decimal("8.00"), talonone_attributes={"color": "blue"}),
        ],
    }
    values.update(extra)
    return SimpleNamespace(**values)


# ---- signals ---------------------------------------------------------------------------------


def test_every_signal_the_issue_names_exists_and_is_listed():
    shop = {
        "cart_updated",
        "order_placed",
        "order_paid",
        "order_cancelled",
        "order_returned",
        "order_reopened",
        "customer_updated",
        "customer_deleted",
        "event_tracked",
    }
    app = {"effects_updated", "loyalty_updated", "push_failed"}
    assert set(signals.SHOP_SIGNALS) == shop
    assert set(signals.APP_SIGNALS) == app
    for name in shop | app:
        assert isinstance(getattr(signals, name), Signal)
        assert name in signals.__all__


def test_signal_kwargs_are_documented_next_to_each_signal():
    source = Path(signals.__file__).read_text()
    for kwarg in ("cart``", "order``", "lines``", "return_id``", "user``", "integration_id``"):
        assert kwarg in source
    for kwarg in ("event_type", "profile_id", "attributes", "session_id", "effects", "push"):
        assert f"``{kwarg}``" in source


# ---- session payloads ------------------------------------------------------------------------


def test_default_adapter_builds_the_exact_wire_body(settings):
    settings.TALONONE = {**BASE, "RESPONSE_CONTENT": ["customerSession", "loyalty"]}
    obj = cart(
        coupon_codes=["SPRING10"],
        referral_code="FRIEND-1",
        shipping_cost=Decimal("4.95"),
        talonone_attributes={"ShippingCountry": "DE"},
    )
    body = ShopAdapter().session_payload(obj)
    assert body == {
        "customerSession": {
            "profileId": "7",
            "cartItems": [
                {
                    "sku": "TSHIRT-M",
                    "quantity": 2,
                    "name": "T-shirt",
                    "price": 19.99,
                    "category": "apparel",
                },
                {"sku": "MUG", "quantity": 1, "price": 8, "attributes": {"color": "blue"}},
            ],
            "additionalCosts": {"shipping": {"price": 4.95}},
            "couponCodes": ["SPRING10"],
            "referralCode": "FRIEND-1",
            "attributes": {"ShippingCountry": "DE"},
        },
        "responseContent": ["customerSession", "loyalty"],
    }
    json.dumps(body)  # stored in a JSONField as is


def test_state_is_sent_only_when_asked_for():
    adapter = ShopAdapter()
    assert "state" not in adapter.session_payload(cart())["customerSession"]
    assert adapter.session_payload(cart(), state="closed")["customerSession"]["state"] == "closed"
    with pytest.raises(AdapterError, match="partially_returned"):
        adapter.session_payload(cart(), state="partially_returned")


def test_response_content_comes_from_settings_and_may_be_empty(settings):
    settings.TALONONE = {**BASE, "RESPONSE_CONTENT": []}
    assert "responseContent" not in ShopAdapter().session_payload(cart())


def test_coupon_codes_none_leaves_the_field_out_and_empty_list_drops_codes():
    adapter = ShopAdapter()
    assert "couponCodes" not in adapter.session_payload(cart())["customerSession"]
    assert adapter.coupon_codes(cart()) is None
    assert adapter.session_payload(cart(coupon_codes=[]))["customerSession"]["couponCodes"] == []
    # A shop with one coupon field: empty means "no coupon now", which must drop the old one.
    assert adapter.coupon_codes(cart(coupon_code="")) == []
    assert adapter.coupon_codes(cart(coupon_code="SPRING10")) == ["SPRING10"]
    assert adapter.coupon_codes(cart(coupon_codes="ONE")) == ["ONE"]


def test_referral_code_empty_string_is_sent_to_drop_it():
    adapter = ShopAdapter()
    assert "referralCode" not in adapter.session_payload(cart())["customerSession"]
    assert adapter.session_payload(cart(referral_code=""))["customerSession"]["referralCode"] == ""


@pytest.mark.parametrize("customer", [None, AnonymousUser()])
def test_guest_carts_have_no_profile_id(customer):
    body = ShopAdapter().session_payload(cart(customer=customer))
    assert "profileId" not in body["customerSession"]


def test_explicit_ids_on_the_objects_win():
    adapter = ShopAdapter()
    obj = cart(talonone_session_id="s-1", customer=user(talonone_profile_id="p-9"))
    assert adapter.session_id(obj) == "s-1"
    assert adapter.profile_id(obj) == "p-9"
    assert adapter.profile_id(cart(talonone_profile_id="direct")) == "direct"


def test_lines_may_be_a_method_and_products_carry_sku_and_name():
    product = SimpleNamespace(sku="BOOK-1", name="A book", category="books")
    obj = SimpleNamespace(id=1, items=lambda: [SimpleNamespace(product=product, quantity=3)])
    assert ShopAdapter().cart_items(obj) == [
        {"sku": "BOOK-1", "quantity": 3, "name": "A book", "category": "books"}
    ]


def test_a_line_without_sku_is_a_clear_error():
    obj = cart(lines=[SimpleNamespace(quantity=1, price=3)])
    with pytest.raises(AdapterError, match="no sku"):
        ShopAdapter().cart_items(obj)


def test_an_object_without_any_id_is_a_clear_error():
    with pytest.raises(AdapterError, match="talonone_session_id"):
        ShopAdapter().session_id(SimpleNamespace())


def test_additional_costs_explicit_map():
    obj = cart(talonone_additional_costs={"shipping": Decimal("5"), "wrap": {"price": 1.5}})
    assert ShopAdapter().additional_costs(obj) == {
        "shipping": {"price": Decimal("5")},
        "wrap": {"price": 1.5},
    }
    assert ShopAdapter().additional_costs(cart()) == {}


@pytest.mark.django_db
def test_django_models_work_with_the_default_adapter():
    customer = User.objects.create(username="ann")
    order = Order.objects.create(customer=customer, shipping_cost=Decimal("3.50"), coupon_code="X")
    second = OrderLine.objects.create(order=order, sku="B", quantity=1, price=Decimal("2.00"))
    first = OrderLine.objects.create(order=order, sku="A", quantity=2, price=Decimal("10.25"))
    adapter = ShopAdapter()
    assert adapter.session_id(order) == f"shop.order-{order.pk}"
    assert adapter.profile_id(order) == str(customer.pk)
    assert adapter.order_for_session(order) is order
    body = adapter.session_payload(order, state="closed")["customerSession"]
    # Unordered related managers are read in pk order, so positions stay stable.
    assert [item["sku"] for item in body["cartItems"]] == [second.sku, first.sku]
    assert body["cartItems"][1]["price"] == 10.25
    assert body["additionalCosts"] == {"shipping": {"price": 3.5}}
    assert body["couponCodes"] == ["X"]
    assert adapter.order_for_session(Order()) is None
    assert adapter.order_for_session(cart()) is None


@pytest.mark.django_db
def test_prefetched_lines_are_used_in_pk_order(django_assert_num_queries):
    order = Order.objects.create()
    second = OrderLine.objects.create(order=order, sku="B", quantity=1, price=Decimal("2.00"))
    first = OrderLine.objects.create(order=order, sku="A", quantity=2, price=Decimal("10.25"))
    order = Order.objects.prefetch_related("lines").get(pk=order.pk)
    with django_assert_num_queries(0):
        items = ShopAdapter().cart_items(order)
    assert [item["sku"] for item in items] == [second.sku, first.sku]


def test_profile_payload():
    class Audiences(ShopAdapter):
        def audiences_changes(self, user):
            return {"adds": [3], "deletes": []}

    person = user(talonone_attributes={"Name": "Ann", "SignedUp": Decimal("1")})
    assert ShopAdapter().profile_payload(user()) == {"attributes": {}}
    assert Audiences().profile_payload(person) == {
        "attributes": {"Name": "Ann", "SignedUp": 1},
        "audiencesChanges": {"adds": [3], "deletes": []},
    }


def test_profile_id_for_user_defaults_to_pk():
    assert ShopAdapter().profile_id_for_user(user(pk=12)) == "12"
    with pytest.raises(AdapterError):
        ShopAdapter().profile_id_for_user(SimpleNamespace(pk=None))


# ---- returns ---------------------------------------------------------------------------------


@pytest.fixture
def order(db):
    order = Order.objects.create(status="paid")
    OrderLine.objects.create(order=order, sku="A", quantity=2, price=Decimal("10"))
    OrderLine.objects.create(order=order, sku="B", quantity=1, price=Decimal("5"))
    OrderLine.objects.create(order=order, sku="C", quantity=4, price=Decimal("1"))
    return order


def test_returned_items_from_pairs_objects_dicts_and_whole_lines(order):
    a, b, c = order.lines.order_by("pk")
    adapter = ShopAdapter()
    assert adapter.returned_items(order, [(c, 3)]) == [{"position": 2, "quantity": 3, "sku": "C"}]
    assert adapter.returned_items(order, [SimpleNamespace(line=a, quantity=1)]) == [
        {"position": 0, "quantity": 1, "sku": "A"}
    ]
    assert adapter.returned_items(order, [b]) == [{"position": 1, "quantity": 1, "sku": "B"}]
    assert adapter.returned_items(order, [{"position": 0, "quantity": 2, "sku": "A"}]) == [
        {"position": 0, "quantity": 2, "sku": "A"}
    ]
    # A line re-read from the database still finds its position.
    assert adapter.returned_items(order, [(OrderLine.objects.get(pk=b.pk), 1)])[0]["position"] == 1
    # A return object with its own lines.
    assert adapter.returned_items(order, SimpleNamespace(lines=[(a, 1)]))[0]["position"] == 0
    with pytest.raises(AdapterError, match="at least 1"):
        adapter.returned_items(order, [(a, 0)])
    with pytest.raises(AdapterError, match="no lines"):
        adapter.returned_items(order, [])


def test_everything_returned_uses_the_mirror_when_it_has_the_cart(order):
    adapter = ShopAdapter()
    # No mirror yet: every line of the order, whole.
    assert adapter.returned_items(order, None) == [
        {"position": 0, "quantity": 2, "sku": "A"},
        {"position": 1, "quantity": 1, "sku": "B"},
        {"position": 2, "quantity": 4, "sku": "C"},
    ]
    session = CustomerSession.objects.create(integration_id=adapter.session_id(order))
    CartItem.objects.create(session=session, position=0, sku="A", quantity=2, returned_quantity=2)
    CartItem.objects.create(session=session, position=1, sku="B", quantity=1)
    CartItem.objects.create(
        session=session, position=2, sku="C", quantity=4, returned_quantity=1, remaining_quantity=3
    )
    assert adapter.returned_items(order, None) == [
        {"position": 1, "quantity": 1, "sku": "B"},
        {"position": 2, "quantity": 3, "sku": "C"},
    ]
    # A dict naming only the SKU gets its position from the mirror.
    assert adapter.returned_items(order, [{"sku": "C", "quantity": 1}]) == [
        {"position": 2, "quantity": 1, "sku": "C"}
    ]
    with pytest.raises(AdapterError, match="cannot find the cart position"):
        adapter.returned_items(order, [{"sku": "Z", "quantity": 1}])


def test_return_id_is_stable_and_moves_with_the_returned_quantities(order):
    adapter = ShopAdapter()
    a = order.lines.get(sku="A")
    first = adapter.return_id(order, [(a, 1)])
    assert first == adapter.return_id(order, [(a, 1)])
    assert first.startswith("return-") and len(first) < 255
    assert first != adapter.return_id(order, [(a, 2)])
    a.returned_quantity = 1
    a.save()
    # The same line and quantity returned again later is a new return.
    assert adapter.return_id(Order.objects.get(pk=order.pk), [(a, 1)]) != first
    assert adapter.return_id(order, a) == f"shop.orderline-{a.pk}"


# ---- loading the adapter ---------------------------------------------------------------------


def test_get_adapter_is_cached_and_follows_the_setting(settings):
    settings.TALONONE = BASE
    default = get_adapter()
    assert type(default) is ShopAdapter
    assert get_adapter() is default
    settings.TALONONE = {**BASE, "ADAPTER": "tests.test_signals_adapter.CustomAdapter"}
    custom = get_adapter()
    assert isinstance(custom, CustomAdapter)
    basket = SimpleNamespace(token="t1", user=SimpleNamespace(pk=1, number=42), lines=[])
    assert custom.session_id(basket) == "basket-t1"
    body = custom.session_payload(basket)["customerSession"]
    assert body["profileId"] == "C000042"
    assert body["attributes"] == {"Channel": "web"}
    settings.TALONONE = BASE
    assert type(get_adapter()) is ShopAdapter


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.nowhere.Adapter", "cannot be imported"),
        ("tests.test_signals_adapter.NotAnAdapter", "subclass"),
    ],
)
def test_a_wrong_adapter_path_is_a_clear_error(path, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        load_adapter(path)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("django_talonone.adapters.ShopAdapter", []),
        ("tests.test_signals_adapter.CustomAdapter", []),
        ("tests.nowhere.Adapter", ["talonone.E024"]),
        ("not a path", ["talonone.E024"]),
        ("tests.test_signals_adapter.NotAnAdapter", ["talonone.E025"]),
        ("tests.test_signals_adapter.BASE", ["talonone.E025"]),
    ],
)
def test_adapter_check(settings, path, expected):
    settings.TALONONE = {**BASE, "ADAPTER": path}
    found = check_adapter()
    assert [m.id for m in found] == expected
    for message in found:
        assert path in message.msg and "ShopAdapter" in message.hint


def test_adapter_check_ignores_a_missing_setting(settings):
    del settings.TALONONE
    assert check_adapter() == []


def test_attribute_values_become_json_types():
    import datetime
    import uuid

    from django.utils import timezone
    from django.utils.translation import gettext_lazy

    when = datetime.datetime(2026, 11, 23, 10, 0, tzinfo=datetime.timezone.utc)
    attributes = {
        "PlacedAt": when,
        "Birthday": datetime.date(1990, 5, 17),
        "Token": uuid.UUID(int=1),
        "Label": gettext_lazy("gift"),
        "Tags": ("a", "b"),
        "Weight": Decimal("1.50"),
    }
    body = ShopAdapter().session_payload(cart(talonone_attributes=attributes))
    assert body["customerSession"]["attributes"] == {
        "PlacedAt": "2026-11-23T10:00:00Z",
        "Birthday": "1990-05-17",
        "Token": "00000000-0000-0000-0000-000000000001",
        "Label": "gift",
        "Tags": ["a", "b"],
        "Weight": 1.5,
    }
    # A naive datetime is ambiguous: refused rather than guessed.
    with pytest.raises(ValueError, match="naive"):
        ShopAdapter().session_payload(
            cart(talonone_attributes={"At": timezone.now().replace(tzinfo=None)})
        )
