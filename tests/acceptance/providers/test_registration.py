"""Provider registration, listing, info, deletion, result uploads and worker cleanup."""

from __future__ import annotations

import uuid

from tests.support.api import Api
from tests.support.names import ADMIN, ALICE, BOB, assert_problem, new_room, request_hash, unique
from tests.support.providers import FakeProvider, ProviderServer
from tests.support.realtime import following

PROVIDER_FIELDS = {
    "id",
    "room_id",
    "category",
    "name",
    "full_name",
    "schema",
    "worker_id",
    "created_at",
}


async def test_register_then_update_is_idempotent(api: Api[ProviderServer]) -> None:
    room, name = new_room(), unique()
    first = await api.put_provider(room, name, schema={"type": "object"})
    assert first.status_code == 201, first.text
    created = first.json()
    assert PROVIDER_FIELDS <= created.keys()
    assert created["full_name"] == f"{room}:files:{name}"
    assert (created["room_id"], created["category"], created["name"]) == (room, "files", name)
    assert created["schema"] == {"type": "object"}

    again = await api.put_provider(
        room,
        name,
        schema={"type": "string"},
        content_type="text/plain",
        worker_id=created["worker_id"],
    )
    assert again.status_code == 200, again.text
    updated = again.json()
    assert updated["id"] == created["id"]
    assert updated["created_at"] == created["created_at"]
    assert updated["schema"] == {"type": "string"}

    info = await api.request("GET", f"/rooms/{room}/providers/{created['full_name']}/info")
    assert info.status_code == 200
    assert info.json()["schema"] == {"type": "string"}
    assert info.json()["id"] == created["id"]


async def test_registering_another_users_provider_is_forbidden(api: Api[ProviderServer]) -> None:
    room, name = new_room(), unique()
    created = await api.register_provider(room, name, ALICE, schema={"v": 1})
    response = await api.put_provider(room, name, BOB, schema={"v": 2})
    assert_problem(response, 403, "forbidden")
    info = await api.request("GET", f"/rooms/{room}/providers/{created['full_name']}/info", BOB)
    assert info.json()["schema"] == {"v": 1}


async def test_global_providers_need_a_superuser(api: Api[ProviderServer]) -> None:
    name = unique()
    assert_problem(await api.put_provider("@global", name, ALICE), 403, "forbidden")
    response = await api.put_provider("@global", name, ADMIN)
    assert response.status_code == 201, response.text
    assert response.json()["full_name"] == f"@global:files:{name}"
    assert_problem(await api.put_provider("@internal", unique(), ALICE), 403, "forbidden")


async def test_category_allow_list(api: Api[ProviderServer]) -> None:
    response = await api.put_provider(new_room(), unique(), category="modifierz")
    assert_problem(response, 400, "invalid-category")
    response = await api.put_provider(new_room(), unique(), category="data")
    assert response.status_code == 201, response.text


async def test_invalid_room_and_unauthenticated(api: Api[ProviderServer]) -> None:
    assert_problem(await api.put_provider("bad:room", unique()), 400, "invalid-room-id")
    assert_problem(await api.put_provider(new_room(), unique(), None), 401)
    room = new_room()
    assert_problem(await api.request("GET", f"/rooms/{room}/providers", None), 401)


async def test_registering_with_another_users_worker_is_refused(api: Api[ProviderServer]) -> None:
    bobs_worker = await api.create_worker(BOB)
    response = await api.put_provider(new_room(), unique(), ALICE, worker_id=bobs_worker)
    assert_problem(response, 404, "worker-not-found")


async def test_listing_shows_the_room_and_global_providers(api: Api[ProviderServer]) -> None:
    room, other = new_room(), new_room()
    mine = [await api.register_provider(room, unique()) for _ in range(3)]
    elsewhere = await api.register_provider(other, unique())
    global_one = await api.register_provider("@global", unique(), ADMIN)

    response = await api.request("GET", f"/rooms/{room}/providers", params={"limit": "500"})
    assert response.status_code == 200, response.text
    page = response.json()
    names = {item["full_name"] for item in page["items"]}
    assert {p["full_name"] for p in mine} <= names
    assert global_one["full_name"] in names
    assert elsewhere["full_name"] not in names
    assert all(item["room_id"] in (room, "@global") for item in page["items"])
    assert page["total"] == len(page["items"])

    paged = await api.request(
        "GET", f"/rooms/{room}/providers", params={"limit": "2", "offset": "1"}
    )
    body = paged.json()
    assert (body["limit"], body["offset"], body["total"]) == (2, 1, page["total"])
    assert [item["id"] for item in body["items"]] == [item["id"] for item in page["items"][1:3]]


async def test_info_follows_room_visibility(api: Api[ProviderServer]) -> None:
    room, other = new_room(), new_room()
    local = await api.register_provider(room, unique())
    global_one = await api.register_provider("@global", unique(), ADMIN)
    for full_name in (local["full_name"], global_one["full_name"]):
        response = await api.request("GET", f"/rooms/{room}/providers/{full_name}/info", BOB)
        assert response.status_code == 200, response.text
        assert response.json()["full_name"] == full_name
    hidden = await api.request("GET", f"/rooms/{other}/providers/{local['full_name']}/info")
    assert_problem(hidden, 404, "provider-not-found")
    unknown = await api.request("GET", f"/rooms/{room}/providers/{room}:files:nope/info")
    assert_problem(unknown, 404, "provider-not-found")
    # A provider from another room is not readable either, with or without a cached result.
    read = await api.read(other, local["full_name"], {"a": "1"}, wait=0)
    assert_problem(read, 404, "provider-not-found")


