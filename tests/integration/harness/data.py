"""Transfer data: deterministic pseudo-random streams (det_chunks, det_bytes,
det_digest) and wait_stalled() to see a transfer stop moving."""

import hashlib
import time


def det_chunks(seed, total):
    """Deterministic pseudo-random bytes: SHAKE-256(seed || counter) blocks of 1 MiB
    (the stream depends only on seed and total)."""
    chunk = 1 << 20
    if isinstance(seed, str):
        seed = seed.encode()
    i = 0
    left = total
    while left > 0:
        n = min(chunk, left)
        yield hashlib.shake_256(seed + i.to_bytes(8, "big")).digest(n)
        left -= n
        i += 1


def det_bytes(seed, total):
    return b"".join(det_chunks(seed, total))


def det_digest(seed, total):
    h = hashlib.sha256()
    for c in det_chunks(seed, total):
        h.update(c)
    return h.hexdigest()


def wait_stalled(counter, total, quiet=0.3, timeout=20.0):
    """Poll a progress counter until it stops moving for `quiet` seconds (the
    sleeps prove that nothing moves any more); return its value."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while True:
        cur = counter()
        now = time.monotonic()
        if cur != last:
            last, since = cur, now
        elif now - since >= quiet or cur >= total:
            return cur
        assert now < deadline, "transfer never stalled (at %d bytes)" % cur
        time.sleep(0.05)
