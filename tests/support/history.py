"""bcast history, recovery and presence checks against running servers with
the ``lhistory`` service (and ``hticker``, the producer on channel 61):
test_history.py runs them on the local bus, test_bus.py on the shared buses.
``urls`` are the ``/lhistory`` URLs of the servers (one, or one per host)."""

import asyncio
import os
import signal

import cbor2
import websockets

from conftest import call


class Peer:
    """One LAppS client of ``lhistory``: answers and broadcasts apart."""

    def __init__(self, ws):
        self.ws, self.broadcasts, self._answers = ws, [], asyncio.Queue()
        self._arrived = asyncio.Event()  # set by each broadcast that arrives
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, url):
        return cls(await websockets.connect(url, max_size=None))

    async def _read(self):
        async for frame in self.ws:
            message = cbor2.loads(frame)
            if message.get("cid") == 0:
                await self._answers.put(message["result"])
            else:
                self.broadcasts.append(message)
                self._arrived.set()

    async def ask(self, method, *params):
        await self.ws.send(call(method, *params))
        return await asyncio.wait_for(self._answers.get(), 20)

    async def until(self, predicate, timeout=20):
        """Wait until ``predicate(broadcasts)`` holds (each frame that arrives is a chance)."""
        async def watch():
            while not predicate(self.broadcasts):
                self._arrived.clear()
                await self._arrived.wait()
        await asyncio.wait_for(watch(), timeout)

    async def close(self):
        await self.ws.close()
        self._reader.cancel()


def offsets(messages, cid=None):
    return [m["offset"] for m in messages if cid is None or m["cid"] == cid]


def contiguous(values):
    return values == list(range(values[0], values[0] + len(values))) if values else True


def sends_are_numbered_and_plain_channels_unchanged(urls):
    async def go():
        producer, subscriber = await Peer.connect(urls[0]), await Peer.connect(urls[-1])
        assert await producer.ask("create", 71, 5) == [True]
        assert await producer.ask("create", 72) == [True]
        await known(subscriber, 71)
        await known(subscriber, 72, history=False)
        assert await subscriber.ask("subscribe", 71) == [True]
        assert await subscriber.ask("subscribe", 72) == [True]
        assert await producer.ask("publish", 71, 3, "h") == [True, [1, 2, 3]]
        assert await producer.ask("publish", 72, 2, "p") == [True, [False, False]]
        # a sender's own offset and epoch keys are replaced on a history channel
        assert (await producer.ask("publish_as", 71, {"cid": 7, "message": [4], "offset": 99,
                                                       "epoch": "mine"}))[:2] == [True, 4]
        await subscriber.until(lambda got: len(got) == 6)
        history = [m for m in subscriber.broadcasts if m["message"][0] != "p" and "offset" in m]
        epoch = history[0]["epoch"]
        assert [(m["offset"], m["epoch"], m["message"]) for m in history] == [
            (1, epoch, [1, "h"]), (2, epoch, [2, "h"]), (3, epoch, [3, "h"]), (4, epoch, [4])]
        plain = [m for m in subscriber.broadcasts if "offset" not in m]
        assert plain == [{"cid": 7, "message": [1, "p"]}, {"cid": 7, "message": [2, "p"]}]
        held, position = await producer.ask("history", 71)
        assert [m["offset"] for m in held] == [1, 2, 3, 4] and held[0] == history[0]
        assert position == {"epoch": epoch, "offset": 4}
        assert [m["offset"] for m in (await producer.ask("history", 71, 1, 2))[0]] == [2, 3]
        assert await producer.ask("history", 72) == [
            False, "Broadcast with id 72 keeps no history"]
        for peer in (producer, subscriber):
            await peer.close()
        return epoch

    return asyncio.run(go())


def a_subscriber_recovers_what_it_missed_across_a_drop(urls, server):
    """Subscribed on ``urls[-1]`` while ``hticker`` sends on channel 61, a
    subscriber drops after offset K, misses about 300 sends, resubscribes
    with (E, K) and gets K+1, K+2… with no gap and no duplicate, past the
    position it was told (the switch to live messages)."""
    async def go():
        first = await Peer.connect(urls[-1])
        assert await first.ask("subscribe", 61) == [True]
        await first.until(lambda got: len(got) >= 20)
        await first.close()
        seen = [m for m in first.broadcasts if m["cid"] == 8]
        last = seen[-1]
        assert contiguous(offsets(seen)), offsets(seen)
        epoch, k = last["epoch"], last["offset"]
        server.wait_for(rf"hticker::offset {(k // 100 + 4) * 100}\b", timeout=30)
        again = await Peer.connect(urls[-1])
        ok, recovery = await again.ask("subscribe", 61, {"epoch": epoch, "offset": k})
        assert ok is True and recovery["recovered"] is True and recovery["epoch"] == epoch, \
            (k, epoch, recovery)
        top = recovery["offset"]
        assert top >= k + 300
        await again.until(lambda got: got and got[-1]["offset"] >= top + 100)
        await again.close()
        got = offsets(again.broadcasts, 8)
        assert got[0] == k + 1 and contiguous(got), (k, top, got[:5], got[-5:])
        assert {m["epoch"] for m in again.broadcasts} == {epoch}
        return epoch

    return asyncio.run(go())


