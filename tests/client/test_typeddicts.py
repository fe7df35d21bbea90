"""The TypedDicts of django_talonone.client.types: one per reference model, required keys right."""

from __future__ import annotations

import re
import typing

import pytest

from django_talonone.client import types as t

from .test_operations import SHARED

# Written by hand from the reference's field tables ("required" column).
EXPECTED: dict[str, tuple[set[str], set[str]]] = {
    "CustomerSessionV2": (
        {
            "id", "created", "integrationId", "applicationId", "firstSession", "updateCount",
            "total", "cartItemTotal", "additionalCostTotal", "updated",
        },
        {
            "profileId", "storeIntegrationId", "evaluableCampaignIds", "couponCodes",
            "referralCode", "loyaltyCards", "state", "cartItems", "additionalCosts",
            "identifiers", "attributes",
        },
    ),
    "Effect": (
        {"campaignId", "rulesetId", "ruleIndex", "ruleName", "effectType"},
        {
            "triggeredByCoupon", "triggeredForCatalogItem", "conditionIndex",
            "evaluationGroupID", "evaluationGroupMode", "campaignRevisionId",
            "campaignRevisionVersionId", "selectedPriceType", "selectedPrice",
            "adjustmentReferenceId", "props",
        },
    ),
    "IntegrationStateV2": (
        {"effects", "createdCoupons", "createdReferrals"},
        {
            "customerSession", "customerProfile", "event", "loyalty", "referral", "coupons",
            "triggeredCampaigns", "ruleFailureReasons", "awardedGiveaways", "return",
            "previousReturns",
        },
    ),
    "CartItem": (
        {"sku", "quantity"},
        {
            "name", "returnedQuantity", "remainingQuantity", "price", "category", "product",
            "weight", "height", "width", "length", "position", "attributes", "additionalCosts",
            "catalogItemID", "selectedPriceType", "adjustmentReferenceId",
            "adjustmentEffectiveFrom", "adjustmentEffectiveUntil", "prices",
        },
    ),
    "ReturnIntegrationRequest": ({"return"}, {"responseContent"}),
    "NewReturn": ({"returnedCartItems"}, set()),
    "IntegrationRequest": ({"customerSession"}, {"responseContent"}),
}  # fmt: skip


def is_typeddict(obj: object) -> bool:
    return isinstance(obj, type) and hasattr(obj, "__required_keys__")


@pytest.mark.parametrize("name", list(EXPECTED))
def test_required_and_optional_keys_match_the_reference(name: str) -> None:
    model = getattr(t, name)
    assert is_typeddict(model)
    required, optional = EXPECTED[name]
    assert set(model.__required_keys__) == required
    assert set(model.__optional_keys__) == optional


def test_the_return_key_is_usable() -> None:
    # "return" is a Python keyword: the model still has it, as a required key.
    body: t.ReturnIntegrationRequest = {"return": {"returnedCartItems": [{"position": 0}]}}
    assert "return" in t.ReturnIntegrationRequest.__required_keys__
    assert body["return"]["returnedCartItems"][0]["position"] == 0


def test_nested_types_resolve() -> None:
    hints = typing.get_type_hints(t.IntegrationStateV2)
    assert hints["effects"] == list[t.Effect]
    assert hints["customerSession"] is t.CustomerSessionV2
    assert typing.get_type_hints(t.CustomerSessionV2)["cartItems"] == list[t.CartItem]
    assert typing.get_type_hints(t.ReturnIntegrationRequest)["return"] is t.NewReturn


@pytest.mark.parametrize("name", t.__all__)
def test_every_type_hint_resolves(name: str) -> None:
    model = getattr(t, name)
    assert is_typeddict(model)
    typing.get_type_hints(model)  # no dangling forward reference


def test_operation_signatures_name_existing_types() -> None:
    from django_talonone.client.operations import OperationsMixin

    for name, func in vars(OperationsMixin).items():
        if name.startswith("_") or not callable(func):
            continue
        # operations.py imports the types for type checkers only; resolve them here.
        hints = typing.get_type_hints(func, {**func.__globals__, "t": t})
        assert "return" in hints, name


# Models on which the reference and the newer OpenAPI files disagree; the generator follows
# the OpenAPI files for these (checked below).
OPENAPI_WINS = {"BestPriorPriceRequest"}


@pytest.mark.skipif(SHARED is None, reason="the shared API reference is not checked out")
def test_best_prior_price_request_follows_the_openapi_file() -> None:
    import yaml

    assert SHARED is not None
    doc = yaml.safe_load(
        (SHARED / "reference/openapi/integration-api/paths/v1-best_prior_price.yaml").read_text()
    )
    schema = doc["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(t.BestPriorPriceRequest.__required_keys__) == set(schema["required"])


@pytest.mark.skipif(SHARED is None, reason="the shared API reference is not checked out")
def test_one_typeddict_per_reference_model_with_its_required_keys() -> None:
    assert SHARED is not None
    text = (SHARED / "reference" / "talonone-integration-api.md").read_text()
    models = text.split("## Models", 1)[1]
    seen = 0
    for section in re.split(r"^### ", models, flags=re.M)[1:]:
        name, _, rest = section.partition("\n")
        name = name.strip()
        required, optional = set(), set()
        for line in rest.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 3 or cells[0] in ("field", "") or set(cells[0]) <= {"-"}:
                continue
            (required if cells[2] == "yes" else optional).add(cells[0])
        model = getattr(t, name, None)
        assert is_typeddict(model), f"no TypedDict for {name}"
        if name in OPENAPI_WINS:
            continue
        assert set(model.__required_keys__) == required, name
        assert set(model.__optional_keys__) == optional, name
        seen += 1
    assert seen > 100
