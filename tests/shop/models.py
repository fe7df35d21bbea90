"""The test shop's models, shaped the way the default ShopAdapter reads them."""

from decimal import Decimal

from django.conf import settings
from django.db import models


class Order(models.Model):
    class Status(models.TextChoices):
        CART = "cart"
        PLACED = "placed"
        PROCESSING = "processing"
        PAID = "paid"
        SHIPPED = "shipped"
        PARTIALLY_RETURNED = "partially_returned"
        RETURNED = "returned"
        CANCELLED = "cancelled"

    number = models.CharField(max_length=32, blank=True, default="")
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.CART)
    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    coupon_code = models.CharField(max_length=100, blank=True, default="")
    shipping_cost = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal("0"))
    note = models.CharField(max_length=200, blank=True, default="")

    def __str__(self) -> str:
        return f"order {self.number or self.pk} ({self.status})"


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    sku = models.CharField(max_length=64)
    name = models.CharField(max_length=200, blank=True, default="")
    quantity = models.PositiveIntegerField(default=1)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    category = models.CharField(max_length=100, blank=True, default="")
    returned_quantity = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku}"