def a_position_too_old_or_of_another_epoch_is_not_recovered(urls):
    async def go():
        producer, subscriber = await Peer.connect(urls[0]), await Peer.connect(urls[-1])
        assert await producer.ask("create", 73, 3) == [True]
        await known(subscriber, 73)
        await producer.ask("publish", 73, 10, "o")
        _, position = await producer.ask("history", 73)
        epoch = position["epoch"]
        assert position["offset"] == 10
        recovered = {"recovered": True, "epoch": epoch, "offset": 10}
        not_recovered = {**recovered, "recovered": False}
        assert await subscriber.ask("subscribe", 73, {"epoch": epoch, "offset": 2}) == [
            True, not_recovered]
        assert await subscriber.ask("subscribe", 73, {"epoch": "other", "offset": 9}) == [
            True, not_recovered]
        assert await subscriber.ask("subscribe", 73, {"epoch": epoch, "offset": 10}) == [
            True, recovered]
        assert await subscriber.ask("subscribe", 73, {"epoch": epoch, "offset": 7}) == [
            True, recovered]  # 8, 9 and 10 are held
        await producer.ask("publish", 73, 1, "new")
        await subscriber.until(lambda got: any(m["offset"] == 11 for m in got))
        assert offsets(subscriber.broadcasts) == [8, 9, 10, 11]
        for peer in (producer, subscriber):
            await peer.close()

    asyncio.run(go())


def presence_counts_and_lists_every_subscription(urls, processes=1):
    """Subscriptions made through ``urls`` (connections are opened until
    they are served by ``processes`` processes, at least four): all are
    counted, those given an info are listed, a leaving one is not."""
    async def go():
        peers, pids = [], set()
        while len(peers) < 4 or len(pids) < processes:
            assert len(peers) < 64, f"connections reached only {pids}"
            peers.append(await Peer.connect(urls[len(peers) % len(urls)]))
            pids.add((await peers[-1].ask("pid"))[0])
        assert await peers[0].ask("create", 74) == [True]
        for peer in peers:
            await known(peer, 74, history=False)
        infos = [None if i == 2 else f"user{i}" for i in range(len(peers))]
        for peer, info in zip(peers, infos):
            options = {} if info is None else {"info": info}
            assert await peer.ask("subscribe", 74, options) == [True]
        listed = sorted(info for info in infos if info)
        for peer in peers:  # (another process's subscriptions are told the bus meanwhile)
            present = await _presence_until(peer, 74, len(peers))
            assert sorted(present["members"]) == listed
        await peers[1].ask("unsubscribe", 74)
        await peers[3].close()
        present = await _presence_until(peers[0], 74, len(peers) - 2)
        assert sorted(present["members"]) == [i for i in listed if i not in ("user1", "user3")]
        assert await peers[0].ask("presence", 4242) == [
            False, "Broadcast with id 4242 is not found"]
        for peer in peers[:3] + peers[4:]:
            await peer.close()

    asyncio.run(go())


def presence_forgets_a_process_that_dies(urls):
    """Subscriptions in two processes (``urls``: connections are opened
    until both serve some); one process is killed (SIGKILL: it says
    nothing): its subscriptions leave the count, the others stay."""
    async def go():
        peers, pids = [], []
        while len(set(pids)) < 2:
            assert len(peers) < 64, f"connections reached only {set(pids)}"
            peers.append(await Peer.connect(urls[len(peers) % len(urls)]))
            pids.append((await peers[-1].ask("pid"))[0])
        assert await peers[0].ask("create", 79) == [True]
        for index, peer in enumerate(peers):
            await known(peer, 79, history=False)
            assert await peer.ask("subscribe", 79, {"info": f"user{index}"}) == [True]
        await _presence_until(peers[0], 79, len(peers))
        victim = pids[-1]
        os.kill(victim, signal.SIGKILL)
        survivors = [(i, peer) for i, (peer, pid) in enumerate(zip(peers, pids)) if pid != victim]
        present = await _presence_until(survivors[0][1], 79, len(survivors))
        assert sorted(present["members"]) == sorted(f"user{i}" for i, _ in survivors)
        for _, peer in survivors:
            await peer.close()

    asyncio.run(go())


