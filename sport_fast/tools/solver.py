"""Exact solutions of equations and systems with sympy (GTA's Solver, without asking the agent for code).

Input is ordinary math: ``"x^2 - 5x + 6 = 0"``, ``["x + y = 10", "x - y = 2"]``; ``^`` is a power, a number
next to a name or a parenthesis multiplies (``2x``, ``3(x+1)``), multi-letter names stay whole (``price``
is one unknown, not p*r*i*c*e), and ``ln``, ``sqrt``, ``sin``... are functions. The text is checked before
sympy's parser (which evaluates it) sees it: names may not start with ``_`` and attributes are refused.

Solutions are sympy's ``solve`` (for periodic functions, the principal ones), given exactly as strings and
approximately as numbers (complex ones as strings like ``"0.5+0.866j"``). What sympy has no algorithm for,
inequalities and text that is not an equation are refused with a ValueError, which the agent sees.
sympy is imported on first use: it costs a second, and every sandbox run imports this module.
"""
from __future__ import annotations

import re

FUNCTIONS = ("sqrt", "cbrt", "exp", "log", "ln", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh",
             "tanh", "abs", "Abs", "floor", "ceiling", "factorial", "pi", "E", "I", "oo")
_ALLOWED = re.compile(r"^[A-Za-z0-9_+\-*/^().,=\s]*$")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def solver(equations: str | list[str], variables: str | list[str] | None = None) -> dict:
    """exact solutions of equations: {"solutions": [{var: exact}], "approx": [{var: number}]}

    Args:
        equations: "x^2 - 5x + 6 = 0", or several as a list or separated by ";" (no "=" means "= 0")
        variables: the unknowns to solve for, e.g. "x, y" (default: every name in the equations)
    """
    import sympy

    texts = _split(equations)
    exprs = [_equation(t) for t in texts]
    unknowns = _unknowns(variables, exprs)
    if not unknowns:   # "x + 1 = x" is a contradiction; "x = x" holds for every x
        if all(e == 0 for e in exprs):
            raise ValueError(f"solver: {'; '.join(texts)} holds for every value: there is nothing to solve")
        return {"solutions": [], "approx": []}
    try:
        found = sympy.solve(exprs, unknowns, dict=True)
    except NotImplementedError as err:
        raise ValueError(f"solver: sympy has no method for {'; '.join(texts)}: {str(err).splitlines()[-1]}") from None
    if not isinstance(found, list):
        raise ValueError(f"solver: sympy gave no list of solutions for {'; '.join(texts)}")
    solutions = [{str(k): str(v) for k, v in s.items()} for s in found]
    return {"solutions": solutions, "approx": [{str(k): _approx(v) for k, v in s.items()} for s in found]}


def _split(equations) -> list[str]:
    items = [equations] if isinstance(equations, str) else list(equations)
    texts = [t.strip() for item in items for t in re.split(r"[;\n]", str(item)) if t.strip()]
    if not texts:
        raise ValueError("solver: no equation given")
    return texts


def _equation(text: str):
    """``lhs - rhs`` of ``lhs = rhs`` (or ``==``); the text alone when it has no ``=``."""
    if re.search(r"[<>]|!=", text):
        raise ValueError(f"solver: inequalities are not supported: {text!r}")
    sides = re.split(r"==?", text)
    if len(sides) > 2 or not all(s.strip() for s in sides):
        raise ValueError(f"solver: {text!r} is not one equation (lhs = rhs)")
    parsed = [_parse(s) for s in sides]
    return parsed[0] - parsed[1] if len(parsed) == 2 else parsed[0]


def _parse(text: str):
    import sympy
    from sympy.parsing.sympy_parser import convert_xor, implicit_multiplication, parse_expr, standard_transformations

    if not _ALLOWED.match(text) or re.search(r"\.\s*[A-Za-z_]", text) or re.search(r"(^|[^A-Za-z0-9])_", text):
        raise ValueError(f"solver: {text!r} is not an algebraic expression")
    names = {n: sympy.Symbol(n) for n in _NAME.findall(text) if n not in FUNCTIONS}
    names.update({"ln": sympy.log, "abs": sympy.Abs})
    try:
        return parse_expr(text, local_dict=names,
                          transformations=standard_transformations + (implicit_multiplication, convert_xor))
    except (SyntaxError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"solver: cannot parse {text!r} ({type(err).__name__})") from None


def _unknowns(variables, exprs) -> list:
    import sympy

    free = sorted(set().union(*(e.free_symbols for e in exprs)), key=str)
    if variables is None:
        return free
    names = [v.strip() for v in variables.split(",")] if isinstance(variables, str) else [str(v) for v in variables]
    unknown = [n for n in names if n not in {str(s) for s in free}]
    if unknown:
        raise ValueError(f"solver: {', '.join(unknown)} do not appear in the equations")
    return [sympy.Symbol(n) for n in names]


def _approx(value):
    """A float for a real number; a string for a complex number or an expression in other unknowns."""
    if value.free_symbols:
        return str(value.evalf(6))
    number = complex(value.evalf(15))
    if abs(number.imag) <= 1e-12 * max(1.0, abs(number.real)):
        return float(number.real)
    return f"{number.real:.6g}{number.imag:+.6g}j"
