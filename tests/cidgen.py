"""Valid CIDs of made-up content, for tests that need many distinct pins."""

import os

from multiformats import CID, multihash


def random_cid(version: int = 1) -> str:
    digest = multihash.digest(os.urandom(16), "sha2-256")
    if version == 0:
        return str(CID("base58btc", 0, "dag-pb", digest))
    return str(CID("base32", 1, "raw", digest))


def random_cids(count: int, version: int = 1) -> list[str]:
    return [random_cid(version) for _ in range(count)]
