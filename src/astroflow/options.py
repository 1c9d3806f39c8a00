"""Configuration helpers shared by the workflow and the library: provenance of options."""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).parent

# Options that say where things are, not how they are processed.
LOCATION_KEYS = ("data", "out")


def flatten(cfg: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def non_default(cfg: dict, defaults: dict) -> list[str]:
    """``"option: value"`` lines for every processing option that differs from its default.

    These become the integration's HISTORY cards, as AutoIntegrate writes changed options.
    """
    cur, ref = flatten(cfg), flatten(defaults)
    return [
        f"{k}: {cur[k]}"
        for k in sorted(cur)
        if k.split(".")[0] not in LOCATION_KEYS and (k not in ref or ref[k] != cur[k])
    ]


def _module_file(name: str) -> Path | None:
    """Source file of an ``astroflow`` module (or package; ``.c`` for the compiled kernels), None
    if there is none."""
    parts = name.split(".")
    if parts[0] != "astroflow":
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py", base.with_suffix(".c")):
        if path.is_file():
            return path
    return None


def _imports(name: str, tree: ast.Module, is_package: bool) -> set[str]:
    """astroflow modules that module ``name`` imports anywhere (lazy imports included)."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from . import cosmetic`
    return {m for m in found if _module_file(m)}


def _normalised(tree: ast.Module) -> str:
    """The code without comments, layout or docstrings: only what can change a result."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


# Parsing the library's modules costs ~0.2 s, paid by every parse of the workflow (every run,
# every cluster job): their digests are kept by file identity, as the input checksums are.
CODE_CACHE = PACKAGE_DIR / "__pycache__" / "astroflow-code.json"


@functools.cache
def _code_cache() -> dict:
    try:
        return json.loads(CODE_CACHE.read_text())
    except (OSError, ValueError):
        return {}


@functools.cache
def _module_code(name: str) -> tuple[str, tuple[str, ...]]:
    """Digest of a module's normalised code and the astroflow modules it imports (parsed once
    per version of the file)."""
    path = _module_file(name)
    st = path.stat()
    key = f"{name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
    cache = _code_cache()
    if key not in cache:
        if path.suffix == ".c":  # C source: its text as it is, and it imports nothing
            code, imports = path.read_text(), []
        else:
            tree = ast.parse(path.read_text())
            code, imports = _normalised(tree), sorted(_imports(name, tree, path.name == "__init__.py"))
        for old in [k for k in cache if k.split(":")[0] == name]:  # earlier versions of the file
            del cache[old]
        cache[key] = [hashlib.sha256(code.encode()).hexdigest(), imports]
        try:  # a read-only installation just parses every time
            CODE_CACHE.parent.mkdir(exist_ok=True)
            tmp = CODE_CACHE.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, sort_keys=True))
            os.replace(tmp, CODE_CACHE)
        except OSError:
            pass
    digest, imports = cache[key]
    return digest, tuple(imports)


def code_modules(module: str) -> list[str]:
    """``module`` and every astroflow module it imports, transitively, sorted."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += _module_code(name)[1]
    return sorted(seen)


@functools.cache
def code_hash(module: str) -> str:
    """Short hash of the code ``module`` runs (:func:`code_modules`), blind to comments, layout
    and docstrings: a rule carries it in ``params:``, so only a real change to code a stage uses
    reruns that stage's jobs."""
    h = hashlib.sha256()
    for name in code_modules(module):
        h.update(f"{name}:{_module_code(name)[0]}".encode())
    return h.hexdigest()[:12]


def _schema_types(schema: dict) -> set[str]:
    types = schema.get("type", [])
    types = {types} if isinstance(types, str) else set(types)
    types |= {type(v).__name__ for v in schema.get("enum", [])}
    return types


def coerce(value, schema: dict):
    """``value`` with the strings the command line produced retyped as ``schema`` wants.

    ``snakemake --config 'registration={max_rms: 0.8}'`` parses nested values as YAML strings
    (``"0.8"``); the schema's types say what they are. Anything not convertible is returned
    as is, for validation to name.
    """
    import yaml

    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        return {k: coerce(v, props[k]) if k in props else v for k, v in value.items()}
    if isinstance(value, list) and "items" in schema:
        return [coerce(v, schema["items"]) for v in value]
    types = _schema_types(schema)
    if isinstance(value, str) and types & {"number", "integer", "boolean", "array", "int", "float", "bool"}:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return coerce(parsed, schema) if not isinstance(parsed, str) else value
    return value


