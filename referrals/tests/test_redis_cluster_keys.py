"""Issue 13, item 6: the redirect's Redis script touches keys of one hash slot, so it runs on Redis Cluster
(a multi-key script over two slots fails there with CROSSSLOT)."""

from __future__ import annotations

import re
from pathlib import Path

from redis.crc import key_slot

from referrals import click_buffer, hot_redis, link_cache


def test_the_link_cache_entry_and_the_click_stream_hash_to_one_slot():
    codes = ["abc123", "LiveCode_A1b2", "x" * 32, "ZZZZZZ"]

    slots = {key_slot(hot_redis.link_key(code).encode()) for code in codes}
    slots.add(key_slot(hot_redis.click_stream_key().encode()))

    assert len(slots) == 1
    assert hot_redis.HOT_PATH_HASH_TAG in hot_redis.link_key("abc123")


def test_every_multi_key_script_of_the_hot_path_is_called_with_hot_path_keys_only():
    source = Path(click_buffer.__file__).read_text() + Path(link_cache.__file__).read_text()
    calls = re.findall(r"run_script\([^)]*\[([^\]]*)\]", source)

    assert calls, "the redirect's script call"
    for keys in calls:
        for name in re.findall(r"[\w.]+\(\)|\w+_key\b", keys):
            assert name in ("code_key", "hot_redis.click_stream_key()"), name
