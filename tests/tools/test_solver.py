"""solver against solutions known by construction (roots multiplied out, systems built from a chosen
solution), and every returned solution substituted back into the equations."""
import numpy as np
import pytest
import sympy

from sport_fast.tools.solver import solver


def substitutes(equations: list[str], solution: dict) -> bool:
    """Each equation lhs = rhs holds exactly at the solution (parsed independently with sympify)."""
    values = {sympy.Symbol(k): sympy.sympify(v) for k, v in solution.items()}
    for eq in equations:
        lhs, rhs = eq.replace("^", "**").split("=")
        if sympy.simplify((sympy.sympify(lhs) - sympy.sympify(rhs)).subs(values)) != 0:
            return False
    return True


def exact(result) -> list[dict]:
    return sorted(({k: sympy.sympify(v) for k, v in s.items()} for s in result["solutions"]), key=str)


@pytest.mark.parametrize("roots", [(2, 3), (-4, 1, 7), (0, -5, -5, 2), (1, 2, 3, 4, -6)])
def test_polynomial_roots_multiplied_out_are_found_exactly(roots):
    x = sympy.Symbol("x")
    poly = str(sympy.expand(sympy.prod(x - r for r in roots))).replace("**", "^")
    got = solver(f"{poly} = 0")
    assert sorted(int(s["x"]) for s in got["solutions"]) == sorted(set(roots)), (poly, got)
    assert [a["x"] for a in got["approx"]] == [float(s["x"]) for s in got["solutions"]]


@pytest.mark.parametrize("seed", range(4))
def test_linear_systems_built_from_a_solution_give_it_back(seed):
    rng = np.random.default_rng(seed)
    names = ["x", "y", "z"]
    while True:
        a = rng.integers(-6, 7, (3, 3))
        if round(np.linalg.det(a)) != 0:
            break
    want = rng.integers(-9, 10, 3)
    b = a @ want
    equations = [" + ".join(f"{c}*{n}" for c, n in zip(row, names)) + f" = {rhs}" for row, rhs in zip(a, b)]
    got = solver(equations)
    assert got["solutions"] == [{n: str(v) for n, v in zip(names, want)}], (equations, got)


@pytest.mark.parametrize("equations, want, check", [
    ("x^2 = 2", [{"x": "-sqrt(2)"}, {"x": "sqrt(2)"}], ["x**2 = 2"]),
    ("x^2 + 1 = 0", [{"x": "-I"}, {"x": "I"}], ["x**2 + 1 = 0"]),
    ("2x + 3(x - 1) = 12", [{"x": "3"}], ["2*x + 3*(x - 1) = 12"]),          # implicit products
    ("price * 3 = 12", [{"price": "4"}], ["price*3 = 12"]),                 # a multi-letter name is one unknown
    ("x + y = 10; x - y = 2", [{"x": "6", "y": "4"}], ["x + y = 10", "x - y = 2"]),   # a system in one string
    ("ln(x) = 2", [{"x": "exp(2)"}], ["log(x) = 2"]),
    ("x^2 - 2x + 1", [{"x": "1"}], ["x**2 - 2*x + 1 = 0"]),                # no "=" means "= 0"
])
def test_exact_solutions_and_substitution(equations, want, check):
    """``check``: the same equations in plain sympy syntax, for substituting the solutions back."""
    got = solver(equations)
    assert exact(got) == exact({"solutions": want}), got
    assert all(substitutes(check, s) for s in got["solutions"])


def test_complex_roots_are_approximated_as_strings_and_real_ones_as_floats():
    got = solver("x^3 = 1")
    approx = sorted(map(str, (a["x"] for a in got["approx"])))
    assert approx == ["-0.5+0.866025j", "-0.5-0.866025j", "1.0"], approx


def test_solving_for_chosen_variables_leaves_the_others_free():
    got = solver("2a + 3b = 12", variables="a")
    assert got["solutions"] == [{"a": "6 - 3*b/2"}] and got["approx"] == [{"a": "6.0 - 1.5*b"}]
    assert substitutes(["2*a + 3*b = 12"], got["solutions"][0])


def test_contradictions_have_no_solution():
    assert solver("x + 1 = x") == {"solutions": [], "approx": []}
    assert solver(["x + y = 1", "x + y = 2"]) == {"solutions": [], "approx": []}


@pytest.mark.parametrize("equations, match", [
    ("sin(x) = x/2", "no method"), ("x > 2", "inequalities"), ("__import__('os').system('true')", "not an algebraic"),
    ("x.func = 2", "not an algebraic"), ("1 = 2 = 3", "not one equation"), ("x = x", "every value"),
    ("x + = 2", "cannot parse"), ("", "no equation")])
def test_what_it_cannot_solve_is_refused_with_a_reason(equations, match):
    with pytest.raises(ValueError, match=match):
        solver(equations)
    with pytest.raises(ValueError, match="do not appear"):
        solver("x = 2", variables=["y"])


def test_two_equation_quadratic_system_every_solution_substitutes():
    """GTA's Solver example: x = 2y or x = 3y, so (+-4, +-2) and (+-3 sqrt 2, +-sqrt 2)."""
    equations = ["x^2 + y^2 = 20", "x^2 - 5*x*y + 6*y^2 = 0"]
    got = solver(equations)
    assert exact(got) == exact({"solutions": [{"x": "-4", "y": "-2"}, {"x": "4", "y": "2"},
                                              {"x": "-3*sqrt(2)", "y": "-sqrt(2)"}, {"x": "3*sqrt(2)", "y": "sqrt(2)"}]})
    assert all(substitutes(equations, s) for s in got["solutions"])
