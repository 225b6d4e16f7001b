"""The error every layer raises for bad input: a stage, a command or the service cannot do its job
with what it was given. `reprokit.core.running` turns it into one error line and exit status 1."""

from __future__ import annotations


class StageError(RuntimeError):
    """A stage cannot produce its outputs from the inputs it was given."""


def yaml_problem(exc: Exception) -> str:
    """A YAML parser's error (PyYAML's or ruamel.yaml's) on one line: where and what, e.g.
    `line 3, column 1: expected ',' or ']', but got '<stream end>' (while parsing a flow
    sequence from line 2, column 9)`, not their several lines with a caret under each spot."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if problem and mark is not None:
        shown = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
        if context and start is not None:
            shown += f" ({context} from line {start.line + 1}, column {start.column + 1})"
        elif context:
            shown += f" ({context})"
    elif context and start is not None:
        shown = f"line {start.line + 1}, column {start.column + 1}: {context}"
    else:
        shown = str(exc)
    return " ".join(shown.split())
