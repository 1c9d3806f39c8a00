"""Narrowband palettes and a safe channel-expression engine (AutoIntegrate's PixelMath mappings).

Expressions use PixelMath syntax on channel images normalised to [0, 1]: channel names
(``L R G B H S O``), numbers, ``+ - * /``, ``^`` for power, ``~x`` for ``1 - x`` and the
functions ``max``, ``min``, ``mean``, ``sqrt``, ``abs``. They are parsed with :mod:`ast` and
evaluated node by node on numpy arrays; nothing else is allowed, and no user text is ever
passed to ``eval``.

Palettes flagged ``stretched`` (the Foraxx "Dynamic" ones) are meant for stretched channels;
the others work on linear channels.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import numpy as np

CHANNELS = ("L", "R", "G", "B", "H", "S", "O")


class ExpressionError(ValueError):
    """A channel expression that cannot be parsed or names an unknown channel/function."""


@dataclass(frozen=True)
class Palette:
    name: str
    r: str
    g: str
    b: str
    stretched: bool = False  # channels are stretched before mapping (Foraxx)
    in_all: bool = True  # part of `palettes: all`

    def channels(self) -> set[str]:
        return set().union(*(names(e) for e in (self.r, self.g, self.b)))


_FORAXX_G = "((O*H)^~(O*H))*H + ~((O*H)^~(O*H))*O"
PALETTES = {
    p.name: p
    for p in (
        Palette("SHO", "S", "H", "O"),
        Palette("HOS", "H", "O", "S"),
        Palette("HSO", "H", "S", "O"),
        Palette("OHS", "O", "H", "S"),
        Palette("HOO", "H", "O", "O"),
        Palette("Pseudo_RGB", "0.75*H + 0.25*S", "0.50*S + 0.50*O", "0.30*H + 0.70*O"),
        Palette("Natural_HOO", "H", "0.8*O + 0.2*H", "0.85*O + 0.15*H"),
        Palette("3-channel_HOO", "0.76*H + 0.24*S", "O", "0.85*O + 0.15*H"),
        Palette("Dynamic_SHO", "(O^~O)*S + ~(O^~O)*H", _FORAXX_G, "O", stretched=True),
        Palette("Dynamic_HOO", "H", _FORAXX_G, "O", stretched=True),
        Palette("max_RH_GB", "max(R, H)", "G", "B"),
        Palette("max_RGB_HOO", "max(R, H)", "max(G, O)", "max(B, O)"),
        Palette("HOO_Helix", "H", "0.4*H + 0.6*O", "O"),
        Palette("HSO_Mix_1", "0.4*H + 0.6*S", "0.7*H + 0.3*O", "O"),
        Palette("HSO_Mix_2", "0.4*H + 0.6*S", "0.4*O + 0.3*H + 0.3*S", "O"),
        Palette("HSO_Mix_3", "0.5*H + 0.5*S", "0.15*H + 0.85*O", "O"),
        Palette("HSO_Mix_4", "0.5*H + 0.5*S", "0.5*H + 0.5*O", "O"),
        Palette("L-eXtreme_SHO", "H", "0.5*H + 0.5*max(S, O)", "max(S, O)"),
    )
}


def auto_palette(filters: set[str]) -> str | None:
    """AutoIntegrate's automatic mapping by the filters present (peers.md §1.1 narrowband step 1)."""
    f = set(filters)
    if {"R", "G", "B", "H"} <= f:
        return "max_RGB_HOO" if "O" in f else "max_RH_GB"
    if {"S", "H", "O"} <= f:
        return "SHO"
    if {"H", "O"} <= f:
        return "HOO"
    return None


def resolve(selection, filters: set[str], custom: dict) -> list[Palette]:
    """Palettes to produce: ``auto``, ``all`` (those whose channels exist) or a list of names.

    ``custom`` maps a user palette name to ``{r, g, b[, stretched]}`` expressions. An unknown
    name or a palette needing a missing channel raises with the option named.
    """
    table = dict(PALETTES)
    for name, spec in (custom or {}).items():
        try:
            table[name] = Palette(name, spec["r"], spec["g"], spec["b"], bool(spec.get("stretched", False)))
        except KeyError as e:
            raise ExpressionError(f"palettes.custom.{name}: missing expression {e.args[0]!r}") from None
        for key in ("r", "g", "b"):
            parse(spec[key], f"palettes.custom.{name}.{key}")
    if selection == "auto":
        name = auto_palette(filters)
        return [table[name]] if name else []
    if selection == "all":
        return [p for p in table.values() if p.in_all and p.channels() <= filters]
    out = []
    for name in selection:
        if name not in table:
            raise ExpressionError(f"palettes.use: unknown palette {name!r}; known: {', '.join(table)}")
        missing = table[name].channels() - filters
        if missing:
            raise ExpressionError(
                f"palettes.use: palette {name} needs channel(s) {', '.join(sorted(missing))}, "
                f"which this target has no integration for (have {', '.join(sorted(filters))})"
            )
        out.append(table[name])
    return out


