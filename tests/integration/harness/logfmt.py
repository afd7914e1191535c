"""Log line parsing: a strict logfmt tokenizer following README.md "Log
format", the JSON form of odd bytes, and num() for counts in either format."""

import json
import re


TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LEVELS = ("error", "warn", "info", "debug")


class LogfmtError(ValueError):
    pass


_KEY_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_HEX = set("0123456789abcdefABCDEF")
_SIMPLE_ESC = {'"': b'"', "\\": b"\\", "n": b"\n", "r": b"\r", "t": b"\t"}


def parse_logfmt(line):
    """Parse one logfmt line into a dict (insertion order = line order).

    Grammar (README): pairs `key=value` separated by one space; a value is
    bare (no space, `=`, `"`, nor empty) or double-quoted; in both, `\\\\`,
    `\\"`, `\\n`, `\\r`, `\\t` and `\\xHH` are escapes. \\xHH yields a raw
    byte; the value is decoded as UTF-8 with surrogateescape.
    Raises LogfmtError on anything else (duplicate keys, stray characters,
    raw control characters, unterminated quotes...).
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8")
    if line.endswith("\n"):
        line = line[:-1]
    out = {}
    i, n = 0, len(line)
    if n == 0:
        raise LogfmtError("empty line")
    while i < n:
        start = i
        while i < n and line[i] in _KEY_CHARS:
            i += 1
        key = line[start:i]
        if not key:
            raise LogfmtError("expected a key at column %d: %r" % (i, line))
        if i >= n or line[i] != "=":
            raise LogfmtError("expected '=' after key %r at column %d: %r" % (key, i, line))
        i += 1
        buf = bytearray()
        if i < n and line[i] == '"':
            i += 1
            while True:
                if i >= n:
                    raise LogfmtError("unterminated quoted value for %r: %r" % (key, line))
                c = line[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\":
                    i = _escape(line, i, buf, key)
                    continue
                if ord(c) < 0x20 or c == "\x7f":
                    raise LogfmtError("raw control character in value of %r" % key)
                buf += c.encode("utf-8", "surrogateescape")
                i += 1
        else:
            if i >= n or line[i] == " ":
                raise LogfmtError("empty unquoted value for %r: %r" % (key, line))
            while i < n and line[i] != " ":
                c = line[i]
                if c in '"=':
                    raise LogfmtError("%r in unquoted value of %r: %r" % (c, key, line))
                if c == "\\":
                    i = _escape(line, i, buf, key)
                    continue
                if ord(c) < 0x20 or c == "\x7f":
                    raise LogfmtError("raw control character in value of %r" % key)
                buf += c.encode("utf-8", "surrogateescape")
                i += 1
        if key in out:
            raise LogfmtError("duplicate key %r: %r" % (key, line))
        out[key] = bytes(buf).decode("utf-8", "surrogateescape")
        if i < n:
            if line[i] != " ":
                raise LogfmtError("expected a space at column %d: %r" % (i, line))
            i += 1
            if i >= n:
                raise LogfmtError("trailing space: %r" % line)
    return out


def _escape(line, i, buf, key):
    if i + 1 >= len(line):
        raise LogfmtError("dangling backslash in value of %r" % key)
    e = line[i + 1]
    if e in _SIMPLE_ESC:
        buf += _SIMPLE_ESC[e]
        return i + 2
    if e == "x":
        hh = line[i + 2:i + 4]
        if len(hh) == 2 and all(ch in _HEX for ch in hh):
            buf.append(int(hh, 16))
            return i + 4
    raise LogfmtError("bad escape \\%s in value of %r" % (e, key))


def json_log_form(raw):
    """What a JSON log line decodes to for the value bytes `raw` (README "Log
    format"): valid UTF-8, newline, CR, tab, quote and backslash come back as
    they were; other control bytes and bytes that are not UTF-8 come back as
    the four characters backslash, x, H, H. (In logfmt, parse_logfmt() gives
    back the bytes themselves.)"""
    out = []
    for ch in raw.decode("utf-8", "surrogateescape"):
        o = ord(ch)
        if 0xdc80 <= o <= 0xdcff:
            out.append("\\x%02x" % (o - 0xdc00))
        elif (o < 0x20 and ch not in "\n\r\t") or o == 0x7f:
            out.append("\\x%02x" % o)
        else:
            out.append(ch)
    return "".join(out)


def parse_line(line, fmt):
    """Parse a log line in 'logfmt' or 'json' format into a dict of strings/numbers."""
    if fmt == "json":
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ValueError("JSON log line is not an object: %r" % line)
        return obj
    return parse_logfmt(line)


def num(v):
    """A count or *_ms value as a number (logfmt gives strings, JSON numbers)."""
    if isinstance(v, bool):
        raise TypeError("boolean where a number was expected")
    if isinstance(v, (int, float)):
        return v
    return float(v) if any(c in v for c in ".eE") else int(v)