async def test_register_and_delete_invalidate_the_room(api: Api[ProviderServer]) -> None:
    room = new_room()
    async with following(api.server, room) as frontend:
        provider = await api.register_provider(room, unique())
        await frontend.wait_for_count("providers_invalidate", 1)

        forbidden = await api.request("DELETE", f"/providers/{provider['id']}", BOB)
        assert_problem(forbidden, 403, "forbidden")
        deleted = await api.request("DELETE", f"/providers/{provider['id']}", ALICE)
        assert deleted.status_code == 204, deleted.text
        await frontend.wait_for_count("providers_invalidate", 2)
    assert frontend.named("providers_invalidate") == [{}, {}]
    info = await api.request("GET", f"/rooms/{room}/providers/{provider['full_name']}/info")
    assert_problem(info, 404, "provider-not-found")
    assert_problem(await api.read(room, provider["full_name"], wait=0), 404, "provider-not-found")
    again = await api.request("DELETE", f"/providers/{provider['id']}")
    assert_problem(again, 404, "provider-not-found")


async def test_a_superuser_may_delete_any_provider(api: Api[ProviderServer]) -> None:
    provider = await api.register_provider(new_room(), unique(), BOB)
    response = await api.request("DELETE", f"/providers/{provider['id']}", ADMIN)
    assert response.status_code == 204, response.text


async def test_refused_uploads_store_nothing(api: Api[ProviderServer]) -> None:
    room = new_room()
    provider = await api.register_provider(room, unique())
    params = {"file": "a.xyz"}
    _, digest = request_hash(params)

    unknown = await api.upload(str(uuid.uuid4()), digest, b"forged")
    assert_problem(unknown, 404, "provider-not-found")
    wrong_owner = await api.upload(provider["id"], digest, b"forged", BOB)
    assert_problem(wrong_owner, 403, "forbidden")
    bad_hash = await api.upload(provider["id"], "not-a-hash", b"x")
    assert_problem(bad_hash, 422)
    missing_hash = await api.request("POST", f"/providers/{provider['id']}/results", content=b"x")
    assert_problem(missing_hash, 422)
    if api.server.backend == "redis":
        assert api.server.redis_keys(f"*{digest}*") == []

    # The read misses (nothing was stored) and is answered by the real provider.
    async with FakeProvider(api.server, provider, answer=lambda _: b'"genuine"') as fake:
        response = await api.read(room, provider["full_name"], params, wait=10)
        assert response.status_code == 200, response.text
        assert response.content == b'"genuine"'
        assert len(fake.requests) == 1


async def test_deleting_a_worker_removes_its_providers(api: Api[ProviderServer]) -> None:
    room, other_room = new_room(), new_room()
    worker = await api.create_worker()
    served = [
        await api.register_provider(room, unique(), worker_id=worker),
        await api.register_provider(other_room, unique(), worker_id=worker),
    ]
    unrelated = await api.register_provider(room, unique())
    async with following(api.server, room) as frontend:
        response = await api.request("DELETE", f"/workers/{worker}")
        assert response.status_code == 204, response.text
        await frontend.wait_for_count("providers_invalidate")

    for provider in served:
        info = await api.request(
            "GET", f"/rooms/{provider['room_id']}/providers/{provider['full_name']}/info"
        )
        assert_problem(info, 404, "provider-not-found")
    still = await api.request("GET", f"/rooms/{room}/providers/{unrelated['full_name']}/info")
    assert still.status_code == 200
    cleaned = api.server.rooms_cleaned()
    assert room in cleaned and other_room in cleaned


async def test_deleting_another_users_worker_is_forbidden(api: Api[ProviderServer]) -> None:
    worker = await api.create_worker(ALICE)
    provider = await api.register_provider(new_room(), unique(), worker_id=worker)
    assert_problem(await api.request("DELETE", f"/workers/{worker}", BOB), 403, "forbidden")
    info = await api.request(
        "GET", f"/rooms/{provider['room_id']}/providers/{provider['full_name']}/info"
    )
    assert info.status_code == 200


async def test_a_dropped_provider_connection_removes_its_providers(
    api: Api[ProviderServer],
) -> None:
    room = new_room()
    provider = await api.register_provider(room, unique())
    async with following(api.server, room) as frontend:
        fake = await FakeProvider(api.server, provider).start()
        await fake.stop()
        await frontend.wait_for_count("providers_invalidate")
    info = await api.request("GET", f"/rooms/{room}/providers/{provider['full_name']}/info")
    assert_problem(info, 404, "provider-not-found")
    assert room in api.server.rooms_cleaned()


async def test_join_provider_room_checks_the_worker(api: Api[ProviderServer]) -> None:
    provider = await api.register_provider(new_room(), unique())
    intruder = FakeProvider(api.server, provider, token=BOB)
    try:
        await intruder.start()
    except AssertionError as exc:
        assert "error" in str(exc)
    else:
        raise AssertionError("join_provider_room accepted another user's worker")
    finally:
        await intruder.stop()
