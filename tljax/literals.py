"""Values written as text: config overrides (`key=value`), a model spec's architecture options
(`vit:heads=12`), a sweep's overrides and a pp op's arguments (`randaug(2, 10)`). One parser,
so the same text means the same value everywhere."""
import ast

from tljax.errors import UserError


def value(text):
    """A Python literal ("3", "1e-4", "(1, 2)", "None", "'x'"), else the text itself."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text.strip()


def assignment(text, what="override"):
    """"key=value" -> (key, value text); anything else is one UserError."""
    key, sep, rest = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"{what} {text!r} is not of the form key=value")
    return key.strip(), rest


def options(text):
    """"a=1,b=x" -> {"a": 1, "b": "x"} (comma-separated assignments)."""
    return dict((key, value(rest)) for key, rest in
                (assignment(item, "option") for item in filter(None, text.split(","))))


def arguments(text, where):
    """"2, 10" -> (2, 10): the literal arguments of a call written as text."""
    if not text.strip():
        return ()
    try:
        parsed = ast.literal_eval(f"({text},)")
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise UserError(f"{where}: arguments ({text}) must be numbers or quoted strings") from None
    return parsed