_FUNCS = {
    "max": lambda *a: _reduce(np.maximum, a),
    "min": lambda *a: _reduce(np.minimum, a),
    "mean": lambda *a: sum(a) / len(a),
    "sqrt": lambda a: np.sqrt(np.maximum(a, 0)),
    "abs": np.abs,
}


def _reduce(fn, args):
    out = args[0]
    for a in args[1:]:
        out = fn(out, a)
    return out


def parse(expr: str, where: str = "expression") -> ast.Expression:
    """Parse and check an expression; raise :class:`ExpressionError` naming ``where``."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as e:
        raise ExpressionError(f"{where}: syntax error in {expr!r}: {e.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if node.id not in CHANNELS and node.id not in _FUNCS:
                raise ExpressionError(
                    f"{where}: unknown channel {node.id!r} in {expr!r} (use {', '.join(CHANNELS)})"
                )
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS or node.keywords:
                raise ExpressionError(f"{where}: only {', '.join(_FUNCS)} may be called in {expr!r}")
        elif not isinstance(
            node,
            (
                ast.Expression,
                ast.BinOp,
                ast.UnaryOp,
                ast.Constant,
                ast.Load,
                ast.Add,
                ast.Sub,
                ast.Mult,
                ast.Div,
                ast.Pow,
                ast.BitXor,
                ast.USub,
                ast.UAdd,
                ast.Invert,
            ),
        ):
            raise ExpressionError(f"{where}: {type(node).__name__} is not allowed in {expr!r}")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)):
            raise ExpressionError(f"{where}: only numbers are allowed as constants in {expr!r}")
    return tree


def names(expr: str) -> set[str]:
    """Channels an expression uses."""
    return {n.id for n in ast.walk(parse(expr)) if isinstance(n, ast.Name) and n.id in CHANNELS}


def evaluate(expr: str, channels: dict[str, np.ndarray], where: str = "expression") -> np.ndarray:
    """Value of ``expr`` on ``channels`` (float32 arrays of one shape), clipped to [0, 1]."""
    tree = parse(expr, where)
    missing = names(expr) - set(channels)
    if missing:
        raise ExpressionError(f"{where}: channel(s) {', '.join(sorted(missing))} not available for {expr!r}")

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return np.float32(node.value)
        if isinstance(node, ast.Name):
            return channels[node.id].astype(np.float32)
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            return {ast.USub: lambda: -v, ast.UAdd: lambda: v, ast.Invert: lambda: 1 - v}[type(node.op)]()
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            op = type(node.op)
            if op in (ast.Pow, ast.BitXor):  # PixelMath ^ is power
                return np.power(np.maximum(a, 0), b)
            if op is ast.Div:
                with np.errstate(divide="ignore", invalid="ignore"):
                    return np.nan_to_num(a / b, nan=0.0, posinf=1.0, neginf=0.0)
            return {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply}[op](a, b)
        if isinstance(node, ast.Call):
            return _FUNCS[node.func.id](*[ev(a) for a in node.args])
        raise ExpressionError(f"{where}: cannot evaluate {ast.dump(node)}")  # parse() prevents this

    out = np.broadcast_to(ev(tree), next(iter(channels.values())).shape)
    return np.clip(out, 0, 1).astype(np.float32)


def apply(palette: Palette, channels: dict[str, np.ndarray]) -> np.ndarray:
    """``(3, ny, nx)`` colour image of ``palette`` on ``channels``."""
    return np.stack(
        [
            evaluate(e, channels, f"palette {palette.name}.{c}")
            for c, e in zip("rgb", (palette.r, palette.g, palette.b), strict=True)
        ]
    )
