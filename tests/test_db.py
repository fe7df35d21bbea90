"""The statement runner the mirror and the outbox share (django_talonone._db): results reach
their callbacks in order, on PostgreSQL only once the pipeline has been answered, and an error
surfaces as Django's and takes the transaction down with it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models.signals import post_init
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_talonone import _db
from django_talonone.models import (
    Audience,
    AudienceMembership,
    CustomerProfile,
    CustomerSession,
    Effect,
    Push,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _count_sql() -> str:
    table = connection.ops.quote_name(CustomerProfile._meta.db_table)
    return f"SELECT COUNT(*) FROM {table} WHERE integration_id = %s"


def test_results_reach_their_callbacks_in_order_and_after_the_writes_before_them():
    seen: list[tuple[str, int]] = []
    with transaction.atomic(), _db.together():
        _db.execute(_count_sql(), ["p1"], lambda c: seen.append(("before", c.fetchone()[0])))
        _db.insert(CustomerProfile, [CustomerProfile(integration_id="p1")])
        _db.execute(_count_sql(), ["p1"], lambda c: seen.append(("after", c.fetchone()[0])))
        if _db.pipelined():
            assert seen == []  # only queued: nothing has been answered yet
    assert seen == [("before", 0), ("after", 1)]
    assert CustomerProfile.objects.filter(integration_id="p1").exists()


def test_returning_inserts_get_their_pks_when_the_block_ends():
    rows = [CustomerProfile(integration_id="a"), CustomerProfile(integration_id="b")]
    with transaction.atomic(), _db.together():
        _db.insert(CustomerProfile, rows, returning=True)
    assert [row.pk for row in rows] == list(
        CustomerProfile.objects.order_by("pk").values_list("pk", flat=True)
    )
    assert all(not row._state.adding for row in rows)


def test_an_error_is_djangos_and_the_transaction_is_rolled_back():
    CustomerProfile.objects.create(integration_id="taken")
    with pytest.raises(IntegrityError), transaction.atomic(), _db.together():
        _db.insert(CustomerProfile, [CustomerProfile(integration_id="new")])
        _db.insert(CustomerProfile, [CustomerProfile(integration_id="taken")])
    assert list(CustomerProfile.objects.values_list("integration_id", flat=True)) == ["taken"]
    # The connection is usable again afterwards.
    assert Push.objects.count() == 0


def test_nested_blocks_join_the_outer_one():
    seen: list[int] = []
    with transaction.atomic(), _db.together():
        with _db.together():
            _db.execute("SELECT 1", [], lambda c: seen.append(c.fetchone()[0]))
        if _db.pipelined():
            assert seen == []
    assert seen == [1]


@pytest.mark.postgres
def test_an_insert_that_must_answer_at_once_is_refused_in_a_pipeline():
    row = CustomerProfile(integration_id="x")
    with pytest.raises(RuntimeError), transaction.atomic(), _db.together():
        _db.insert(CustomerProfile, [row], conflict=["integration_id"], ignore=True)


@pytest.mark.postgres
def test_postgresql_with_psycopg3_sends_pipelines():
    assert _db.pipelined() is True


def _values_of(instance: Any) -> dict[str, Any]:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


def _effect_values(session: CustomerSession) -> dict[str, Any]:
    values = _values_of(Effect(session=session, campaign_id=7, props={"value": 1}, raw={"a": 1}))
    values["created_at"] = timezone.now()
    return values


def test_made_rows_are_what_the_model_makes_of_the_same_values():
    session = CustomerSession.objects.create(integration_id="s1")
    values = _effect_values(session)
    made, built = _db.make(Effect, values), Effect(**values)
    assert _values_of(made) == _values_of(built)
    assert (made._state.adding, made._state.db) == (True, None)
    made.save()  # a usable unsaved row
    assert Effect.objects.get(pk=made.pk).props == {"value": 1}


def _read_all(model: Any) -> list[Any]:
    read: list[Any] = []
    sql = _db.select_sql(model, "1 = 1", "", lock=False)
    _db.execute(sql, [], lambda cursor: read.extend(_db.instances(model)(cursor)))
    return read


def test_rows_read_are_what_the_orm_reads():
    session = CustomerSession.objects.create(integration_id="s1", raw={"x": [1, 2]})
    Effect.objects.create(session=session, campaign_id=3, props={"p": True}, raw={"r": "s"})
    for model in (CustomerSession, Effect):
        read = _read_all(model)
        orm = list(model.objects.all())
        assert [_values_of(r) for r in read] == [_values_of(r) for r in orm]
        assert all((r._state.adding, r._state.db) == (False, "default") for r in read)


def test_model_init_receivers_still_see_every_row():
    seen: list[Any] = []

    def receiver(sender: Any, instance: Any, **kwargs: Any) -> None:
        seen.append(instance)

    values = _effect_values(CustomerSession.objects.create(integration_id="s1"))
    post_init.connect(receiver, sender=Effect)
    try:
        made = _db.make(Effect, values)
        made.save()
        read = _read_all(Effect)
    finally:
        post_init.disconnect(receiver, sender=Effect)
    assert seen == [made, *read] and seen[0] is made and seen[1] is read[0]


def _written_back(rows: list[CustomerSession]) -> list[tuple[Any, ...]]:
    """Change what the mirror changes on these saved sessions and write them back."""
    for row in rows:
        row.total = Decimal("12.50")
        row.raw = {"customerSession": {"id": row.pk, "big": 2**40}, "note": "ünïcode"}
        row.coupon_codes = ["SPRING"]
    with transaction.atomic(), _db.together():
        _db.upsert(CustomerSession, rows, ["integration_id"])
    return [
        (r.total, r.raw, r.coupon_codes, r.created_at, r.updated_at)
        for r in CustomerSession.objects.filter(
            integration_id__in=[row.integration_id for row in rows]
        ).order_by("pk")
    ]


@pytest.mark.parametrize("count", [1, 3])
def test_upsert_writes_rows_back_keeping_created_at_and_stamping_updated_at(count: int):
    # One row goes as an UPDATE by its pk, several as one INSERT ... ON CONFLICT: the same rows.
    rows = [CustomerSession.objects.create(integration_id=f"s{i}") for i in range(count)]
    before = [(row.created_at, row.updated_at) for row in rows]
    found = _written_back(rows)
    assert len(found) == count
    for (total, raw, codes, created, updated), (was_created, was_updated) in zip(
        found, before, strict=True
    ):
        assert (total, codes) == (Decimal("12.50"), ["SPRING"])
        assert raw["customerSession"]["big"] == 2**40 and raw["note"] == "ünïcode"
        assert created == was_created and updated > was_updated


def test_a_single_row_gone_before_its_write_back_is_written_all_the_same():
    row = CustomerSession.objects.create(integration_id="gone")
    CustomerSession.objects.filter(pk=row.pk).delete()
    with CaptureQueriesContext(connection) as captured:
        found = _written_back([row])
    assert [(total, codes) for total, _raw, codes, _c, _u in found] == [
        (Decimal("12.50"), ["SPRING"])
    ]
    assert CustomerSession.objects.get().integration_id == "gone"
    writes = [q["sql"].split()[0] for q in captured if q["sql"].startswith(("UPDATE", "INSERT"))]
    assert writes[:2] == ["UPDATE", "INSERT"]  # tried by its pk first


def _read_one(model: Any, pk: int) -> Any:
    read: list[Any] = []
    sql = _db.select_sql(model, "id = %s", "", lock=False)
    _db.execute(sql, [pk], lambda cursor: read.extend(_db.instances(model)(cursor)))
    return read[0]


def test_a_row_read_here_is_written_back_without_the_columns_it_did_not_change():
    session = CustomerSession.objects.create(integration_id="s1", total=Decimal(5), state="open")
    row = _read_one(CustomerSession, session.pk)
    # Another writer changes a column this one leaves alone, between the read and the write.
    CustomerSession.objects.filter(pk=session.pk).update(state="closed")
    row.total = Decimal("7.50")
    row.raw["note"] = "changed in place"  # JSON columns are written whatever they look like
    with CaptureQueriesContext(connection) as captured, transaction.atomic(), _db.together():
        _db.upsert(CustomerSession, [row], ["integration_id"])
    (update,) = [q["sql"] for q in captured if q["sql"].startswith("UPDATE")]
    assert '"state"' not in update and '"total"' in update
    found = CustomerSession.objects.get(pk=session.pk)
    assert (found.state, found.total, found.raw) == ("closed", Decimal("7.50"), row.raw)
    assert found.updated_at > session.updated_at
    # Written, the row no longer claims to hold what was read: a second write sends every column.
    row.state = "open"
    _db.upsert(CustomerSession, [row], ["integration_id"])
    assert CustomerSession.objects.get(pk=session.pk).state == "open"


def test_a_row_read_here_and_left_as_it_was_costs_no_statement():
    profile = CustomerProfile.objects.create(integration_id="p1")
    audience = Audience.objects.create(talon_id=3, name="VIP")
    member = AudienceMembership.objects.create(profile=profile, audience=audience)
    row = _read_one(AudienceMembership, member.pk)
    with CaptureQueriesContext(connection) as captured:
        _db.upsert(AudienceMembership, [row], ["profile", "audience"])
    assert [q for q in captured if q["sql"].startswith(("UPDATE", "INSERT"))] == []
    row.synced_at = timezone.now()
    _db.upsert(AudienceMembership, [row], ["profile", "audience"])
    assert AudienceMembership.objects.get().synced_at == row.synced_at


def _in_flight(key: str) -> Push:
    return Push(key=key, operation="update_customer_session_v2", payload={}, state="in_flight")


@pytest.mark.postgres
def test_insert_then_commits_the_row_before_the_check_runs_in_one_round_trip():
    push = _in_flight("k1")
    xids = (
        "SELECT (SELECT xmin::text::bigint FROM talonone_push WHERE key = %s),"
        " txid_current() %% 4294967296"
    )
    with CaptureQueriesContext(connection) as captured:
        ((inserted_in, checked_in),) = _db.insert_then(Push, push, xids, ["k1"])
    assert inserted_in != checked_in  # the check ran in a transaction of its own
    assert push.pk == Push.objects.get(key="k1").pk and not push._state.adding
    server_binds = connection.settings_dict["OPTIONS"].get("server_side_binding")
    assert len(captured) == (2 if server_binds else 1)  # one round trip where it can be


@pytest.mark.postgres
@pytest.mark.parametrize("durable", [True, False])
def test_insert_then_leaves_no_warning_in_the_servers_log(durable):
    notices: list[str] = []
    connection.ensure_connection()
    connection.connection.add_notice_handler(lambda notice: notices.append(notice.message_primary))
    with CaptureQueriesContext(connection) as captured:
        _db.insert_then(Push, _in_flight("k1"), "SELECT 1", [], durable=durable)
    assert notices == []  # e.g. "there is no transaction in progress", once per cart page
    assert Push.objects.filter(key="k1").exists()
    one_query = len(captured) == 1
    if one_query:
        assert ("synchronous_commit" in captured[0]["sql"]) is not durable


def test_insert_then_in_the_callers_transaction_commits_nothing_of_it():
    with pytest.raises(RuntimeError), transaction.atomic():
        push = _in_flight("k2")
        rows = _db.insert_then(Push, push, "SELECT COUNT(*) FROM talonone_push", [])
        assert rows == [(1,)] and push.pk is not None
        raise RuntimeError("the shop's transaction rolls back")
    assert not Push.objects.exists()


def _seen_by_another_connection(integration_id: str) -> int:
    """How many profiles ``integration_id`` another connection sees (committed rows only)."""
    import psycopg

    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as other:
        table = CustomerProfile._meta.db_table
        sql = f'SELECT COUNT(*) FROM "{table}" WHERE integration_id = %s'
        return other.execute(sql, [integration_id]).fetchone()[0]


@pytest.mark.postgres
def test_the_commit_goes_out_with_the_last_block_of_an_own_transaction():
    committed: list[int] = []
    with CaptureQueriesContext(connection) as queries, _db.atomic_committed_with_last_block():
        transaction.on_commit(lambda: committed.append(_seen_by_another_connection("p1")))
        # As the mirror nests it: an atomic block without a savepoint of its own.
        with transaction.atomic(savepoint=False), _db.together(last=True):
            _db.insert(CustomerProfile, [CustomerProfile(integration_id="p1")])
        # Committed when the block ended, before the atomic block is left.
        assert _seen_by_another_connection("p1") == 1
        assert committed == []  # on_commit callbacks still wait for the end of the atomic block
        with pytest.raises(RuntimeError, match="committed"):
            _db.execute(_count_sql(), ["p1"])
    assert committed == [1]
    sent = [query["sql"] for query in queries.captured_queries]
    assert sent[sent.index("COMMIT") - 1].startswith('INSERT INTO "talonone_customerprofile"')
    assert connection.get_autocommit() and not connection.in_atomic_block
    assert CustomerProfile.objects.filter(integration_id="p1").count() == 1  # usable afterwards


@pytest.mark.postgres
def test_inside_the_callers_transaction_the_last_block_commits_nothing():
    with transaction.atomic():
        with _db.atomic_committed_with_last_block(), _db.together(last=True):
            _db.insert(CustomerProfile, [CustomerProfile(integration_id="p1")])
        assert _seen_by_another_connection("p1") == 0
        _db.execute(_count_sql(), ["p1"])  # the caller's transaction goes on
        transaction.set_rollback(True)
    assert not CustomerProfile.objects.exists()


@pytest.mark.postgres
def test_inside_a_savepoint_the_last_block_commits_nothing():
    with _db.atomic_committed_with_last_block():
        with transaction.atomic(), _db.together(last=True):  # a savepoint
            _db.insert(CustomerProfile, [CustomerProfile(integration_id="p1")])
        assert _seen_by_another_connection("p1") == 0
    assert _seen_by_another_connection("p1") == 1  # committed by the atomic block as usual


@pytest.mark.postgres
def test_a_failing_last_block_commits_nothing():
    CustomerProfile.objects.create(integration_id="taken")
    with (
        pytest.raises(IntegrityError),
        _db.atomic_committed_with_last_block(),
        _db.together(last=True),
    ):
        _db.insert(CustomerProfile, [CustomerProfile(integration_id="new")])
        _db.insert(CustomerProfile, [CustomerProfile(integration_id="taken")])
    assert _seen_by_another_connection("new") == 0
    assert list(CustomerProfile.objects.values_list("integration_id", flat=True)) == ["taken"]


def test_blocks_not_marked_last_leave_the_commit_to_the_atomic_block():
    with _db.atomic_committed_with_last_block():
        with _db.together():
            _db.insert(CustomerProfile, [CustomerProfile(integration_id="p1")])
        _db.execute(_count_sql(), ["p1"])  # still the same transaction: allowed
        transaction.set_rollback(True)
    assert not CustomerProfile.objects.exists()


@pytest.mark.postgres
@pytest.mark.parametrize("durable", [True, False])
def test_a_transaction_whose_loss_is_recoverable_commits_without_waiting_for_the_disk(durable):
    if not _db.pipelined():
        pytest.skip("pipelines need psycopg 3 with libpq 14 or later")
    with (
        CaptureQueriesContext(connection) as captured,
        _db.atomic_committed_with_last_block(durable=durable),
        _db.together(last=True),
    ):
        _db.insert(CustomerProfile, [CustomerProfile(integration_id="p1")])
    sent = [query["sql"] for query in captured.captured_queries]
    expected = ["COMMIT"] if durable else ["SET LOCAL synchronous_commit TO OFF", "COMMIT"]
    assert sent[-len(expected) - 1 : -1] == expected, sent  # then atomic's own (nothing left)
    assert _seen_by_another_connection("p1") == 1
    with (
        _db.atomic_committed_with_last_block(),  # a transaction of its own: waits again
        CaptureQueriesContext(connection) as again,
        _db.together(last=True),
    ):
        _db.insert(CustomerProfile, [CustomerProfile(integration_id="p2")])
    assert not any("synchronous_commit" in query["sql"] for query in again.captured_queries)


def test_the_backend_is_looked_up_once_and_again_when_the_databases_change():
    import warnings

    from django.core.signals import setting_changed

    assert _db._backend() == (connection.vendor, connection.Database)
    _db._backends[:] = [("elsewhere", None)]  # what a lookup made under other settings found
    assert _db._backend()[0] == "elsewhere"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Django warns that overriding DATABASES is risky
        setting_changed.send(sender=None, setting="DATABASES", value={}, enter=True)
    assert _db._backend() == (connection.vendor, connection.Database)