async def known(peer, channel, history=True, timeout=20):
    """Once the process serving ``peer`` knows ``channel`` (made through
    another process: the bus tells each process of it after the create)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    unknown = [False, f"Broadcast with id {channel} is not found"]
    plain = [False, f"Broadcast with id {channel} keeps no history"]
    while True:
        answer = await peer.ask("history", channel, 0, 1)
        if answer != unknown and (answer != plain or not history) or loop.time() > deadline:
            assert answer != unknown and (answer != plain or not history), answer
            return
        await asyncio.sleep(0.02)


async def _presence_until(peer, channel, count, timeout=20):
    """Presence once it counts ``count`` (a closed connection leaves when its close is read)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        present = (await peer.ask("presence", channel))[0]
        if present["count"] == count or loop.time() > deadline:
            assert present["count"] == count, present
            return present
        await asyncio.sleep(0.02)


def history_stays_bounded_under_a_flood(urls, max_bytes):
    """5,000 sends of 1 KiB on a channel of 1,000 held, with the server's
    ``history_max_bytes`` at ``max_bytes``: what is held is the newest, in
    order, within both bounds."""
    async def go():
        producer = await Peer.connect(urls[0])
        assert await producer.ask("create", 75, 1000) == [True]
        for _ in range(5):
            ok, sent = await producer.ask("publish", 75, 1000, "f" * 1024)
            assert ok is True and len(sent) == 1000
        held, position = await producer.ask("history", 75, 0, 10000)
        await producer.close()
        return held, position

    held, position = asyncio.run(go())
    assert position["offset"] == 5000
    numbers = [m["offset"] for m in held]
    assert numbers[-1] == 5000 and contiguous(numbers)
    size = sum(len(cbor2.dumps(m)) for m in held)
    assert size <= max_bytes and len(held) <= 1000
    assert size > max_bytes - 2 * 1100  # (the oldest went, not more)


def bad_options_get_their_answer(urls):
    async def go():
        peer = await Peer.connect(urls[0])
        answers = [
            await peer.ask("create_with", 76, {"history_size": 0}),
            await peer.ask("create_with", 76, {"history_size": 1.5}),
            await peer.ask("create_with", 76, {"history_size": 10, "history_ttl": -1}),
            await peer.ask("create_with", 76, "ten"),
        ]
        assert await peer.ask("create", 76, 10) == [True]
        answers += [
            await peer.ask("subscribe", 76, {"epoch": "e"}),
            await peer.ask("subscribe", 76, {"epoch": 5, "offset": 1}),
            await peer.ask("subscribe", 76, {"info": "x" * 300}),
            await peer.ask("typos", 76),
            await peer.ask("history", 76, -1),
            await peer.ask("history", 76, 0, 0),
            await peer.ask("subscribe", 4243),
            await peer.ask("odd", 76),
        ]
        await peer.close()
        return answers

    assert asyncio.run(go()) == [
        [False, "bcast:create: history_size must be an integer from 1 to 1000000"],
        [False, "bcast:create: history_size must be an integer from 1 to 1000000"],
        [False, "bcast:create: history_ttl must be a number of seconds above 0, at most "
                "1000000000"],
        [False, "usage: bcast:create(channel_id [, {history_size = N, history_ttl = S}])"],
        [False, "bcast:subscribe: epoch and offset go together"],
        [False, "bcast:subscribe: epoch must be a string and offset an integer from 0"],
        [False, "bcast:subscribe: info must be a string of at most 256 bytes"],
        [[False, "bcast:create: unknown option history_sise"],
         [False, "bcast:subscribe: unknown option offest"]],
        [False, "usage: bcast:history(channel_id [, after_offset [, limit up to 10000]])"],
        [False, "usage: bcast:history(channel_id [, after_offset [, limit up to 10000]])"],
        [False, "Broadcast with id 4243 is not found"],
        [[[False, "usage: bcast:presence(channel_id)"],
         [False, "usage: bcast:history(channel_id [, after_offset [, limit up to 10000]])"],
         [False, "usage: bcast:subscribe(channel_id, handler [, {epoch = E, offset = K, "
                 "info = S}])"],
         [False, "usage: bcast:send(channel_id, nljson_object)"],
         [False, "usage: bcast:create(channel_id), an unsigned integer"],
         [False, "bcast:create: history_ttl must be a number of seconds above 0, at most "
                 "1000000000"],
         [True], [True], [True], [True]]],
    ]


def epoch_of(url, channel=61):
    async def go():
        peer = await Peer.connect(url)
        _, position = await peer.ask("history", channel, 0, 1)
        await peer.close()
        return position["epoch"]

    return asyncio.run(go())
