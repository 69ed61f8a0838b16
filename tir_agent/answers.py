"""Answer extraction: the last ``\\boxed{...}`` with balanced braces (REFERENCE.md §9)."""

from __future__ import annotations

_MARKERS = ("\\boxed", "\\fbox")


def extract_answer(text: str | None) -> str | None:
    """The content of the last balanced ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``.

    ``None`` when there is none, or when the last one is not closed.
    """
    if not text:
        return None
    start = max(text.rfind(marker) for marker in _MARKERS)
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    # Only whitespace may stand between the command and its opening brace.
    marker_end = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    if text[marker_end:brace].strip():
        return None
    depth = 0
    for i in range(brace, len(text)):
        char = text[i]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : i]
    return None