def pick(cfg: dict, options: tuple[str, ...]) -> dict:
    """The nested sub-config of dotted ``options`` (a section name takes the whole section)."""
    picked: dict = {}
    for option in options:
        *sections, key = option.split(".")
        src, dst = cfg, picked
        for s in sections:
            src, dst = src[s], dst.setdefault(s, {})
        dst[key] = src[key]
    return picked


def ordered(cfg: dict, like: dict) -> dict:
    """``cfg`` with its keys in the order of ``like`` (the defaults: the schema's order), others
    after them sorted: a config read from a saved file compares equal to the one it came from."""
    keys = [k for k in like if k in cfg] + sorted(k for k in cfg if k not in like)
    return {
        k: ordered(cfg[k], like.get(k, {}))
        if isinstance(cfg[k], dict) and isinstance(like.get(k), dict)
        else cfg[k]
        for k in keys
    }


SCHEMA_PATH = PACKAGE_DIR.parents[1] / "workflow" / "schemas" / "config.schema.yaml"
# config/README.md's option tables but the last: where the frames go, live stacking; every
# other section is in the table of the finishing steps
DOC_TABLES = {
    "front": ("data", "out", "batch_size", "osc", "bayer_pattern", "overrides", "calibration",
              "cosmetic", "debayer", "registration", "integration"),
    "live": ("live",),
}  # fmt: skip


def with_defaults(cfg: dict, schema: dict | None = None) -> dict:
    """A copy of ``cfg`` (typed by :func:`coerce`) with every missing option set to the schema's
    default, validated against the schema as Snakemake's ``validate()`` does for the pipeline:
    how ``astroflow live`` reads the same config/config.yaml."""
    import copy

    import yaml
    from jsonschema import Draft202012Validator, validators

    schema = schema or yaml.safe_load(SCHEMA_PATH.read_text())

    def fill(validator, properties, instance, sub_schema):
        for key, sub in properties.items():
            if "default" in sub and isinstance(instance, dict):
                instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, sub_schema)

    filled = coerce(copy.deepcopy(cfg), schema)
    validators.extend(Draft202012Validator, {"properties": fill})(schema).validate(filled)
    return filled


def _format_default(value) -> str:
    import json

    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, (dict, list)):
        return json.dumps(value).replace('"', "")
    return str(value)


def option_rows(schema: dict, prefix: str = "") -> list[tuple[str, object, str]]:
    """``(option, default, description)`` of every documented option of ``schema``, in its
    order: a node with a description whose children have none (or no children) is one option."""
    rows = []
    for key, node in schema.get("properties", {}).items():
        name = f"{prefix}{key}"
        children = node.get("properties", {})
        described = all("description" in c for c in children.values())
        if children and (described or "description" not in node):
            rows += option_rows(node, name + ".")
        else:
            default = node.get("default")
            if children and default == {}:
                default = {k: c.get("default") for k, c in children.items()}
            rows.append((name, default, node.get("description", "")))
    return rows


def option_tables(schema: dict) -> dict[str, str]:
    """The markdown option tables of config/README.md, generated from the schema (the one place
    every default and its meaning live): those of :data:`DOC_TABLES` and ``finish``."""
    groups: dict[str, list[str]] = {g: [] for g in (*DOC_TABLES, "finish")}
    for name, default, desc in option_rows(schema):
        group = next((g for g, sections in DOC_TABLES.items() if name.split(".")[0] in sections), "finish")
        groups[group].append(f"| `{name}` | {_format_default(default)} | {desc} |")
    head = "| option | default | meaning |\n|---|---|---|\n"
    return {g: head + "\n".join(lines) + "\n" for g, lines in groups.items()}


def update_readme(readme: str, schema: dict) -> str:
    """``readme`` with the text between ``<!-- options:NAME -->`` and ``<!-- /options -->``
    replaced by the generated table NAME."""
    import re

    for name, table in option_tables(schema).items():
        pattern = re.compile(rf"(<!-- options:{name} -->\n).*?(<!-- /options -->)", re.S)
        readme = pattern.sub(lambda m, t=table: m.group(1) + t + m.group(2), readme)
    return readme
