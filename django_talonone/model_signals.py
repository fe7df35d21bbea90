"""Model-signal mode: the shop's order model's status changes send the lifecycle signals.

A shop that writes no code of its own sets ``TALONONE["ORDER_MODEL"]`` ("shop.Order"),
``ORDER_STATUS_FIELD`` ("status") and ``ORDER_STATUS_MAP`` (status value → session state). Every
save that moves an order into a status mapped to a different session state sends one signal:

==================  ================================================  ===================
new state           when                                              signal
==================  ================================================  ===================
open                order created, or from an unmapped status         ``order_placed``
open                from closed / partially_returned                  ``order_reopened``
closed              order created, or from open / an unmapped status  ``order_paid``
cancelled           from any other status (not on creation)           ``order_cancelled``
partially_returned  from closed, an unmapped or a returned status     ``order_returned``
==================  ================================================  ===================

``order_returned`` is sent with ``lines=None`` (everything not yet returned comes back). Saves that
leave the status alone send nothing, and so do moves Talon.One does not allow (out of
``cancelled``, or from a return back to ``closed``): those are logged. Nothing here ever raises into
the shop's ``save()``: problems are logged, and the signal is sent in a savepoint, so a receiver
that raises rolls back the signal's writes and the shop's transaction carries on.
"""

from __future__ import annotations

import logging
from typing import Any

from django.apps import apps
from django.core.signals import setting_changed
from django.db import models, transaction
from django.db.models.signals import post_save, pre_save
from django.dispatch import Signal

from . import signals
from .conf import settings

__all__ = ["SESSION_STATES", "connect", "connected_model", "disconnect", "transition_signal"]

logger = logging.getLogger(__name__)

#: The values ORDER_STATUS_MAP may map a status to.
SESSION_STATES = ("open", "closed", "cancelled", "partially_returned")

PRE_SAVE_UID = "django_talonone.model_signals.remember_status"
POST_SAVE_UID = "django_talonone.model_signals.send_transition"
# Set on the instance between pre_save and post_save; the leading underscore keeps it off forms.
BEFORE_ATTR = "_talonone_status_before"
CREATED = object()  # the row did not exist before this save
UNCHANGED = object()  # update_fields left the status out: it cannot have changed

_connected: list[type[models.Model]] = []


def connect() -> type[models.Model] | None:
    """Connect pre_save/post_save for ``TALONONE["ORDER_MODEL"]``; returns the model or None.

    Safe to call again (it reconnects after a settings change); an unknown model is logged here
    and reported by the system check talonone.E020.
    """
    disconnect()
    label = settings.ORDER_MODEL
    if not label:
        return None
    try:
        model = apps.get_model(str(label))
    except (LookupError, ValueError):
        logger.warning('TALONONE["ORDER_MODEL"] = %r is not an installed model', label)
        return None
    pre_save.connect(_remember_status, sender=model, dispatch_uid=PRE_SAVE_UID, weak=False)
    post_save.connect(_send_transition, sender=model, dispatch_uid=POST_SAVE_UID, weak=False)
    _connected.append(model)
    return model


def disconnect() -> None:
    """Undo :func:`connect`."""
    while _connected:
        model = _connected.pop()
        pre_save.disconnect(sender=model, dispatch_uid=PRE_SAVE_UID)
        post_save.disconnect(sender=model, dispatch_uid=POST_SAVE_UID)


def connected_model() -> type[models.Model] | None:
    """The order model model-signal mode currently watches, or None."""
    return _connected[-1] if _connected else None


def transition_signal(
    before: str | None, after: str | None, *, created: bool = False
) -> Signal | None:
    """The lifecycle signal for a move between session states (None = unmapped), or None."""
    if after is None:
        return None
    if created:
        return {"open": signals.order_placed, "closed": signals.order_paid}.get(after)
    if after == before and after != "partially_returned":
        return None
    if before == "cancelled":
        return _refuse(before, after)
    if after == "open":
        if before in ("closed", "partially_returned"):
            return signals.order_reopened
        return signals.order_placed
    if after == "closed":
        return _refuse(before, after) if before == "partially_returned" else signals.order_paid
    if after == "cancelled":
        return signals.order_cancelled
    if after == "partially_returned":
        return _refuse(before, after) if before == "open" else signals.order_returned
    return None


def _refuse(before: str | None, after: str) -> None:
    logger.warning(
        "model-signal mode: a session cannot move from %s to %s; no signal sent", before, after
    )
    return None


def _state_for(value: Any) -> str | None:
    mapping = settings.ORDER_STATUS_MAP or {}
    try:
        if value in mapping:
            return mapping[value]
    except TypeError:  # an unhashable status value
        return None
    return mapping.get(str(value)) if value is not None else None


def _status_attname(model: type[models.Model]) -> str:
    return model._meta.get_field(settings.ORDER_STATUS_FIELD).attname


def _remember_status(
    sender: type[models.Model],
    instance: models.Model,
    raw: bool = False,
    using: str | None = None,
    update_fields: Any = None,
    **kwargs: Any,
) -> None:
    if raw:  # loaddata: fixtures describe the past, they are not events
        return
    try:
        attname = _status_attname(sender)
        if update_fields is not None and not (
            {attname, settings.ORDER_STATUS_FIELD} & set(update_fields)
        ):
            instance.__dict__[BEFORE_ATTR] = UNCHANGED
            return
        before: Any = CREATED
        if instance.pk is not None:
            # The database, not the loaded instance, says what the status was: the instance may
            # be stale or have been built by hand.
            found = list(
                sender._base_manager.using(using)
                .filter(pk=instance.pk)
                .values_list(attname, flat=True)[:1]
            )
            if found:
                before = found[0]
        instance.__dict__[BEFORE_ATTR] = before
    except Exception:
        logger.exception("model-signal mode: could not read the previous status of %r", instance)


def _send_transition(
    sender: type[models.Model],
    instance: models.Model,
    created: bool = False,
    raw: bool = False,
    using: str | None = None,
    **kwargs: Any,
) -> None:
    before = instance.__dict__.pop(BEFORE_ATTR, UNCHANGED)
    if raw or before is UNCHANGED:
        return
    try:
        after = getattr(instance, _status_attname(sender))
        if before is not CREATED and before == after:
            return
        before_state = None if before is CREATED else _state_for(before)
        signal = transition_signal(before_state, _state_for(after), created=before is CREATED)
        if signal is None:
            return
        extra = {"lines": None, "return_id": None} if signal is signals.order_returned else {}
        # A savepoint: when a receiver raises, the signal's writes roll back, the shop's do not.
        with transaction.atomic(using=using):
            signal.send(sender=sender, order=instance, **extra)
    except Exception:
        logger.exception(
            "model-signal mode: sending the signal for %r (status %r) failed", instance, before
        )


def _reconnect(*, setting: str, **kwargs: Any) -> None:
    if setting == "TALONONE" and apps.ready:
        settings.reload()
        connect()


setting_changed.connect(_reconnect, dispatch_uid="django_talonone.model_signals.reconnect")
