"""Read the zoo's ``policy_kwargs`` strings without running them."""

import ast
from typing import Any


def _literal(node: ast.expr) -> Any:
    """
    The value of a literal expression, where ``dict(key=value)`` calls count as literal dicts.

    :param node: the expression's syntax tree
    :return: its value
    :raises ValueError: for anything else (names, attributes, other calls, operators)
    """
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        if any(keyword.arg is None for keyword in node.keywords):
            raise ValueError("'**' unpacking is not a literal")
        return {keyword.arg: _literal(keyword.value) for keyword in node.keywords}
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise ValueError("'**' unpacking is not a literal")
        return {_literal(key): _literal(value) for key, value in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    if isinstance(node, ast.List | ast.Tuple):
        values = [_literal(element) for element in node.elts]
        return values if isinstance(node, ast.List) else tuple(values)
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ValueError(f"{ast.unparse(node)} is not a literal") from None


def parse_kwargs_string(text: str) -> dict[str, Any]:
    """
    Parse a keyword-argument string as rl_zoo3's hyperparameter files write it (``"dict(n_flow_steps=4)"`` or
    ``"{'n_flow_steps': 4}"``) without evaluating it: only literal values (numbers, strings, booleans, None, and
    lists, tuples and dicts of them) are accepted.

    :param text: the string, e.g. a saved run's ``policy_kwargs``
    :return: the keyword arguments
    :raises ValueError: if the string holds anything other than a dict of literal values
    """
    try:
        value = _literal(ast.parse(text.strip(), mode="eval").body)
    except (SyntaxError, ValueError, TypeError) as error:
        raise ValueError(
            f"policy_kwargs {text!r} is not a dict of literal values ({error}): write it as dict(key=value, ...) with "
            "numbers, strings, booleans or lists as values; code such as nn.ReLU is not evaluated here"
        ) from None
    if not isinstance(value, dict):
        raise ValueError(f"policy_kwargs {text!r} is not a dict but {value!r}: write it as dict(key=value)")
    names = [key for key in value if not isinstance(key, str)]
    if names:
        raise ValueError(f"policy_kwargs {text!r} has keys {names} that are not names: write it as dict(key=value)")
    return value
