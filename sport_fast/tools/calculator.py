"""Exact arithmetic on an expression string, by walking its syntax tree: never ``eval``.

Numbers are ``Fraction``s, so 0.1 + 0.2 is 3/10; the result is an int when integral, else a float.
Powers are bounded so that ``9**9**9`` cannot hang the caller.
"""
from __future__ import annotations

import ast
import math
import operator
from fractions import Fraction

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_FUNCTIONS = {"sqrt": lambda x: Fraction(math.sqrt(x)), "abs": abs, "round": lambda x, n=0: Fraction(round(x, int(n))),
              "min": min, "max": max}
_MAX_EXPONENT = 10_000


def calculator(expression: str) -> int | float:
    """evaluate an arithmetic expression exactly (+ - * / // % ** parentheses, sqrt, round, min, max, abs)

    Args:
        expression: e.g. "(12.50 + 3.25) * 4"; ^ is a power, × and ÷ are * and /
    """
    try:
        tree = ast.parse(expression.replace("^", "**").replace("×", "*").replace("÷", "/"), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"calculator: cannot parse {expression!r}: {err.msg}") from None
    value = _eval(tree.body)
    return int(value) if value.denominator == 1 else float(value)


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return Fraction(str(node.value)) if isinstance(node.value, float) else Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_eval(node.left), _eval(node.right))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _power(_eval(node.left), _eval(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        return Fraction(_FUNCTIONS[node.func.id](*[_eval(a) for a in node.args]))
    raise ValueError(f"calculator: unsupported expression {ast.unparse(node)!r}")


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator == 1 and abs(exponent) <= _MAX_EXPONENT:
        return base ** int(exponent)
    if abs(exponent) > _MAX_EXPONENT:
        raise ValueError(f"calculator: exponent {exponent} is too large")
    return Fraction(float(base) ** float(exponent))
