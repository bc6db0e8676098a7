"""The redirect's random bytes (referrals/entropy.py): never handed out twice, in threads or forked workers."""

from __future__ import annotations

import os
import re
import threading

from referrals import entropy
from referrals.redirect import _VISITOR_ID, new_visitor_id


def test_tokens_have_the_shape_of_the_secrets_modules_and_never_repeat():
    ids = [new_visitor_id() for _ in range(5000)]  # more than one block

    assert all(_VISITOR_ID.match(value) and len(value) == 22 for value in ids)
    assert len(set(ids)) == len(ids)
    assert re.fullmatch(r"[0-9a-f]{16}", entropy.token_hex(8))


def test_threads_never_share_bytes():
    drawn: list[list[bytes]] = [[] for _ in range(4)]

    def draw(index: int) -> None:
        drawn[index] = [entropy.random_bytes(16) for _ in range(1000)]

    threads = [threading.Thread(target=draw, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    everything = [value for values in drawn for value in values]
    assert len(set(everything)) == len(everything) == 4000


def test_a_forked_worker_never_hands_out_its_parents_next_bytes():
    entropy.random_bytes(16)  # the parent holds a block with bytes left in it
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        os.write(write_end, entropy.random_bytes(16))
        os._exit(0)
    os.close(write_end)
    from_child = os.read(read_end, 16)
    os.close(read_end)
    os.waitpid(child, 0)

    assert len(from_child) == 16
    assert from_child != entropy.random_bytes(16)
