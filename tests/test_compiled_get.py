"""``config.db.CompiledGet``: a fixed ``select_related`` read compiled once must give what the
ORM's ``get()`` gives, field for field and relation for relation, on both database tiers."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, models
from django.test.utils import CaptureQueriesContext

from accounts.models import ApiKey
from accounts.services import api_key_issue
from config.db import CompiledGet
from marketplace.models import SlotClass
from tests.bookings.plan_helpers import deck_class
from tests.factories import LanderPositionFactory, ResellerFactory, SlotClassFactory

pytestmark = pytest.mark.django_db


def _class_with_relations() -> CompiledGet[SlotClass]:
    return CompiledGet(
        lambda: SlotClass.objects.select_related("mission", "position", "payment_plan"), "pk", 1
    )


def columns(instance: models.Model | None) -> dict[str, Any] | None:
    if instance is None:
        return None
    return {
        field.attname: getattr(instance, field.attname) for field in instance._meta.concrete_fields
    }


def assert_same(compiled: SlotClass, orm: SlotClass) -> None:
    assert type(compiled) is SlotClass
    assert columns(compiled) == columns(orm)
    for relation in ("mission", "position", "payment_plan"):
        assert columns(getattr(compiled, relation)) == columns(getattr(orm, relation))


def test_a_class_with_every_relation_reads_as_the_orm_reads_it(
    django_assert_num_queries: Any,
) -> None:
    with_all = deck_class()
    with_all.position = LanderPositionFactory.create(lander=with_all.mission.lander)
    with_all.save()
    without = SlotClassFactory.create()  # no position, no payment plan: the outer joins are null
    reader = _class_with_relations()

    for slot_class in (with_all, without):
        orm = SlotClass.objects.select_related("mission", "position", "payment_plan").get(
            pk=slot_class.pk
        )
        with django_assert_num_queries(1):
            compiled = reader.get(slot_class.pk)
            # The relations come with it, as select_related's do: no query to reach them.
            assert compiled.mission.code == orm.mission.code
        assert_same(compiled, orm)
    assert reader.get(with_all.pk).position is not None
    assert reader.get(without.pk).payment_plan is None


def test_the_instance_is_saved_state_and_saves_like_one() -> None:
    slot_class = SlotClassFactory.create(name="Before")
    compiled = _class_with_relations().get(slot_class.pk)

    assert compiled._state.adding is False
    compiled.name = "After"
    compiled.save(update_fields=["name"])

    assert SlotClass.objects.get(pk=slot_class.pk).name == "After"
    assert SlotClass.objects.count() == 1  # an update, not a second row


def test_a_missing_row_raises_the_models_does_not_exist() -> None:
    SlotClassFactory.create()
    with pytest.raises(SlotClass.DoesNotExist):
        _class_with_relations().get(999_999)


def test_more_than_one_row_raises_multiple_objects_returned() -> None:
    first, second = SlotClassFactory.create(name="Twin"), SlotClassFactory.create(name="Twin")
    reader = CompiledGet(lambda: SlotClass.objects.select_related("mission"), "name", "x")

    with pytest.raises(SlotClass.MultipleObjectsReturned):
        reader.get("Twin")
    assert {first.pk, second.pk} == set(SlotClass.objects.values_list("pk", flat=True))


def test_a_string_lookup_reads_the_key_with_its_organisation() -> None:
    reseller = ResellerFactory.create()
    issued = api_key_issue(organisation=reseller, name="reads")
    reader = CompiledGet(lambda: ApiKey.objects.select_related("organisation"), "prefix", "x")

    with CaptureQueriesContext(connection) as queries:
        compiled = reader.get(issued.api_key.prefix)

    # As get() runs it: the model's default ordering (newest key first) is dropped.
    [query] = queries.captured_queries
    assert "ORDER BY" not in query["sql"]
    orm = ApiKey.objects.select_related("organisation").get(prefix=issued.api_key.prefix)
    assert columns(compiled) == columns(orm)
    assert columns(compiled.organisation) == columns(orm.organisation)
    with pytest.raises(ApiKey.DoesNotExist):
        reader.get("0" * 12)


def test_a_queryset_with_more_than_the_lookups_parameter_is_refused() -> None:
    slot_class = SlotClassFactory.create()
    reader = CompiledGet(lambda: SlotClass.objects.filter(capacity_g__gte=0), "pk", 1)

    with pytest.raises(TypeError, match="one parameter"):
        reader.get(slot_class.pk)


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
@pytest.mark.usefixtures("require_postgres")
def test_each_thread_reads_through_its_own_connection() -> None:
    """Django's connections are per thread, and a compiled read is tied to the connection
    it was compiled for: another thread compiles its own and reads the same row."""
    import threading

    from django.db import connection, connections

    ours = connections["default"]
    slot_class = SlotClassFactory.create()
    reader = _class_with_relations()
    here = reader.get(slot_class.pk)
    seen: list[Any] = []

    def read() -> None:
        try:
            seen.append((reader.get(slot_class.pk), reader._local.compiled.compiler.connection))
        finally:
            connection.close()

    thread = threading.Thread(target=read)
    thread.start()
    thread.join(timeout=30)

    [(there, its_connection)] = seen
    assert its_connection is not ours  # compiled again for the thread's own connection
    assert reader._local.compiled.compiler.connection is ours  # this thread's copy stays
    assert columns(there) == columns(here)
    assert columns(there.mission) == columns(here.mission)
